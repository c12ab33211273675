"""Reading images: every failure names the file and says why, as data; skipping is counted.

The one image loader of orapo: the trainer (``train/data.py``), the evaluator and ``orapo
generate`` (``model/``) and ``orapo data prepare --verify-images`` (``datasets/``) all read
images through here. A bad image raises :class:`ImageLoadError`, whose ``reason`` is one of
:data:`SKIP_REASONS` (``missing``: no such file; ``unreadable``: Pillow cannot decode it), the
key under which a skipped image is counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from orapo.errors import UserError

T = TypeVar("T")

MISSING = "missing"
UNREADABLE = "unreadable"
#: Why an image is bad; skipped images are counted under these keys.
SKIP_REASONS: tuple[str, ...] = (MISSING, UNREADABLE)


class ImageLoadError(UserError, ValueError):
    """An image that is missing or cannot be decoded.

    ``path`` is the file, ``reason`` one of :data:`SKIP_REASONS`, ``detail`` Pillow's message
    (unreadable images); ``context`` (e.g. ``"study 'x'"``) prefixes the message.
    """

    def __init__(self, path: str | Path, reason: str, detail: str = "", context: str = "") -> None:
        self.path, self.reason, self.detail, self.context = Path(path), reason, detail, context
        what = "does not exist" if reason == MISSING else f"cannot be read ({detail})"
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}image {self.path} {what}")

    def about(self, context: str) -> ImageLoadError:
        """The same error, its message prefixed by ``context`` (what the image belongs to)."""
        return ImageLoadError(self.path, self.reason, self.detail, context)


class NoImagesError(UserError, ValueError):
    """Every image was bad and skipped: nothing is left to work on."""


def _read(path: str | Path, read: Callable[[Image.Image], T]) -> T:
    """``read(image)`` on the opened file, or :class:`ImageLoadError` saying why it failed."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(path, MISSING)
    try:
        with Image.open(path) as img:
            return read(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(path, UNREADABLE, str(err)) from None


def _decode_rgb(img: Image.Image) -> Image.Image:
    img.load()
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open, fully decode and convert an image to RGB (grayscale X-rays become 3 equal channels)."""
    return _read(path, _decode_rgb)


def check_image(path: str | Path, *, verify: bool = True) -> None:
    """Raise :class:`ImageLoadError` if ``path`` does not exist or, with ``verify``, if Pillow
    cannot read its structure (``Image.verify``: no pixel decoding, fast on large datasets)."""
    if verify:
        _read(path, Image.Image.verify)
    elif not Path(path).is_file():
        raise ImageLoadError(path, MISSING)


@dataclass
class LoadedImages:
    """Images that loaded, their positions in the input, and what was skipped and why."""

    images: list[Image.Image]
    kept: list[int]
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skipped_paths: list[str] = field(default_factory=list)


def load_images(
    paths: Sequence[str | Path],
    *,
    skip_bad: bool = False,
    keep_images: bool = True,
    context: Sequence[str] | None = None,
) -> LoadedImages:
    """Load ``paths`` in order; a bad image raises :class:`ImageLoadError` unless ``skip_bad``,
    which counts it by reason instead.

    ``keep_images=False`` only checks that each image decodes (``images`` stays empty);
    ``context[i]`` names what image ``i`` belongs to in the error (e.g. ``"study 'x'"``).
    """
    out = LoadedImages(images=[], kept=[])
    for i, p in enumerate(paths):
        try:
            image = load_image(p)
        except ImageLoadError as err:
            if not skip_bad:
                raise err.about(context[i]) if context is not None else err from None
            out.skipped[err.reason] += 1
            out.skipped_paths.append(str(p))
            continue
        if keep_images:
            out.images.append(image)
        out.kept.append(i)
    return out


__all__ = [
    "MISSING",
    "SKIP_REASONS",
    "UNREADABLE",
    "ImageLoadError",
    "LoadedImages",
    "NoImagesError",
    "check_image",
    "load_image",
    "load_images",
]
