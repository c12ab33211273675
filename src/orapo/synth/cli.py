"""`orapo data synth` and `orapo data stats`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer


def synth(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write manifest.jsonl, images/ and contact_sheet.png into."
    ),
    n: int = typer.Option(..., "--n", min=1, help="Total number of studies over all splits."),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Random seed; the same seed gives the same bytes."
    ),
    size: int = typer.Option(112, "--size", min=32, help="Image side in pixels."),
    profile: str = typer.Option(
        "salient",
        "--profile",
        help="World profile: salient (the demo's world: findings drawn strongly, a quiet "
        "patient) or realistic (subtler findings, more benign variation). docs/synth.md.",
    ),
    val_frac: float = typer.Option(
        0.1, "--val-frac", min=0.0, max=1.0, help="Share of studies in the val split."
    ),
    test_frac: float = typer.Option(
        0.2, "--test-frac", min=0.0, max=1.0, help="Share of studies in the test split."
    ),
    n_val: int | None = typer.Option(
        None, "--n-val", min=0, help="Exact number of val studies (overrides --val-frac)."
    ),
    n_test: int | None = typer.Option(
        None, "--n-test", min=0, help="Exact number of test studies (overrides --test-frac)."
    ),
    images: bool = typer.Option(
        True,
        "--images/--no-images",
        help="Write PNG images (reports and labels do not change without them).",
    ),
    contact_sheet: bool = typer.Option(
        True,
        "--contact-sheet/--no-contact-sheet",
        help="Write contact_sheet.png with the first 24 studies.",
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help="Processes drawing images; 0 = one per CPU (at most 4). Output does not depend on it.",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an existing dataset in --out (its images folder is removed first).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate the synthetic chest X-ray world: PNG images, reports and gold labels."""
    from rich.console import Console

    from orapo.manifest import read_manifest
    from orapo.synth.generate import generate, split_counts
    from orapo.synth.stats import manifest_stats

    if val_frac + test_frac > 1.0:
        raise typer.BadParameter(f"--val-frac + --test-frac = {val_frac + test_frac} exceeds 1")
    counts = split_counts(n, (1.0 - val_frac - test_frac, val_frac, test_frac))
    if n_val is not None:
        counts["val"] = n_val
    if n_test is not None:
        counts["test"] = n_test
    counts["train"] = n - counts["val"] - counts["test"]
    if counts["train"] < 0:
        raise typer.BadParameter(f"val + test = {counts['val'] + counts['test']} exceeds --n {n}")
    if workers == 0:
        workers = min(4, os.cpu_count() or 1) if images and n >= 200 else 1
    start = time.perf_counter()
    try:
        path = generate(
            out, n, seed=seed, size=size, write_images=images, progress=progress,
            counts=counts, workers=workers, contact_sheet=contact_sheet and images,
            overwrite=overwrite, profile=profile,
        )  # fmt: skip
    except (FileExistsError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    seconds = time.perf_counter() - start
    stats = manifest_stats(read_manifest(path))
    normal = stats.states["No Finding"][1]
    console = Console()
    console.print(
        f"wrote {stats.studies} studies to {path} "
        f"(train {stats.splits['train']}, val {stats.splits['val']}, test {stats.splits['test']})"
    )
    what = f"{profile} world, " + (
        f"{size}x{size} images, {workers} worker(s)" if images else "no images"
    )
    console.print(f"{seconds:.2f} s, {stats.studies / seconds:.0f} studies/s ({what})")
    console.print(f"No Finding: {normal} ({normal / max(1, stats.labelled):.1%})")
    if images and contact_sheet:
        console.print(f"contact sheet: {path.parent / 'contact_sheet.png'}")


def stats(
    manifest: Path = typer.Argument(..., help="Manifest (.jsonl) to describe."),
    out: Path | None = typer.Option(
        None, "--out", help="Write a bar chart of label shares to this PNG."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Count only this split (train, val or test)."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip and count invalid lines instead of stopping at the first."
    ),
) -> None:
    """Studies per split and label states (positive / negative / uncertain / not mentioned)."""
    from rich.console import Console

    from orapo.manifest import ManifestError, read_manifest
    from orapo.synth.stats import manifest_stats, plot_stats, split_table, stats_table

    try:
        m = read_manifest(manifest, skip_bad=skip_bad)
        s = manifest_stats(m, split=split)
    except (FileNotFoundError, ManifestError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    console = Console()
    console.print(split_table(s))
    console.print(stats_table(s))
    for reason, count in s.skipped.items():
        console.print(f"skipped {count} line(s): {reason}")
    if out is not None:
        console.print(f"bar chart: {plot_stats(s, out)}")


def register(app: typer.Typer) -> None:
    """Add ``synth`` and ``stats`` to ``app`` (the ``orapo data`` sub-app)."""
    app.command("synth")(synth)
    app.command("stats")(stats)
