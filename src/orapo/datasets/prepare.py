"""``orapo data prepare``: the steps every dataset goes through after its converter.

A converter (:mod:`orapo.datasets.spec`) returns candidate studies; :func:`prepare` then does
the same steps for every dataset, in this order, each one counting what it skips
(:mod:`orapo.datasets.reporting`):

1. duplicate ids: the first study with an id is kept, later ones are skipped;
2. check the required sections are non-empty (``--require``), then blank the sections not
   kept (``--sections``): skip reasons ``empty report``, ``no findings section``,
   ``no impression section``;
3. every image must exist (``missing image``) and, with ``--verify-images``, open with Pillow
   (``unreadable image``);
4. labels: the dataset's own, or the orapo labeler for the rest (counted in the summary);
5. image paths relative to the manifest's folder (or absolute, or copied beside it);
6. the manifest and ``prepare_summary.json`` (:mod:`orapo.datasets.summary`) are written
   atomically.

Nothing is dropped silently: a skip names the file and line (or entry) and is counted by
reason; with ``strict`` the first skip raises :class:`PrepareError` instead.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orapo.atomic import atomic_copy, atomic_write_text
from orapo.datasets.reporting import SkipLog, Tracker
from orapo.datasets.spec import (
    DATASETS,
    Candidate,
    Collected,
    DatasetSpec,
    PrepareError,
    PrepareOptions,
    resolve_options,
)
from orapo.datasets.summary import build_summary
from orapo.images import ImageLoadError, check_image
from orapo.manifest import Study, format_report, write_manifest
from orapo.observations import LabelDict, labels_to_dict_checked

SUMMARY_NAME = "prepare_summary.json"
#: Batch size for the orapo labeler.
LABEL_BATCH = 256


@dataclass
class PrepareResult:
    manifest: Path
    summary_path: Path
    summary: dict[str, Any]
    studies: list[Study]


def _apply_sections(c: Candidate, options: PrepareOptions, log: SkipLog) -> bool:
    """Check ``--require`` on the study's text, then blank the sections not kept."""
    has_f, has_i = bool(c.findings.strip()), bool(c.impression.strip())
    if not has_f and not has_i:
        log.skip("empty report", c.where, f"study {c.id} has no findings or impression text")
        return False
    need_f = options.require in ("findings", "both") or options.sections == "findings"
    need_i = options.require in ("impression", "both") or options.sections == "impression"
    if need_f and not has_f:
        log.skip("no findings section", c.where, f"study {c.id}")
        return False
    if need_i and not has_i:
        log.skip("no impression section", c.where, f"study {c.id}")
        return False
    if options.sections == "findings":
        c.impression = ""
    elif options.sections == "impression":
        c.findings = ""
    return True


def _images_ok(c: Candidate, options: PrepareOptions, log: SkipLog) -> bool:
    """Every image exists (and, with ``--verify-images``, opens); else skip the study, counted
    as ``missing image`` or ``unreadable image``."""
    try:
        for path in c.images:
            check_image(path, verify=options.verify_images)
    except ImageLoadError as err:
        log.skip(f"{err.reason} image", c.where, f"study {c.id}: {err}")
        return False
    return True


def _label_with_labeler(candidates: list[Candidate], name: str, track: Tracker) -> list[LabelDict]:
    from orapo.labeler import get_labeler

    labeler = get_labeler(name)
    texts = [format_report(c.findings, c.impression) for c in candidates]
    batches = [texts[i : i + LABEL_BATCH] for i in range(len(texts)) if i % LABEL_BATCH == 0]
    out: list[LabelDict] = []
    for batch in track(batches, f"labelling with labeler {name!r}"):
        out.extend(labels_to_dict_checked(d) for d in labeler.label_batch(batch))
    if len(out) != len(candidates):
        raise PrepareError(f"labeler {name!r} returned {len(out)} results for {len(texts)}")
    return out


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _manifest_paths(c: Candidate, options: PrepareOptions) -> list[str]:
    out_dir = os.path.abspath(options.out)
    paths = []
    for i, src in enumerate(c.images):
        if options.copy_images:
            dest = Path(out_dir) / "images" / _safe_name(c.id) / f"{i}_{src.name}"
            atomic_copy(src, dest)
            paths.append(dest.relative_to(out_dir).as_posix())
        elif options.absolute_paths:
            paths.append(os.path.abspath(src))
        else:
            paths.append(Path(os.path.relpath(os.path.abspath(src), out_dir)).as_posix())
    return paths


def finish(
    collected: Collected,
    spec: DatasetSpec,
    options: PrepareOptions,
    log: SkipLog,
    track: Tracker,
) -> tuple[list[Study], Counter]:
    """Steps 1-5 of the module docstring: checked, labelled manifest studies."""
    kept: list[Candidate] = []
    seen: dict[str, str] = {}
    for c in track(collected.candidates, "checking studies"):
        if c.id in seen:
            log.skip("duplicate id", c.where, f"{c.id!r} already came from {seen[c.id]}")
            continue
        seen[c.id] = c.where
        if _apply_sections(c, options, log) and _images_ok(c, options, log):
            kept.append(c)

    source = collected.label_source
    label_sources: Counter = Counter()
    if source == "none":
        for c in kept:
            c.labels = None
    else:
        need = [c for c in kept if source == "labeler" or c.labels is None]
        if source != "labeler" and need:
            log.note(f"no {source} labels for the study: labelled by the orapo labeler", len(need))
        if need:
            labelled = _label_with_labeler(need, options.labeler, track)
            for c, labels in zip(need, labelled, strict=True):
                c.labels = labels
                c.source["labels"] = f"labeler:{options.labeler}"
    for c in kept:
        c.source.setdefault("labels", source if c.labels is not None else "none")
        label_sources[c.source["labels"]] += 1

    studies = [
        Study(
            id=c.id,
            split=c.split,
            images=_manifest_paths(c, options),
            findings=c.findings,
            impression=c.impression,
            labels=c.labels,
            source={"dataset": spec.name, "format": options.format, **c.source},
        )
        for c in track(kept, "copying images" if options.copy_images else "writing paths")
    ]
    return studies, label_sources


def prepare(dataset: str, options: PrepareOptions, *, console: Any = None) -> PrepareResult:
    """Convert one dataset into ``options.out / options.manifest_name`` (module docstring).

    ``console`` (a rich Console) shows progress bars; ``None`` runs quietly.
    """
    spec = DATASETS.get(dataset)
    options = resolve_options(spec, options)
    if not options.root.is_dir():
        raise PrepareError(f"--root {options.root} is not a folder")
    log = SkipLog(strict=options.strict)
    if console is not None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        context: Any = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
    else:
        context = nullcontext(None)
    with context as progress:
        track = Tracker(progress)
        collected = spec.collect(options, spec, log, track)
        studies, label_sources = finish(collected, spec, options, log, track)
    manifest_path = options.out / options.manifest_name
    write_manifest(manifest_path, studies)
    summary = build_summary(spec, options, collected, log, studies, label_sources)
    summary_path = options.out / SUMMARY_NAME
    atomic_write_text(summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return PrepareResult(manifest_path, summary_path, summary, studies)
