"""``orapo model demo``, ``orapo generate`` and ``orapo evaluate``.

Wire into the root app with ``importlib.import_module("orapo.model.cli").register(app)``
(one entry ``("orapo.model.cli", app)`` in ``orapo.cli._COMMAND_MODULES``). Heavy imports
(torch, transformers) happen inside the commands.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

# Bad input (a missing file, an unreadable image, a manifest line, a model directory that is
# not one) prints one red line and exits 1; orapo.errors says which errors count as such.
from orapo.errors import fail as _fail
from orapo.errors import user_errors as _clean_errors

model_app = typer.Typer(
    help="The policy model: build the offline demo model.", no_args_is_help=True
)


@contextlib.contextmanager
def _progress(description: str, total: int) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _load(model: str, device: str, dtype: str, max_pixels: int | None) -> Any:
    from orapo.model.config import ModelConfig
    from orapo.model.policy import load_policy

    cfg = ModelConfig(name_or_path=model, device=device, dtype=dtype, max_pixels=max_pixels)
    return load_policy(cfg, trainable=False)


# ----------------------------------------------------------------------------- model demo
def _default_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` reports written by the synthetic world ([] if :mod:`orapo.synth` has no writer)."""
    try:
        import numpy as np

        from orapo.synth.report import write_report
        from orapo.synth.spec import sample_spec
    except ImportError:
        return []
    from orapo.manifest import format_report

    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        findings, impression, _labels = write_report(sample_spec(rng), rng)
        texts.append(format_report(findings, impression))
    return texts


@model_app.command("demo")
def demo(
    out: Path = typer.Option(..., "--out", help="Folder to write the model directory to."),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        help="Manifest whose reports train the tokenizer (its train split if it has one, "
        "else all studies). Default: reports written by the synthetic world.",
    ),
    preset: str = typer.Option("demo", "--preset", help="Model size: tiny (tests) or demo."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initial weights."),
    text_file: list[Path] = typer.Option(
        [],
        "--text-file",
        help="Extra tokenizer texts, one per line (repeatable), e.g. general captions.",
    ),
) -> None:
    """Build the untrained offline demo model (Qwen2.5-VL architecture, local tokenizer)."""
    with _clean_errors():
        from orapo.manifest import read_manifest
        from orapo.model.demo import build_demo_model, get_preset

        get_preset(preset)
        texts: list[str] = []
        if manifest is not None:
            studies = read_manifest(manifest).studies
            train = [s for s in studies if s.split == "train"]
            texts = [s.report for s in (train or studies)]
        else:
            texts = _default_corpus()
            if not texts:
                _fail("no synthetic report writer available; pass --manifest M")
        for path in text_file:
            if not path.is_file():
                _fail(f"text file {path} does not exist")
            texts.extend(
                line.strip()
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            )
        started = time.perf_counter()
        path = build_demo_model(out, texts, preset=preset, seed=seed)
        record = json.loads((path / "orapo_model.json").read_text(encoding="utf-8"))
        typer.echo(
            f"wrote {path} ({record['parameters']:,} parameters, vocabulary "
            f"{record['vocab_size']}, tokenizer trained on {len(texts)} texts) in "
            f"{time.perf_counter() - started:.1f} s"
        )


@model_app.command("build-base")
def build_base(
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder to put the base in (as base-<key>/, the key of its settings). To ship it, "
        "src/orapo/basemodel/shipped.",
    ),
    overrides: list[str] = typer.Argument(
        None,
        help="base.field=value settings (orapo train --describe lists them), e.g. base.steps=200.",
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
) -> None:
    """Pre-train the embedded demo base model (captions + chest questions, no report text).

    Seeded: the same settings give the same base. The main job uses the base shipped in the
    package when its settings match, so the main job's minutes go to RL.
    """
    from rich.console import Console

    from orapo.basemodel.build import build_base_model, cache_key
    from orapo.basemodel.settings import BaseModelSettings
    from orapo.config_io import ConfigError, apply_overrides, from_dict

    bad = [o for o in overrides or [] if not o.startswith("base.")]
    if bad:
        _fail(f"{bad[0]}: only base.* settings apply here")
    try:
        data = apply_overrides({"base": {}}, overrides or [])
        settings = from_dict(BaseModelSettings, data["base"], "base")
    except (ConfigError, ValueError) as err:
        _fail(str(err))
    if threads:
        import torch

        torch.set_num_threads(threads)
    target = out / f"base-{cache_key(settings)}"
    console = Console(stderr=True)
    with _clean_errors():
        path = build_base_model(settings, target, console)
    record = json.loads((path / "base_model.json").read_text(encoding="utf-8"))
    typer.echo(
        f"wrote {path} in {record['seconds']} s: final loss {record['final_loss']:.3f}, "
        f"held-out VQA balanced accuracy {record['vqa_balanced_accuracy'].get('mean', 0):.3f}"
    )


# ----------------------------------------------------------------------------- generate
def _inputs(input_path: Path, split: str | None) -> tuple[list[tuple[str, Path, str]], bool]:
    """(id, resolved image path, image as written) items, and whether it is a single image."""
    from orapo.manifest import read_manifest
    from orapo.model.images import IMAGE_SUFFIXES, images_in_folder, read_image_list

    if not input_path.exists():
        _fail(f"input {input_path} does not exist")
    if input_path.is_dir():
        paths = images_in_folder(input_path)
        if not paths:
            _fail(f"{input_path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return [(p.stem, p, str(p)) for p in paths], False
    if input_path.suffix.lower() in IMAGE_SUFFIXES:
        return [(input_path.stem, input_path, str(input_path))], True
    if input_path.suffix.lower() in (".jsonl", ".json"):
        m = read_manifest(input_path)
        studies = m.split(split) if split else m.studies
        if not studies:
            _fail(f"{input_path}: no studies" + (f" in split {split!r}" if split else ""))
        items = [(s.id, s.image_paths(m.root)[0], s.images[0]) for s in studies]
        return items, False
    if split:
        _fail("--split applies to a manifest input only")
    paths = read_image_list(input_path)
    return [(p.stem, p, str(p)) for p in paths], False


def generate(
    model: str = typer.Option(..., "--model", help="Model directory (or hub id) to generate with."),
    input_path: Path = typer.Option(
        ...,
        "--input",
        help="A manifest (.jsonl), a folder of images, a text file listing image paths, or "
        "one image.",
    ),
    out: Path | None = typer.Option(
        None,
        "-o",
        "--out",
        help="Output file: JSONL {id, image, report} (plain text for one image). Default: stdout.",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per generate call."),
    split: str | None = typer.Option(
        None, "--split", help="Only this split of a manifest (train, val, test)."
    ),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest report in tokens."),
    skip_bad_images: bool = typer.Option(
        False,
        "--skip-bad-images",
        help="Skip (and count) missing or unreadable images instead of stopping.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", help="Largest image area after resizing (default: the model's)."
    ),
) -> None:
    """Write greedy reports for images (a manifest, a folder, a list, or one image)."""
    with _clean_errors():
        from orapo.atomic import atomic_write_text
        from orapo.images import load_images

        if batch_size < 1:
            _fail(f"--batch-size must be >= 1, got {batch_size}")
        items, single = _inputs(input_path, split)
        policy = _load(model, device, dtype, max_pixels)
        records: list[dict[str, str]] = []
        skipped: list[str] = []
        started = time.perf_counter()
        with _progress("generating", len(items)) as advance:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                loaded = load_images([p for _, p, _ in chunk], skip_bad=skip_bad_images)
                skipped.extend(loaded.skipped_paths)
                if loaded.images:
                    reports = policy.generate_reports(
                        loaded.images, max_new_tokens=max_new_tokens, batch_size=batch_size
                    )
                    for i, report in zip(loaded.kept, reports, strict=True):
                        records.append({"id": chunk[i][0], "image": chunk[i][2], "report": report})
                advance(len(chunk))
        seconds = time.perf_counter() - started
        if single:
            text = (records[0]["report"] + "\n") if records else ""
        else:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if out is None:
            typer.echo(text, nl=False)
        else:
            atomic_write_text(out, text)
        n = len(records)
        rate = f"{seconds / n:.3f} s/report" if n else "no reports"
        where = f" -> {out}" if out else ""
        typer.echo(f"{n} reports in {seconds:.1f} s ({rate}){where}", err=True)
        if skipped:
            typer.echo(
                f"skipped {len(skipped)} bad images: {', '.join(skipped[:5])}"
                + (" ..." if len(skipped) > 5 else ""),
                err=True,
            )
        if not records:
            _fail("no report was generated")


# ----------------------------------------------------------------------------- evaluate
def evaluate(
    model: str = typer.Option(..., "--model", help="Model directory (or hub id) to evaluate."),
    data: Path = typer.Option(..., "--data", help="Manifest (.jsonl) with the studies."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val or test."),
    out: Path | None = typer.Option(
        None,
        "-o",
        "--out",
        help="Folder for metrics.json, report.md, predictions.jsonl, examples.html "
        "(default: <model>/eval-<split> for a local model, else ./eval-<split>).",
    ),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N studies."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per generate call."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest report in tokens."),
    labeler: str = typer.Option("rule", "--labeler", help="Labeler for generated reports."),
    skip_bad_images: bool = typer.Option(
        False,
        "--skip-bad-images",
        help="Skip (and count) missing or unreadable images instead of stopping.",
    ),
    examples: int = typer.Option(12, "--examples", help="Studies shown in examples.html."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", help="Largest image area after resizing (default: the model's)."
    ),
) -> None:
    """Generate for a manifest split, label, and print/write clinical and text metrics."""
    with _clean_errors():
        from rich.console import Console

        from orapo.manifest import read_manifest
        from orapo.metrics import format_clinical_table
        from orapo.model.evaluate import evaluate_policy, write_evaluation

        if limit is not None and limit < 1:
            _fail(f"--limit must be >= 1, got {limit}")
        m = read_manifest(data)
        studies = m.split(split)
        if not studies:
            _fail(f"{data}: no studies in split {split!r}")
        studies = studies[:limit] if limit else studies
        policy = _load(model, device, dtype, max_pixels)
        with _progress(f"evaluating {split}", len(studies)) as advance:
            result = evaluate_policy(
                policy,
                studies,
                m.root,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                labeler=labeler,
                skip_bad_images=skip_bad_images,
                progress=advance,
                split=split,
            )
        metrics = result["metrics"]
        metrics["data"] = str(data)
        console = Console()
        console.print(format_clinical_table(result["clinical"]))
        console.print("text: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics["text"].items()))
        console.print(
            f"{metrics['n']} reports, {metrics['timing']['seconds_per_report']:.3f} s/report, "
            f"prompt {metrics['prompt_version']}, skipped images "
            f"{metrics['skipped_images']['total']}"
        )
        if out is None:
            local = Path(model)
            out = (local if local.is_dir() else Path(".")) / f"eval-{split}"
        paths = write_evaluation(result, out, m.root, n_examples=examples)
        console.print(f"wrote {', '.join(str(p) for p in paths.values())}")


def register(app: typer.Typer) -> None:
    """Add ``model`` (with ``demo``), ``generate`` and ``evaluate`` to ``app``."""
    app.add_typer(model_app, name="model")
    app.command("generate")(generate)
    app.command("evaluate")(evaluate)
