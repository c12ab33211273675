"""What `orapo train` does around the loop: load the recipe, dry runs, the before/after table."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from orapo.config_io import ConfigError, apply_overrides, describe, from_dict, load_yaml, to_dict
from orapo.train.config import DEMO_BASE, TrainConfig


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
    from orapo.train.loop import run_training

    summary = run_training(cfg, run_dir, resume=resume, console=console)
    print_before_after(summary, console)
    return summary


def print_before_after(summary: dict, console) -> None:
    from rich.table import Table

    table = Table(title="Clinical P/R/F1 on the test split (protocol: positive, micro, all14)")
    for col in ("policy", "precision", "recall", "F1", "F1 (macro)", "F1 (unc.-pos.)", "n"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name in ("base", "final"):
        r = summary.get(name)
        if r:
            table.add_row(
                name,
                f"{r['precision']:.3f}",
                f"{r['recall']:.3f}",
                f"{r['f1']:.3f}",
                f"{r['f1_macro']:.3f}",
                f"{r['f1_uncertain_positive']:.3f}",
                str(r["n"]),
            )
    console.print(table)
    console.print(f"run: {summary['run_dir']}  ({summary.get('wall_seconds', '?')} s)")
    console.print(f"model: {summary.get('model_dir')}")
    for p in summary.get("plots", []):
        console.print(f"plot: {p}")
