"""IU X-ray / Open-i (``iu-xray``): the Indiana University Chest X-ray Collection.

Format ``openi-xml`` (default), as NLM distributes it (``NLMCXR_reports.tgz`` and
``NLMCXR_png.tgz``)::

    ROOT/ecgen-radiology/1.xml          one report per file (--file reports=DIR)
    ROOT/NLMCXR_png/CXR1_1_IM-0001-3001.png   (--images-dir)

Each XML file has ``<uId id="CXR1"/>``, ``<AbstractText Label="FINDINGS">`` and
``Label="IMPRESSION"`` sections, hand-coded ``<MeSH><major>`` terms and one
``<parentImage id="CXR1_1_IM-0001-3001">`` per image; the image file is
``<images-dir>/<id>.png``. Study id: ``iu-<uId>``.

- Split: the collection has no official split. Each report goes to train / val / test by a
  seeded hash of its uId (:func:`orapo.datasets.splits.hash_split`; default fractions
  0.7 / 0.1 / 0.2, R2Gen's proportions, seed 0). A report's split does not change when other
  reports are added or removed. IU X-ray has no patient ids: each report is one patient's
  study, so a split by report uId is a split by patient as far as the data can tell.
- Views: the XML does not record view position, so ``--views`` does not apply. Every image
  of the study is kept (``--max-images`` default 0 = all, as R2Gen does); ``--max-images 1``
  keeps the first listed image, which is not necessarily the frontal one.
- Labels: IU X-ray has no CheXpert labels (its MeSH terms do not map one-to-one onto the 14
  observations), so studies are labelled by the orapo labeler; the ``<major>`` MeSH terms are
  kept in ``source.mesh_major`` for evaluation.
- Reports with no image (``no images``) or no findings and no impression (``empty report``)
  are skipped and counted; an XML file that does not parse is ``unreadable report``.

Format ``r2gen``: R2Gen's ``iu_xray/annotation.json`` + ``iu_xray/images/`` with the split as
distributed (chosen without ``--format`` when ``ROOT/annotation.json`` is there and
``ROOT/ecgen-radiology`` is not); entries are one per study (``id`` like
``CXR2384_IM-0942``, study id ``iu-CXR2384_IM-0942``); the report text goes to
``--r2gen-field`` (default ``findings``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from orapo.datasets.r2gen import group_entries, read_annotation
from orapo.datasets.reporting import SkipLog, Tracker
from orapo.datasets.sections import clean_text
from orapo.datasets.spec import (
    DATASETS,
    Candidate,
    Collected,
    DatasetSpec,
    PrepareError,
    PrepareOptions,
    choose_label_source,
    other_layouts,
)
from orapo.datasets.splits import hash_split

FILES = {"reports": "ecgen-radiology", "annotation": "annotation.json"}


def _sort_key(path: Path) -> tuple[int, int, str]:
    """Numeric file names in numeric order (``2.xml`` before ``10.xml``), then the rest."""
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.name)


def parse_openi_xml(path: Path) -> dict:
    """One Open-i report file -> ``{"uid", "findings", "impression", "images", "mesh_major"}``.

    Raises ``ET.ParseError`` for a file that is not XML and ``ValueError`` when the
    ``uId`` element is missing.
    """
    root = ET.parse(path).getroot()
    uid_el = root.find("uId")
    uid = (uid_el.get("id") or "").strip() if uid_el is not None else ""
    if not uid:
        raise ValueError("no <uId id=...> element")
    sections: dict[str, str] = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().upper()
        sections[label] = clean_text("".join(el.itertext()))
    images = [(el.get("id") or "").strip() for el in root.iter("parentImage")]
    mesh = [clean_text("".join(el.itertext())) for el in root.findall("MeSH/major")]
    return {
        "uid": uid,
        "findings": sections.get("FINDINGS", ""),
        "impression": sections.get("IMPRESSION", ""),
        "images": [i for i in images if i],
        "mesh_major": [m for m in mesh if m],
    }


def collect(options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker) -> Collected:
    label_source = choose_label_source(options, spec, {})
    if options.format == "r2gen":
        return _collect_r2gen(options, spec, log, track, label_source)
    if options.r2gen_field is not None:
        raise PrepareError("--r2gen-field applies to --format r2gen only")
    reports_dir = options.file(spec, "reports")
    if not reports_dir.is_dir():
        raise PrepareError(
            f"Open-i report folder {reports_dir} does not exist (set it with --file reports=DIR, "
            f"or use {other_layouts(spec, options)})"
        )
    images_dir = options.images_dir or options.root / "NLMCXR_png"
    files = sorted(reports_dir.glob("*.xml"), key=_sort_key)
    if not files:
        raise PrepareError(f"{reports_dir} holds no *.xml report files")
    fractions = options.split_fractions or (0.7, 0.1, 0.2)
    seed = options.seed if options.seed is not None else 0
    candidates = []
    for path in track(files, "reading Open-i reports"):
        try:
            report = parse_openi_xml(path)
        except ET.ParseError as err:
            line = err.position[0] if err.position else 0
            log.skip("unreadable report", f"{path}:{line}", f"not valid XML ({err})")
            continue
        except ValueError as err:
            log.skip("malformed report", str(path), str(err))
            continue
        except OSError as err:
            log.skip("unreadable report", str(path), str(err))
            continue
        if not report["images"]:
            log.skip("no images", str(path), f"{report['uid']} has no <parentImage>")
            continue
        images = [images_dir / f"{name}.png" for name in report["images"]]
        if options.max_images:
            images = images[: options.max_images]
        candidates.append(
            Candidate(
                id=f"iu-{report['uid']}",
                split=hash_split(report["uid"], seed, fractions),
                images=images,
                findings=report["findings"],
                impression=report["impression"],
                where=str(path),
                source={
                    "uid": report["uid"],
                    "report": path.name,
                    "image_ids": [p.stem for p in images],
                    "mesh_major": report["mesh_major"],
                    "split_rule": f"hash(seed={seed}, fractions={list(fractions)})",
                },
            )
        )
    inputs = {"reports": str(reports_dir), "images": str(images_dir)}
    return Collected(candidates, label_source, inputs)


def _collect_r2gen(
    options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker, label_source: str
) -> Collected:
    if options.split_fractions is not None or options.seed is not None:
        raise PrepareError("--split-fractions/--seed apply to --format openi-xml only")
    path = options.file(spec, "annotation")
    images_root = options.images_dir or options.root / "images"
    entries = read_annotation(path, options.splits(), log, track)
    field = options.r2gen_field or "findings"
    candidates = []
    for group in group_entries(entries, lambda e: e.id, log):
        entry = group[0]
        images = [images_root / p for p in entry.image_paths]
        if options.max_images:
            images = images[: options.max_images]
        report = clean_text(entry.report)
        candidates.append(
            Candidate(
                id=f"iu-{entry.id}",
                split=entry.split,
                images=images,
                findings=report if field == "findings" else "",
                impression=report if field == "impression" else "",
                where=entry.where,
                source={"entry_id": entry.id},
            )
        )
    return Collected(
        candidates, label_source, {"annotation": str(path), "images": str(images_root)}
    )


DATASETS.register("iu-xray")(
    DatasetSpec(
        name="iu-xray",
        summary="IU X-ray / Open-i: ecgen-radiology XML + NLMCXR_png (or R2Gen annotation.json)",
        formats=("openi-xml", "r2gen"),
        collect=collect,
        label_sources=(),
        files=FILES,
        columns={},
        options=frozenset({"split_fractions", "seed", "r2gen_field"}),
        defaults={"sections": "both", "require": "any", "max_images": 0},
        layouts={"openi-xml": "reports", "r2gen": "annotation"},
    )
)
