"""Writing model directories atomically, without ever deleting something that is not ours."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orapo.atomic import atomic_path

#: Files whose presence marks a folder as a model directory that may be replaced.
MODEL_DIR_MARKERS: tuple[str, ...] = ("config.json", "adapter_config.json", "orapo_model.json")


def write_dir_atomic(out_dir: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh folder beside ``out_dir``, then swap it into place.

    An existing ``out_dir`` is replaced only if it is empty or a model directory (holds one of
    :data:`MODEL_DIR_MARKERS`); anything else is an error, so a typo cannot delete a folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a directory")
        entries = list(out_dir.iterdir())
        if entries and not any((out_dir / m).exists() for m in MODEL_DIR_MARKERS):
            raise FileExistsError(
                f"{out_dir} exists and is not a model directory; refusing to replace it "
                "(choose a new or empty folder)"
            )
    with atomic_path(out_dir, directory=True) as tmp:
        write(tmp)
    return out_dir
