"""`orapo data synth` and `orapo data stats`."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
