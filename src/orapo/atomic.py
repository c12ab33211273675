"""Atomic writes: a file or folder appears whole under its name, or not at all.

Everything orapo writes that another process, a resumed run or a reader may see half-written
(manifests, summaries, configs, metrics, plots, images, model directories) goes through
:func:`atomic_path`: the content is written under a temporary name beside the target, then
renamed onto it (``os.replace``: atomic within one folder); on any error the temporary is
removed and the target is left as it was.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "a.txt", "hello")
>>> (folder / "a.txt").read_text()
'hello'
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` to write to; when the block ends without
    error it is renamed onto ``path``, otherwise removed.

    The parent folder is created. With ``directory=True`` the temporary is an empty folder and
    an existing folder at ``path`` is replaced (moved aside, then deleted once the new one is in
    place). The temporary name is unique per process and call, so concurrent writers of the
    same target do not collide (the last rename wins).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and path.exists():
            old = tmp.with_suffix(".old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy the file ``src`` to ``dest`` atomically (contents only, as ``shutil.copyfile``)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


__all__ = ["atomic_copy", "atomic_path", "atomic_write_bytes", "atomic_write_text"]
