"""Errors a user can act on, and how the command line shows them.

A user error (a config value that does not fit, a file that is missing, an image that does not
decode, ...) is one of :class:`UserError`'s subclasses, or a ``FileNotFoundError`` /
``FileExistsError``; its message names the field or file and says how to fix it. Commands run
their body under :func:`user_errors`: such an error prints one red line, ``error: MESSAGE``, and
exits with status 1. A traceback is for bugs: any other exception passes through.
``orapo --debug COMMAND`` (or the environment variable ``ORAPO_DEBUG=1``, which also reaches the
processes of ``accelerate launch``) shows the traceback of user errors too.

This module imports nothing heavy (typer only when it prints), so the pure layers can derive
their errors from :class:`UserError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NoReturn

#: Environment variable that turns user errors back into tracebacks (``--debug`` sets it).
DEBUG_ENV = "ORAPO_DEBUG"


class UserError(Exception):
    """Base of the errors whose message tells the user what to change (no traceback needed)."""


def is_user_error(error: BaseException) -> bool:
    return isinstance(error, (UserError, FileNotFoundError, FileExistsError))


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fail(message: str) -> NoReturn:
    """Print ``error: MESSAGE`` in red on stderr and end the command with exit status 1."""
    import typer

    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Run a command's body: a user error becomes :func:`fail`'s one line (a traceback with
    ``--debug`` or ``ORAPO_DEBUG=1``); every other exception passes through."""
    try:
        yield
    except Exception as error:
        if not is_user_error(error) or debug_enabled():
            raise
        fail(str(error))


__all__ = ["DEBUG_ENV", "UserError", "debug_enabled", "fail", "is_user_error", "user_errors"]
