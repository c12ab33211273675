"""Reading images for the policy: every failure names the file; skipping is explicit and counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageLoadError(ValueError):
    """An image that is missing or cannot be decoded; the message starts with its path."""


def load_image(path: str | Path) -> Image.Image:
    """Open, fully decode and convert an image to RGB (grayscale X-rays become 3 equal channels)."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: image file does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"{path}: cannot read image ({err})") from None


@dataclass
class LoadedImages:
    """Images that loaded, their positions in the input, and what was skipped and why."""

    images: list[Image.Image]
    kept: list[int]
    skipped: Counter = field(default_factory=Counter)
    skipped_paths: list[str] = field(default_factory=list)


def load_images(paths: Sequence[str | Path], *, skip_bad: bool = False) -> LoadedImages:
    """Load ``paths`` in order; a bad image raises :class:`ImageLoadError` unless ``skip_bad``."""
    out = LoadedImages(images=[], kept=[])
    for i, p in enumerate(paths):
        try:
            out.images.append(load_image(p))
        except ImageLoadError as err:
            if not skip_bad:
                raise
            reason = "missing" if "does not exist" in str(err) else "unreadable"
            out.skipped[reason] += 1
            out.skipped_paths.append(str(p))
            continue
        out.kept.append(i)
    return out


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
