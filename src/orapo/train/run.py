"""What `orapo train` does around the loop: the recipe, dry runs, the job, the before/after table.

The path of a run is one way: ``train/cli.py`` -> here (:func:`run_training`) ->
``train/setup.py`` (data, base model, trainer) -> ``train/loop.py`` (the step and the fit loop).
"""

from __future__ import annotations

import math
import time
from importlib import resources
from pathlib import Path
from typing import Any

from orapo.config_io import (
    ConfigError,
    apply_overrides,
    describe,
    from_dict,
    load_yaml,
    save_yaml,
    to_dict,
)
from orapo.train.checkpoint import CHECKPOINTS_DIR
from orapo.train.config import DEMO_BASE, TrainConfig
from orapo.train.data import shuffle_images
from orapo.train.tracking import METRICS_FILE, SUMMARY_FILE, read_summary, write_summary


def default_recipe() -> Path:
    return Path(str(resources.files("orapo.train") / "demo.yaml"))


def load_train_config(
    config: Path | None, overrides: list[str], out: Path | None, resume: Path | None
) -> tuple[TrainConfig, Path]:
    """Recipe + overrides -> config, and the run directory."""
    if resume is not None:
        saved = resume / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {resume}: no config.yaml there (is it a run directory?)")
        if config is not None:
            raise ConfigError("--resume uses the run's saved config; do not also give --config")
        data = load_yaml(saved)
        run_dir = resume
    else:
        recipe = config or default_recipe()
        data = load_yaml(recipe)
        run_dir = out or Path("runs") / f"{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = from_dict(TrainConfig, apply_overrides(data, overrides))
    return cfg, run_dir


RUN_MARKERS = (SUMMARY_FILE, METRICS_FILE, CHECKPOINTS_DIR)


def check_fresh_run_dir(run_dir: Path) -> None:
    """A new run must not start in another run's folder: its metrics would be appended to the
    old log and ``--resume`` could later pick the old run's checkpoints."""
    found = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if found:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(found)}): continue it with "
            f"`orapo train --resume {run_dir}`, or give another --out"
        )


def run_training(cfg: TrainConfig, run_dir: Path, *, resume: bool = False, console=None) -> dict:
    """Everything ``orapo train`` does: data, base model, evaluate, train, evaluate, report."""
    if not resume:
        check_fresh_run_dir(run_dir)
    if cfg.trainer.engine == "trl":
        from orapo.integrations.trl_run import run_trl

        return run_trl(cfg, run_dir, resume=resume, console=console)
    from rich.console import Console

    from orapo.train.checkpoint import latest_checkpoint
    from orapo.train.setup import build_trainer, process_state, resolve_data, resolve_model
    from orapo.train.tracking import write_plots

    console = console or Console()
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    # The main process generates the world and builds the base model; the others wait, then
    # read what it wrote (one accelerate state per process, shared with the trainer's).
    with process_state().main_process_first():
        data = resolve_data(cfg, console)
        cfg.model.name_or_path = resolve_model(cfg, console)
    trainer = build_trainer(cfg, run_dir, data, console)
    acc = trainer.acc
    if acc.is_main_process:
        save_yaml(cfg, run_dir / "config.yaml")

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "mode": cfg.algorithm.mode,
        "processes": acc.num_processes,
    }
    if data.skipped:
        summary["skipped_images"] = data.skipped
    previous = read_summary(run_dir) if resume else {}
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: {run_dir} has no complete checkpoint to resume from")
    if checkpoint is not None:
        trainer.resume(checkpoint)
        console.print(f"Resumed from {checkpoint} (step {trainer.step}).")
        if "base" in previous:
            summary["base"] = previous["base"]
    elif cfg.eval.before:
        console.print(
            f"Evaluating the base policy on {len(data.test)} {cfg.data.test_split} studies"
        )
        base = trainer.validate(data.test, cfg.data.test_split)
        if base:
            summary["base"] = _headline(base)
            _write_eval(
                run_dir / "eval-base", base, data.root, cfg.eval.examples, cfg.model.name_or_path
            )
    if acc.is_main_process:
        write_summary(run_dir, {**summary, "status": "training"})

    trainer.fit()
    trainer.save()
    model_dir = run_dir / "model"
    if acc.is_main_process:
        trainer.policy.save(model_dir)
    acc.wait_for_everyone()
    summary["model_dir"] = str(model_dir)
    summary["steps"] = trainer.step
    labeler = getattr(trainer.reward_fn, "labeler", None)
    if hasattr(labeler, "summary"):  # the LLM extractor: requests, tokens, cost, cache, fallbacks
        stats = labeler.summary()
        console.print(stats.format())
        summary["llm"] = stats.as_metrics(prefix="")
    summary["reward_failures"] = trainer.reward_failures
    summary["missing_rewards"] = trainer.missing_rewards
    if cfg.eval.after:
        final = trainer.validate(data.test, cfg.data.test_split)
        if final:
            summary["final"] = _headline(final)
            _write_eval(run_dir / "eval-final", final, data.root, cfg.eval.examples, model_dir)
    if cfg.eval.after and cfg.eval.shuffled and len(data.test) > 1:
        console.print("Grounding check: the test reports with their images shuffled")
        shuffled = trainer.validate(
            shuffle_images(data.test, cfg.trainer.seed), f"{cfg.data.test_split} (shuffled)"
        )
        if shuffled:
            summary["final_shuffled_images"] = _headline(shuffled)
            _write_eval(
                run_dir / "eval-final-shuffled", shuffled, data.root, cfg.eval.examples, model_dir
            )
    references = _references(data)
    if references:
        summary["references"] = references
    acc.end_training()
    if acc.is_main_process:
        summary["plots"] = [str(p) for p in write_plots(run_dir)]
        summary["wall_seconds"] = round(time.perf_counter() - started, 1)
        if resume and "wall_seconds" in previous:
            summary["wall_seconds_before_resume"] = previous["wall_seconds"]
        summary["status"] = "done"
        summary["config"] = to_dict(cfg)
        write_summary(run_dir, summary)
    return summary


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the before/after table (positive protocol, micro, all14) and a few more."""
    s = result["summary"]
    key = "clinical/positive/all14/micro_"
    return {
        "precision": s[key + "precision"],
        "recall": s[key + "recall"],
        "f1": s[key + "f1"],
        "protocol": "positive/all14/micro",
        "f1_uncertain_positive": s["clinical/uncertain-positive/all14/micro_f1"],
        "f1_macro": s["clinical/positive/all14/macro_f1"],
        "f1_top5": s["clinical/positive/top5/micro_f1"],
        "bleu_4": s.get("text/bleu_4", math.nan),
        "rouge_l": s.get("text/rouge_l", math.nan),
        "n": result["metrics"].get("n"),
    }


def _write_eval(
    out_dir: Path, result: dict[str, Any], root: Path, examples: int, model: str | Path
) -> None:
    """Write an evaluation's files; ``metrics.json`` names ``model``, the model it evaluated."""
    from orapo.model.evaluate import write_evaluation

    result["metrics"]["model"] = str(model)
    write_evaluation(result, out_dir, root, examples)


def _references(data) -> dict[str, Any]:
    """The image-blind references on the test split (training labels choose them)."""
    from orapo.metrics.references import image_blind_references

    train = [s.labels for s in data.train if s.labels is not None]
    test = [s.labels for s in data.test if s.labels is not None]
    if len(train) < len(data.train) or len(test) < len(data.test) or not train or not test:
        return {}  # references need gold labels on every study (the manifest's `labels`)
    return image_blind_references(train, test)


def describe_config(console) -> None:
    from rich.table import Table

    table = Table(title="orapo train: config fields (section.field=value to override)")
    for col in ("field", "default", "meaning"):
        table.add_column(col, overflow="fold")
    for name, default, text in describe(TrainConfig):
        table.add_row(name, default, text)
    console.print(table)


def dry_run_report(cfg: TrainConfig, run_dir: Path, console) -> bool:
    """Print the resolved config; check that the data and model paths exist. True when OK."""
    import yaml

    from orapo.train.setup import manifest_path

    console.print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    problems = []
    path = manifest_path(cfg)
    if cfg.data.manifest is not None:
        if not path.is_file():
            problems.append(f"data.manifest: {path} does not exist")
        else:
            from orapo.manifest import ManifestError, read_manifest

            try:
                m = read_manifest(path)
                for split in (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split):
                    if not m.split(split):
                        problems.append(f"data: {path} has no studies in split {split!r}")
                missing = [s.id for s in m.studies[:50] if not s.image_paths(m.root)[0].exists()]
                if missing:
                    problems.append(
                        f"data: images missing for {len(missing)} of the first 50 "
                        f"studies (e.g. {missing[0]})"
                    )
            except ManifestError as err:
                problems.append(str(err))
    name = cfg.model.name_or_path
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if name != DEMO_BASE and looks_local and not Path(name).expanduser().is_dir():
        problems.append(f"model.name_or_path: {name} is not a directory")
    console.print(f"run directory: {run_dir}")
    for p in problems:
        console.print(f"[red]problem:[/red] {p}")
    if not problems:
        console.print("[green]dry run: config valid, data and model paths found[/green]")
    return not problems


def main_job(cfg: TrainConfig, run_dir: Path, resume: bool, console) -> dict:
    summary = run_training(cfg, run_dir, resume=resume, console=console)
    print_before_after(summary, console)
    return summary


def print_before_after(summary: dict, console) -> None:
    from rich.table import Table

    table = Table(title="Clinical P/R/F1 on the test split (protocol: positive, micro, all14)")
    for col in ("policy", "precision", "recall", "F1", "F1 (macro)", "F1 (unc.-pos.)", "n"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    rows = [(name, summary.get(name)) for name in ("base", "final")]
    rows.append(("final, images shuffled", summary.get("final_shuffled_images")))
    refs = summary.get("references", {})
    rows += [(f"image-blind: {name.replace('_', ' ')}", refs.get(name)) for name in refs]
    for name, r in rows:
        if r:
            table.add_row(
                name,
                f"{r['precision']:.3f}",
                f"{r['recall']:.3f}",
                f"{r['f1']:.3f}",
                *(f"{r[k]:.3f}" if k in r else "-" for k in ("f1_macro", "f1_uncertain_positive")),
                str(r.get("n", "-")),
            )
    console.print(table)
    if "final_shuffled_images" in summary and "final" in summary:
        gap = summary["final"]["f1"] - summary["final_shuffled_images"]["f1"]
        console.print(
            f"grounding check: F1 with true images minus F1 with shuffled images = {gap:+.3f} "
            "(about 0 for a model that does not read the image)"
        )
    console.print(f"run: {summary['run_dir']}  ({summary.get('wall_seconds', '?')} s)")
    console.print(f"model: {summary.get('model_dir')}")
    for p in summary.get("plots", []):
        console.print(f"plot: {p}")
