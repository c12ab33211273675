"""Shared test helpers: a typer root for one command group, a CliRunner, benchmark modules, and
a tiny synthetic world with an untrained tiny demo model."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import typer
from typer.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def cli_app(register: Callable[[typer.Typer], None]) -> typer.Typer:
    """A typer root with the commands ``register`` adds (as ``orapo``'s root does)."""
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root."""

    register(app)
    return app


def cli_runner() -> CliRunner:
    """A CliRunner that keeps stderr apart from stdout (on every click version)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:  # click >= 8.2 keeps stderr apart already
        return CliRunner()


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (not a package) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_world(root: Path) -> tuple[Path, Path]:
    """A 48-study synthetic world at 56 px (train 32, val 8, test 8) under ``root/synth`` and an
    untrained tiny demo model whose tokenizer knows its reports: (manifest, model directory)."""
    from orapo.manifest import read_manifest
    from orapo.model import build_demo_model
    from orapo.synth import generate

    manifest = generate(
        root / "synth",
        48,
        seed=0,
        size=56,
        progress=False,
        contact_sheet=False,
        counts={"train": 32, "val": 8, "test": 8},
    )
    texts = [s.report for s in read_manifest(manifest)]
    return manifest, build_demo_model(root / "model", texts, preset="tiny", seed=0)
