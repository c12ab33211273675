"""Training data: studies of a manifest, their images, and a resumable sampling order."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from orapo.images import ImageLoadError, load_image, load_images
from orapo.manifest import Manifest, Study

#: The trainer's name for :class:`orapo.images.ImageLoadError` (one class, one loader).
ImageError = ImageLoadError


def study_image(study: Study, root: Path) -> Image.Image:
    """The first image of a study (the frontal view, by the manifest convention)."""
    return load_image(study.image_paths(root)[0])


def select_studies(manifest: Manifest, split: str, size: int | None, seed: int) -> list[Study]:
    """The studies of ``split``; with ``size``, the first ``size`` after a seeded shuffle.

    The shuffle makes ``size=400`` a subset of ``size=1000`` for the same seed, as in the
    paper's nested data-efficiency settings.
    """
    studies = manifest.split(split)
    if not studies:
        raise ValueError(f"manifest {manifest.path} has no studies in split {split!r}")
    if size is None or size >= len(studies):
        return studies
    order = list(range(len(studies)))
    random.Random(seed).shuffle(order)
    return [studies[i] for i in sorted(order[:size])]


def shuffle_images(studies: list[Study], seed: int) -> list[Study]:
    """The same studies (reports, labels) with each one's images taken from another study.

    The grounding check: a model that reads the image scores clearly lower on these than on
    the true pairs; an image-blind one scores the same. A seeded shuffle rotated by one, so no
    study keeps its own images (with two or more studies).

    >>> from orapo.manifest import Study
    >>> s = [Study(str(i), "test", [f"{i}.png"], "f", "i") for i in range(4)]
    >>> [t.images[0] for t in shuffle_images(s, 0)] != [t.images[0] for t in s]
    True
    >>> sorted(t.images[0] for t in shuffle_images(s, 0)) == sorted(t.images[0] for t in s)
    True
    """
    order = list(range(len(studies)))
    random.Random(seed).shuffle(order)
    donor = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    return [
        dataclasses.replace(study, images=list(studies[donor[i]].images))
        for i, study in enumerate(studies)
    ]


def check_images(
    studies: list[Study], root: Path, *, skip_bad: bool
) -> tuple[list[Study], Counter]:
    """Verify every study's first image decodes; a bad one raises :class:`ImageLoadError`
    naming the study, or with ``skip_bad`` is dropped and counted by reason (``missing``,
    ``unreadable``)."""
    checked = load_images(
        [s.image_paths(root)[0] for s in studies],
        skip_bad=skip_bad,
        keep_images=False,
        context=[f"study {s.id!r}" for s in studies],
    )
    return [studies[i] for i in checked.kept], checked.skipped


@dataclass
class EpochSampler:
    """Seeded epoch-by-epoch permutation of ``n`` items, resumable from a position.

    ``position`` counts items handed out since the start; epoch ``e`` uses a permutation seeded
    by ``(seed, e)``, so the order does not depend on how many processes share the batches.
    """

    n: int
    seed: int
    position: int = 0
    _cache: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def _epoch(self, e: int) -> list[int]:
        if e not in self._cache:
            order = list(range(self.n))
            random.Random(f"{self.seed}:{e}").shuffle(order)
            self._cache = {e: order}
        return self._cache[e]

    def take(self, count: int) -> list[int]:
        """The next ``count`` indices (crossing epoch boundaries as needed)."""
        out = []
        for _ in range(count):
            e, i = divmod(self.position, self.n)
            out.append(self._epoch(e)[i])
            self.position += 1
        return out

    def state_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint sampler was over {state['n']} studies with seed {state['seed']}; "
                f"this run has {self.n} with seed {self.seed}: resume with the same data and seed"
            )
        self.position = int(state["position"])
