"""`orapo train`: the main job."""

from __future__ import annotations

from pathlib import Path

import typer

from orapo.errors import user_errors


def train(
    overrides: list[str] = typer.Argument(
        None, help="Config overrides, section.field=value (e.g. trainer.lr=1e-5 sampling.k=4)."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Recipe YAML (default: the embedded demo recipe)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default: runs/<recipe>-<time>)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the run in this directory from its last checkpoint."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the resolved config, check data and model paths, exit."
    ),
    describe: bool = typer.Option(False, "--describe", help="List every config field and exit."),
) -> None:
    """Train a policy with OraPO (or the GRPO / SFT ablations) and evaluate it before and after.

    With no arguments: the main job on the embedded default (synthetic chest X-ray world, demo
    base model, OraPO on 1,000 training studies), about ten minutes on a 2-core CPU.
    """
    from rich.console import Console

    from orapo.train.run import describe_config, dry_run_report, load_train_config, main_job

    console = Console()
    if describe:
        describe_config(console)
        return
    # A config that does not fit, a missing file or image, a run that cannot resume: one line.
    with user_errors():
        cfg, run_dir = load_train_config(config, overrides or [], out, resume)
        if dry_run:
            ok = dry_run_report(cfg, run_dir, console)
            raise typer.Exit(0 if ok else 1)
        main_job(cfg, run_dir, resume is not None, console)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
