"""Finding the images ``orapo generate`` reads: a folder of images, or a list file.

Loading them (and why one is bad) is :mod:`orapo.images`.
"""

from __future__ import annotations

from pathlib import Path

from orapo.images import ImageLoadError, load_image  # noqa: F401  (re-exported for the model layer)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def images_in_folder(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_list(path: Path) -> list[Path]:
    """A text file with one image path per line (relative to the file's folder; # comments)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise ValueError(f"{path}: the image list is empty")
    return out
