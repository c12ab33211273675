"""A general-domain caption world: grayscale scenes of simple shapes, described in sentences.

The embedded demo base model learns here to look at an image and write about it (where things
are, how big and bright they are), with no radiology at all, so that it stands where
Qwen2.5-VL-3B stands in the paper: a competent general vision-language model that knows little
radiology. Images match the chest world's size and grayscale look so that the same vision tower
serves both.

A scene has 1-3 shapes; each has a kind, a size, a brightness and a position on a 3x3 grid.

>>> import numpy as np
>>> scene = sample_scene(np.random.default_rng(0))
>>> caption = write_caption(scene, np.random.default_rng(0))
>>> caption.endswith(".")
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

KINDS = ("circle", "square", "ring", "bar", "triangle", "cross")
SIZES = ("small", "large")
BRIGHTNESS = {"bright": 235, "gray": 150, "faint": 95}
ROWS = ("upper", "middle", "lower")
COLS = ("left", "center", "right")


@dataclass(frozen=True)
class Shape:
    kind: str
    size: str
    brightness: str
    row: int
    col: int

    def where(self) -> str:
        if (self.row, self.col) == (1, 1):
            return "in the center"
        if self.row == 1:
            return f"on the {COLS[self.col]}"
        if self.col == 1:
            return f"at the {'top' if self.row == 0 else 'bottom'}"
        return f"in the {ROWS[self.row]} {COLS[self.col]}"


def sample_scene(rng: np.random.Generator) -> list[Shape]:
    """1-3 shapes in distinct grid cells, sorted top-left to bottom-right."""
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    cells = rng.choice(9, size=n, replace=False)
    shapes = [
        Shape(
            kind=str(rng.choice(KINDS)),
            size=str(rng.choice(SIZES)),
            brightness=str(rng.choice(list(BRIGHTNESS))),
            row=int(c) // 3,
            col=int(c) % 3,
        )
        for c in cells
    ]
    return sorted(shapes, key=lambda s: (s.row, s.col))


_OPENERS = ("There is a {desc} {where}.", "A {desc} is seen {where}.", "{Where} there is a {desc}.")
_COUNT = {1: "one shape", 2: "two shapes", 3: "three shapes"}


def write_caption(scene: list[Shape], rng: np.random.Generator) -> str:
    """A few plain sentences describing the scene, with some variation in phrasing."""
    sentences = [f"The picture shows {_COUNT[len(scene)]} on a dark background."]
    for shape in scene:
        desc = f"{shape.size} {shape.brightness} {shape.kind}"
        template = _OPENERS[int(rng.integers(len(_OPENERS)))]
        where = shape.where()
        sentences.append(template.format(desc=desc, where=where, Where=where.capitalize()))
    return " ".join(sentences)


def render_scene(scene: list[Shape], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the scene as a grayscale image of side ``size`` with mild noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.full((size, size), 20.0 + 15.0 * rng.random(), dtype=np.float32)
    for shape in scene:
        cy = (shape.row + 0.5) / 3 + rng.normal(0, 0.02)
        cx = (shape.col + 0.5) / 3 + rng.normal(0, 0.02)
        r = (0.13 if shape.size == "large" else 0.07) * (1 + rng.normal(0, 0.05))
        dy, dx = yy - cy, xx - cx
        if shape.kind == "circle":
            mask = dy**2 + dx**2 <= r**2
        elif shape.kind == "ring":
            d = np.sqrt(dy**2 + dx**2)
            mask = (d <= r) & (d >= 0.6 * r)
        elif shape.kind == "square":
            mask = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
        elif shape.kind == "bar":
            mask = (np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r * 1.2)
        elif shape.kind == "triangle":
            mask = (dy <= r * 0.8) & (dy >= -r * 0.9 + 1.8 * np.abs(dx))
        else:  # cross
            mask = ((np.abs(dy) <= r * 0.25) | (np.abs(dx) <= r * 0.25)) & (
                (np.abs(dy) <= r) & (np.abs(dx) <= r)
            )
        img[mask] = BRIGHTNESS[shape.brightness] + rng.normal(0, 6)
    img += rng.normal(0, 4.0, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


def caption_dataset(n: int, size: int, seed: int) -> list[tuple[Image.Image, str]]:
    """``n`` (image, caption) pairs, deterministic by ``seed``."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = sample_scene(rng)
        out.append((render_scene(scene, size, rng).convert("RGB"), write_caption(scene, rng)))
    return out
