"""Generate a synthetic dataset: PNG images, ``manifest.jsonl`` and a contact sheet.

Study ``i`` of a dataset made with seed ``s`` depends only on ``(s, i)``: three independent
generators are spawned from ``SeedSequence([s, i])`` for the spec, the image and the report.
So a dataset is the same bytes whatever the number of workers, a report does not change when
images are skipped, and ``n=100`` is a prefix of ``n=1000`` apart from the split boundaries.
"""

from __future__ import annotations

import io
import os
import shutil
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orapo.atomic import atomic_write_bytes
from orapo.manifest import SPLITS, Study, write_manifest
from orapo.observations import format_labels
from orapo.synth.render import RENDER_VERSION, render_image
from orapo.synth.report import write_report
from orapo.synth.spec import DEFAULT_PROFILE, StudySpec, load_profile, sample_spec

#: Bumped whenever a change alters the studies drawn for a given seed.
SYNTH_VERSION = 1
DEFAULT_SPLIT_FRACS = (0.7, 0.1, 0.2)
MANIFEST_NAME = "manifest.jsonl"
CONTACT_SHEET_NAME = "contact_sheet.png"
IMAGE_DIR = "images"


def study_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """(spec, image, report) generators of study ``index`` of the dataset with ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    children = np.random.SeedSequence([seed, index]).spawn(3)
    return tuple(np.random.default_rng(c) for c in children)


def split_counts(n: int, split_fracs: Sequence[float] = DEFAULT_SPLIT_FRACS) -> dict[str, int]:
    """Studies per split: val and test are rounded from their fractions, train takes the rest.

    >>> split_counts(1000)
    {'train': 700, 'val': 100, 'test': 200}
    """
    if len(split_fracs) != 3:
        raise ValueError(f"split_fracs needs 3 fractions (train, val, test), got {split_fracs}")
    if any(f < 0 for f in split_fracs) or sum(split_fracs) <= 0:
        raise ValueError(f"split fractions must be non-negative and not all zero: {split_fracs}")
    total = float(sum(split_fracs))
    n_val = int(round(n * split_fracs[1] / total))
    n_test = int(round(n * split_fracs[2] / total))
    if n_val + n_test > n:
        n_test = n - n_val
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def split_of(index: int, counts: dict[str, int]) -> str:
    """Split of study ``index``: train first, then val, then test (contiguous blocks)."""
    edge = 0
    for name in SPLITS:
        edge += counts[name]
        if index < edge:
            return name
    raise IndexError(f"study {index} is beyond the {sum(counts.values())} studies")


@dataclass
class SynthStudy:
    """One generated study in memory."""

    index: int
    id: str
    spec: StudySpec
    findings: str
    impression: str
    labels: dict[str, int | None]
    image: np.ndarray | None  # (size, size) uint8, None when images are skipped


def make_study(
    seed: int,
    index: int,
    size: int = 112,
    with_image: bool = True,
    id_width: int = 6,
    profile: str = DEFAULT_PROFILE,
) -> SynthStudy:
    """Draw study ``index`` of the dataset with ``seed`` (spec, report and optionally image).

    ``profile`` names the world (``salient``, the default, or ``realistic``; orapo.synth.spec).
    """
    spec_rng, image_rng, report_rng = study_rngs(seed, index)
    spec = sample_spec(spec_rng, load_profile(profile))
    findings, impression, labels = write_report(spec, report_rng)
    image = render_image(spec, size, image_rng) if with_image else None
    return SynthStudy(
        index, f"synth-{index:0{id_width}d}", spec, findings, impression, labels, image
    )


def iter_studies(
    seed: int,
    start: int,
    stop: int,
    size: int = 112,
    with_image: bool = True,
    id_width: int = 6,
    profile: str = DEFAULT_PROFILE,
) -> Iterator[SynthStudy]:
    """Studies ``start .. stop-1`` in memory (for trainers and tests; nothing is written)."""
    for i in range(start, stop):
        yield make_study(seed, i, size, with_image, id_width, profile)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a (H, W) uint8 array as a grayscale PNG (deterministic bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.dtype} {image.shape}")
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _work(
    args: tuple[int, int, int, int, bool, str, str],
) -> tuple[dict[str, Any], bytes | None]:
    """Make one study and its PNG bytes (top-level so worker processes can run it)."""
    seed, index, size, id_width, with_image, split, profile = args
    s = make_study(seed, index, size, with_image, id_width, profile)
    study = Study(
        id=s.id,
        split=split,
        images=[f"{IMAGE_DIR}/{s.id}.png"],
        findings=s.findings,
        impression=s.impression,
        labels=s.labels,
        source={
            "dataset": "synth",
            "seed": seed,
            "profile": profile,
            "index": index,
            "version": SYNTH_VERSION,
            "render_version": RENDER_VERSION,
            "size": size,
            "spec": s.spec.to_json(),
        },
    )
    return study.to_json(), (png_bytes(s.image) if s.image is not None else None)


def generate(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    size: int = 112,
    split_fracs: Sequence[float] = DEFAULT_SPLIT_FRACS,
    write_images: bool = True,
    progress: bool = True,
    *,
    counts: dict[str, int] | None = None,
    workers: int = 1,
    contact_sheet: bool = True,
    overwrite: bool = False,
    profile: str = DEFAULT_PROFILE,
) -> Path:
    """Write ``n`` synthetic studies under ``out_dir``; returns the manifest path.

    Writes ``out_dir/images/<id>.png``, then ``out_dir/manifest.jsonl`` (atomically, last:
    a folder with a manifest is complete) and, with ``contact_sheet``,
    ``out_dir/contact_sheet.png``. ``counts`` (studies per split) overrides
    ``split_fracs``. ``workers > 1`` renders in that many processes (same bytes as 1).
    An existing manifest in ``out_dir`` is an error unless ``overwrite``; with ``overwrite``
    the old images folder is removed first, so no stale image stays behind.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    load_profile(profile)  # an unknown profile fails here, before any work
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if counts is None:
        counts = split_counts(n, split_fracs)
    if set(counts) != set(SPLITS) or sum(counts.values()) != n or min(counts.values()) < 0:
        raise ValueError(f"split counts {counts} must cover {SPLITS} and add up to n={n}")
    out = Path(out_dir)
    manifest_path = out / MANIFEST_NAME
    if manifest_path.exists() and not overwrite:
        raise FileExistsError(f"{manifest_path} exists; pass overwrite=True (--overwrite)")
    image_dir = out / IMAGE_DIR
    if overwrite and image_dir.exists():
        shutil.rmtree(image_dir)
    if write_images:
        image_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    id_width = max(6, len(str(n - 1)))
    jobs = [(seed, i, size, id_width, write_images, split_of(i, counts), profile) for i in range(n)]
    records: list[dict[str, Any]] = []
    sheet: list[tuple[dict[str, Any], bytes]] = []

    def consume(results: Iterator[tuple[dict[str, Any], bytes | None]], advance) -> None:
        for obj, png in results:
            if png is not None:
                # Plain writes: the manifest, written atomically last, is the commit point.
                (out / obj["images"][0]).write_bytes(png)
                if len(sheet) < 24:
                    sheet.append((obj, png))
            records.append(obj)
            advance()

    with _progress(progress, n) as advance:
        if workers > 1:
            import multiprocessing as mp

            with mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(
                workers
            ) as pool:
                consume(pool.imap(_work, jobs, chunksize=32), advance)
        else:
            consume(map(_work, jobs), advance)
    write_manifest(manifest_path, records)
    if contact_sheet and sheet:
        save_contact_sheet(sheet, out / CONTACT_SHEET_NAME)
    return manifest_path


class _progress:
    """A rich progress bar (or nothing) exposing an ``advance()`` callable."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self.bar.__enter__()
        task = self.bar.add_task("synth", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


def save_contact_sheet(
    items: Sequence[tuple[dict[str, Any], bytes]], path: Path, cols: int = 6, scale: int = 2
) -> None:
    """A grid of images, each with its id, labels and impression underneath (PNG, atomic)."""
    from PIL import Image, ImageDraw, ImageFont

    images = [Image.open(io.BytesIO(png)).convert("L") for _, png in items]
    side = max(im.width for im in images) * scale
    tile_w, text_h = max(side, 224), 150
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    rows = (len(items) + cols - 1) // cols
    sheet = Image.new("L", (cols * tile_w, rows * (side + text_h)), color=255)
    draw = ImageDraw.Draw(sheet)
    chars = max(20, tile_w // 6)
    for k, ((obj, _), im) in enumerate(zip(items, images, strict=True)):
        r, c = divmod(k, cols)
        x, y = c * tile_w, r * (side + text_h)
        sheet.paste(im.resize((side, side), Image.NEAREST), (x, y))
        labels = obj.get("labels") or {}
        found = {k: v for k, v in labels.items() if v in (1, -1)}
        negated = sorted(k for k, v in labels.items() if v == 0)
        lines = [f"{obj['id']} ({obj['split']})"]
        lines += textwrap.wrap(format_labels(found), chars)[:4]
        lines += textwrap.wrap("negative: " + (", ".join(negated) or "-"), chars)[:2]
        lines += textwrap.wrap("IMP: " + obj["impression"], chars)[:4]
        draw.multiline_text((x + 3, y + side + 2), "\n".join(lines), fill=0, font=font, spacing=1)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
