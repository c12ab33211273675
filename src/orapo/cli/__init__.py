"""The ``orapo`` command line.

Built on typer: typed options become ``--help`` text and validation for free, and it is the
click-based tool most of the Python ML ecosystem already uses. Each area of the package owns
its commands in its own ``cli`` module with a ``register(app)`` function; this file only
assembles them. Heavy imports (torch, transformers) happen inside commands, so ``--help``
stays fast.
"""

from __future__ import annotations

import importlib
import os

import typer

from orapo import __version__
from orapo.errors import DEBUG_ENV

app = typer.Typer(
    name="orapo",
    help="OraPO: teach vision-language models to write factual chest X-ray reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    help="Datasets: the synthetic world, real datasets into manifests, subsets, statistics.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

# (module, typer app its commands go to). Order is the order of `orapo --help`.
_COMMAND_MODULES: list[tuple[str, typer.Typer]] = [
    ("orapo.synth.cli", data_app),
    ("orapo.datasets.cli", data_app),
    ("orapo.labeler.cli", app),
    ("orapo.model.cli", app),
    ("orapo.train.cli", app),
    ("orapo.llm.cli", app),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orapo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        help=f"Show the traceback of user errors too (bad config, missing file, ...), which "
        f"otherwise print one line; the same as {DEBUG_ENV}=1.",
    ),
) -> None:
    """OraPO: teach vision-language models to write factual chest X-ray reports."""
    if debug:  # through the environment, so that accelerate's processes see it too
        os.environ[DEBUG_ENV] = "1"


for _module, _target in _COMMAND_MODULES:
    importlib.import_module(_module).register(_target)


def main() -> None:
    app()
