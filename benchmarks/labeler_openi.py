"""Score report labelers against NLM's manual MeSH coding of the Open-i (IU X-ray) reports.

    .venv/bin/python benchmarks/labeler_openi.py                 # both halves, ours vs naive
    .venv/bin/python benchmarks/labeler_openi.py --half dev --errors "Pleural Effusion"
    .venv/bin/python benchmarks/labeler_openi.py --half dev --differential uncertain

Data: ``../shared/data/openi/openi-dev-reports.tgz`` (the development split, 3,156 reports),
read directly with :mod:`tarfile`; nothing is copied. Each report's text is
``orapo.manifest.format_report(FINDINGS, IMPRESSION)``; its gold standard is the hand-coded
``<major>`` MeSH terms.

Halves. Reports are split by ``sha256(uid) % 2`` into ``dev`` (0: the labeler's vocabulary
was developed looking at these) and ``check`` (1: scored only at the end, as a stand-in for the
held-out reports). Report both; trust ``check``.

Protocol. For each observation, a report is *gold positive*, *gold negative* or *excluded*
(ambiguous), by :func:`mesh_judgement` below. A prediction is positive when the labeler says
1 (``--uncertain-positive``: 1 or -1). Per observation: precision, recall and F1 of positive
detection over the reports not excluded; micro = pooled counts over all observations; macro =
mean of the per-observation F1 over observations with at least one gold positive (an F1 with
no gold and no predicted positive is undefined and left out).

The MeSH -> observation mapping is a judgement (also in ``docs/labeler.md``):

* ``No Indexing`` reports and reports with no FINDINGS/IMPRESSION text are excluded.
* A report coded only ``normal`` is gold positive for No Finding and gold negative for every
  other observation.
* Clean headings are gold positive: Cardiomegaly (not ``borderline``), Cardiac Shadow/enlarged
  -> Cardiomegaly; Mediastinum/enlarged|prominent|widened -> Enlarged Cardiomediastinum;
  Opacity, Airspace Disease, Infiltrate, Density/lung -> Lung Opacity; Nodule, Mass (in the
  lung) -> Lung Lesion; Pulmonary Edema -> Edema; Consolidation; Pneumonia; Pulmonary
  Atelectasis -> Atelectasis; Pneumothorax, Hydro-/Hemopneumothorax -> Pneumothorax; Pleural
  Effusion, Hydropneumothorax, Hemothorax, Empyema -> Pleural Effusion; Thickening/pleura,
  Cicatrix/pleura, Calcinosis/pleura -> Pleural Other; Fractures, Bone -> Fracture; Catheters,
  Indwelling, Implanted Medical Device, Medical Device, Tube, Inserted, Stents, Surgical
  Instruments, Sutures, Pacemaker, Heart Valve Prosthesis -> Support Devices.
* Ambiguous headings exclude the report for the observations they may or may not mean (unless
  a clean heading makes it positive): Cardiomegaly/borderline, Cardiac Shadow (not enlarged),
  Pericardial Effusion, Heart Failure, Heart Atria / Heart Ventricles (enlarged, prominent,
  dilated: a chamber enlargement may or may not come with an enlarged silhouette) ->
  Cardiomegaly; Cardiomegaly, Cardiac Shadow, Aorta
  (enlarged/prominent/dilated), Mediastinum (lymph nodes), Shift, Mass/mediastinum ->
  Enlarged Cardiomediastinum; Opacity, Airspace Disease, Infiltrate, Density/lung ->
  Consolidation and Pneumonia, and Consolidation <-> Pneumonia; Consolidation, Pneumonia,
  Atelectasis, Edema, Pulmonary Congestion, Cicatrix (lung), Markings, Lung/interstitial,
  Thickening (lung), Pulmonary Fibrosis, Fibrosis, Lung Diseases, Interstitial, Nodule, Mass,
  Density (not lung, not bone) -> Lung Opacity; Calcified Granuloma, Granuloma, Granulomatous
  Disease, Calcinosis/lung, round Density, Nipple Shadow, Cavitation, pleural Nodule -> Lung
  Lesion;
  Pulmonary Congestion, Heart Failure -> Edema; Volume Loss -> Atelectasis;
  Costophrenic Angle, Pleura, Density/pleura|costophrenic angle -> Pleural Effusion and
  Pleural Other, pleural Nodule -> Pleural Other; Deformity (bone) -> Fracture; Foreign
  Bodies, Spinal Fusion, Breast Implants -> Support Devices.
* No Finding: gold positive if coded ``normal``; gold negative if any observation other than
  No Finding and Support Devices is gold positive; otherwise excluded (``normal`` is stricter
  than No Finding: a report coded only "Calcified Granuloma" or "Emphysema" is neither).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orapo.labeler.rule import DIFFERENTIAL_MODES
from orapo.manifest import format_report
from orapo.observations import NO_FINDING, OBSERVATIONS, SUPPORT_DEVICES

DEFAULT_TGZ = Path(__file__).resolve().parents[2] / "shared/data/openi/openi-dev-reports.tgz"

Judgement = dict[str, int | None]


@dataclass(frozen=True)
class Report:
    uid: str
    half: str  # "dev" or "check"
    text: str
    major: tuple[str, ...]


def half_of(uid: str) -> str:
    """``dev`` or ``check``: a fixed split by hash of the uid (e.g. ``CXR4``)."""
    return "dev" if int(hashlib.sha256(uid.encode()).hexdigest(), 16) % 2 == 0 else "check"


def load_reports(tgz: Path) -> list[Report]:
    """Every report of the archive, in archive order (XML parsed from the tar stream)."""
    if not tgz.is_file():
        raise FileNotFoundError(f"{tgz} not found (see ../shared/data/openi/README.md)")
    out = []
    with tarfile.open(tgz) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            root = ET.fromstring(fh.read())
            uid_el = root.find("uId")
            if uid_el is None or not uid_el.get("id"):
                raise ValueError(f"{tgz}:{member.name}: no <uId id=...>")
            uid = uid_el.get("id", "")
            sections = {a.get("Label"): (a.text or "") for a in root.iter("AbstractText")}
            text = format_report(sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""))
            major = tuple((e.text or "").strip() for e in root.iter("major"))
            out.append(Report(uid, half_of(uid), text, major))
    return out


# --------------------------------------------------------------------------------------------
# MeSH -> observations (the documented judgement)
# --------------------------------------------------------------------------------------------

_BONE_SITES = {
    "ribs",
    "clavicle",
    "sternum",
    "humerus",
    "spine",
    "thoracic vertebrae",
    "lumbar vertebrae",
    "cervical vertebrae",
    "shoulder",
    "scapula",
}
_NON_LUNG_SITES = _BONE_SITES | {
    "adipose tissue",
    "breast",
    "mitral valve",
    "abdomen",
    "mediastinum",
    "paratracheal",
    "soft tissue",
    "neck",
}
_OPACITY_HEADINGS = {"Opacity", "Airspace Disease", "Infiltrate"}
_DEVICE_HEADINGS = {
    "Catheters, Indwelling",
    "Implanted Medical Device",
    "Medical Device",
    "Tube, Inserted",
    "Stents",
    "Pacemaker, Artificial",
    "Heart Valve Prosthesis",
    "Prostheses and Implants",
}
#: Coded for clips and sternotomy wires (not support devices) and for leads (support devices).
_MAYBE_DEVICE_HEADINGS = {
    "Surgical Instruments",
    "Sutures",
    "Foreign Bodies",
    "Spinal Fusion",
    "Breast Implants",
}


def parse_term(term: str) -> tuple[str, set[str]]:
    """``"Pleural Effusion/right/small"`` -> ``("Pleural Effusion", {"right", "small"})``."""
    parts = [p.strip() for p in term.split("/")]
    return parts[0], {p.lower() for p in parts[1:] if p}


def term_meaning(term: str) -> tuple[set[str], set[str]]:
    """(observations the term makes positive, observations it makes ambiguous)."""
    h, q = parse_term(term)
    pos: set[str] = set()
    amb: set[str] = set()
    lungish = not (q & _NON_LUNG_SITES)
    if h == "Cardiomegaly":
        (amb if "borderline" in q else pos).add("Cardiomegaly")
        amb.add("Enlarged Cardiomediastinum")
    elif h == "Cardiac Shadow":
        enlarged = "enlarged" in q and "borderline" not in q
        (pos if enlarged else amb).add("Cardiomegaly")
        amb.add("Enlarged Cardiomediastinum")
    elif h in ("Heart Atria", "Heart Ventricles"):
        # A named chamber enlargement may or may not come with an enlarged silhouette.
        if q & {"enlarged", "prominent", "dilated", "dilatation", "hypertrophy"}:
            amb.add("Cardiomegaly")
    elif h in ("Pericardial Effusion", "Heart Failure"):
        amb.add("Cardiomegaly")
        if h == "Heart Failure":
            amb.add("Edema")
    elif h == "Mediastinum":
        if "lymph nodes" in q:
            amb.add("Enlarged Cardiomediastinum")
        elif q & {"enlarged", "prominent", "widened"}:
            pos.add("Enlarged Cardiomediastinum")
    elif h in ("Aorta", "Aorta, Thoracic"):
        if q & {"enlarged", "prominent", "dilated", "dilatation"}:
            amb.add("Enlarged Cardiomediastinum")
    elif h == "Shift":
        amb.add("Enlarged Cardiomediastinum")
    elif h in _OPACITY_HEADINGS:
        (pos if lungish else amb).add("Lung Opacity")
        amb.update({"Consolidation", "Pneumonia"})
        if "round" in q:  # a nodular opacity may be a lesion
            amb.add("Lung Lesion")
    elif h == "Density":
        if "lung" in q and lungish:
            pos.add("Lung Opacity")
            amb.update({"Consolidation", "Pneumonia"})
        elif not q & _BONE_SITES and not q & {"adipose tissue", "mitral valve", "breast"}:
            amb.add("Lung Opacity")
        if q & {"pleura", "costophrenic angle"}:
            amb.update({"Pleural Effusion", "Pleural Other"})
        if "round" in q:
            amb.add("Lung Lesion")
    elif h == "Consolidation":
        pos.add("Consolidation")
        amb.update({"Pneumonia", "Lung Opacity"})
    elif h == "Pneumonia":
        pos.add("Pneumonia")
        amb.update({"Consolidation", "Lung Opacity"})
    elif h == "Pulmonary Atelectasis":
        pos.add("Atelectasis")
        amb.add("Lung Opacity")
    elif h == "Volume Loss":
        amb.add("Atelectasis")
    elif h == "Pulmonary Edema":
        pos.add("Edema")
        amb.add("Lung Opacity")
    elif h == "Pulmonary Congestion":
        amb.update({"Edema", "Lung Opacity"})
    elif (
        h in ("Markings", "Pulmonary Fibrosis", "Fibrosis", "Lung Diseases, Interstitial")
        or h == "Lung"
        and "interstitial" in q
    ):
        amb.add("Lung Opacity")
    elif h == "Thickening" or h == "Cicatrix":
        if "pleura" in q:
            pos.add("Pleural Other")
        else:
            amb.add("Lung Opacity")
    elif h == "Calcinosis":
        if "pleura" in q:
            pos.add("Pleural Other")
        elif "lung" in q:  # a calcified nodule or density: lesion? opacity?
            amb.update({"Lung Lesion", "Lung Opacity"})
    elif h in ("Nodule", "Mass"):
        if "pleura" in q:
            amb.update({"Lung Lesion", "Pleural Other"})
        elif "mediastinum" in q:
            amb.update({"Lung Lesion", "Enlarged Cardiomediastinum"})
        elif q & (_NON_LUNG_SITES - {"paratracheal"}):
            amb.add("Lung Lesion")
        else:
            pos.add("Lung Lesion")
        amb.add("Lung Opacity")
    elif h in (
        "Calcified Granuloma",
        "Granuloma",
        "Granulomatous Disease",
        "Nipple Shadow",
        "Cavitation",
    ):
        amb.update({"Lung Lesion", "Lung Opacity"})
    elif h in ("Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"):
        pos.add("Pneumothorax")
        if h != "Pneumothorax":
            pos.add("Pleural Effusion")
    elif h in ("Pleural Effusion", "Hemothorax", "Empyema"):
        pos.add("Pleural Effusion")
    elif h in ("Costophrenic Angle", "Pleura"):
        amb.update({"Pleural Effusion", "Pleural Other"})
    elif h == "Fractures, Bone":
        pos.add("Fracture")
    elif h == "Deformity" and q & _BONE_SITES:
        amb.add("Fracture")
    elif h in _DEVICE_HEADINGS:
        pos.add(SUPPORT_DEVICES)
    elif h in _MAYBE_DEVICE_HEADINGS:
        amb.add(SUPPORT_DEVICES)
    return pos, amb


def mesh_judgement(major: Sequence[str]) -> Judgement | None:
    """Gold state per observation (1 / 0 / None = excluded); None for an uncoded report."""
    terms = [t for t in major if t]
    if not terms or any(t.lower() == "no indexing" for t in terms):
        return None
    pos: set[str] = set()
    amb: set[str] = set()
    for term in terms:
        if term.lower() == "normal":
            continue
        p, a = term_meaning(term)
        pos |= p
        amb |= a
    out: Judgement = {}
    for name in OBSERVATIONS:
        if name == NO_FINDING:
            continue
        out[name] = 1 if name in pos else (None if name in amb else 0)
    if all(t.lower() == "normal" for t in terms):
        out[NO_FINDING] = 1
    elif pos - {SUPPORT_DEVICES}:
        out[NO_FINDING] = 0
    else:
        out[NO_FINDING] = None
    return out


# --------------------------------------------------------------------------------------------
# The naive baseline: keywords with a naive negation window
# --------------------------------------------------------------------------------------------

NAIVE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("widened mediastinum", "mediastinal widening"),
    "Cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged"),
    "Lung Opacity": ("opacity", "opacities", "infiltrate", "airspace disease"),
    "Lung Lesion": ("nodule", "mass"),
    "Edema": ("edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion",),
    "Pleural Other": ("pleural thickening",),
    "Fracture": ("fracture",),
    SUPPORT_DEVICES: ("catheter", "tube", "pacemaker", "line"),
}
NAIVE_NEGATIONS = {"no", "not", "without", "negative"}


class NaiveLabeler:
    """Keyword present and no negation word among the ``window`` words before it in the same
    sentence (0: anywhere before it in the sentence) -> positive (1); keyword only negated ->
    0; No Finding when nothing else is positive. No uncertainty, no unmentions, no lists."""

    name = "naive"

    def __init__(self, window: int = 0) -> None:
        self.window = window
        self.patterns = {
            name: re.compile(r"\b(?:" + "|".join(map(re.escape, kws)) + r")s?\b")
            for name, kws in NAIVE_KEYWORDS.items()
        }

    def label(self, text: str) -> dict[str, int | None]:
        out: dict[str, int | None] = {name: None for name in OBSERVATIONS}
        if not text.strip():
            return out
        for sentence in re.split(r"[.;\n]", text.lower()):
            for name, pattern in self.patterns.items():
                for m in pattern.finditer(sentence):
                    before = re.findall(r"[a-z]+", sentence[: m.start()])[-self.window :]
                    state = 0 if NAIVE_NEGATIONS & set(before) else 1
                    if out[name] is None or state > out[name]:
                        out[name] = state
        abnormal = any(out[n] == 1 for n in OBSERVATIONS if n not in (NO_FINDING, SUPPORT_DEVICES))
        out[NO_FINDING] = None if abnormal else 1
        return out

    def label_batch(self, texts: Sequence[str]) -> list[dict[str, int | None]]:
        return [self.label(t) for t in texts]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n: int = 0  # reports scored (not excluded)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else math.nan


def score(
    gold: Sequence[Judgement],
    predicted: Sequence[Mapping[str, int | None]],
    *,
    uncertain_positive: bool = False,
) -> dict[str, Counts]:
    """Per-observation counts of positive detection over the reports not excluded."""
    wanted = (1, -1) if uncertain_positive else (1,)
    out = {name: Counts() for name in OBSERVATIONS}
    for g, p in zip(gold, predicted, strict=True):
        for name in OBSERVATIONS:
            if g.get(name) is None:
                continue
            c = out[name]
            c.n += 1
            hit = p.get(name) in wanted
            if g[name] == 1 and hit:
                c.tp += 1
            elif g[name] == 1:
                c.fn += 1
            elif hit:
                c.fp += 1
    return out


def summary(counts: Mapping[str, Counts]) -> tuple[Counts, float]:
    """Micro (pooled counts) and macro F1 (mean over observations with a gold positive)."""
    micro = Counts()
    for c in counts.values():
        micro.tp, micro.fp, micro.fn, micro.n = (
            micro.tp + c.tp,
            micro.fp + c.fp,
            micro.fn + c.fn,
            micro.n + c.n,
        )
    f1s = [c.f1 for c in counts.values() if c.tp + c.fn > 0]
    return micro, (sum(f1s) / len(f1s) if f1s else math.nan)


def fmt(x: float) -> str:
    return "  nan" if math.isnan(x) else f"{x:.3f}"


def print_table(title: str, results: Mapping[str, Mapping[str, Counts]]) -> None:
    names = list(results)
    print(f"\n{title}")
    head = f"{'observation':28s} {'n':>5s} {'gold+':>5s}"
    for lab in names:
        head += f" | {lab + ' P':>9s} {'R':>5s} {'F1':>5s}"
    print(head)
    print("-" * len(head))
    first = results[names[0]]
    for obs in OBSERVATIONS:
        c0 = first[obs]
        row = f"{obs:28s} {c0.n:5d} {c0.tp + c0.fn:5d}"
        for lab in names:
            c = results[lab][obs]
            row += f" | {fmt(c.precision):>9s} {fmt(c.recall):>5s} {fmt(c.f1):>5s}"
        print(row)
    print("-" * len(head))
    for label in ("micro", "macro"):
        row = f"{label:28s} {'':5s} {'':5s}"
        for lab in names:
            micro, macro = summary(results[lab])
            if label == "micro":
                row += f" | {fmt(micro.precision):>9s} {fmt(micro.recall):>5s} {fmt(micro.f1):>5s}"
            else:
                row += f" | {'':>9s} {'':>5s} {fmt(macro):>5s}"
        print(row)


def show_errors(
    reports: Sequence[Report], gold: Sequence[Judgement], predicted: Sequence[Mapping], obs: str
) -> None:
    for r, g, p in zip(reports, gold, predicted, strict=True):
        if g.get(obs) is None:
            continue
        if (g[obs] == 1) != (p.get(obs) == 1):
            kind = "FN" if g[obs] == 1 else "FP"
            print(f"--- {kind} {r.uid} pred={p.get(obs)} mesh={list(r.major)}\n{r.text}")


def run(
    reports: Sequence[Report],
    labelers: Mapping[str, Callable[[str], Mapping[str, int | None]]],
    uncertain_positive: bool,
) -> tuple[list[Judgement], dict[str, list], dict[str, dict[str, Counts]]]:
    gold = [mesh_judgement(r.major) for r in reports]
    keep = [i for i, g in enumerate(gold) if g is not None and reports[i].text.strip()]
    gold_kept = [gold[i] for i in keep]  # type: ignore[misc]
    preds: dict[str, list] = {}
    results: dict[str, dict[str, Counts]] = {}
    for name, fn in labelers.items():
        preds[name] = [fn(reports[i].text) for i in keep]
        results[name] = score(gold_kept, preds[name], uncertain_positive=uncertain_positive)
    return gold_kept, preds, results  # type: ignore[return-value]


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tgz", type=Path, default=DEFAULT_TGZ, help="the Open-i reports archive")
    ap.add_argument(
        "--half",
        choices=("dev", "check", "both", "all"),
        default="both",
        help="which half to score (both: dev and check, printed separately)",
    )
    ap.add_argument(
        "--uncertain-positive",
        action="store_true",
        help="count uncertain (-1) predictions as positive",
    )
    ap.add_argument(
        "--differential",
        choices=DIFFERENTIAL_MODES,
        default=DIFFERENTIAL_MODES[0],
        help="how ours reads a finding named in a differential ('atelectasis versus "
        "infiltrate'): positive (as the MeSH coders code it; the labeler's default) or "
        "uncertain (CheXpert's convention)",
    )
    ap.add_argument(
        "--naive-window",
        type=int,
        default=0,
        metavar="N",
        help="naive baseline: negation words looked for among the N words before "
        "a keyword (0: the whole sentence before it)",
    )
    ap.add_argument(
        "--errors",
        metavar="OBSERVATION",
        help="print the dev-half reports where ours disagrees with MeSH on it",
    )
    args = ap.parse_args(list(argv) if argv is not None else None)

    from orapo.labeler import get_labeler

    t0 = time.perf_counter()
    reports = load_reports(args.tgz)
    rule = get_labeler("rule", differential=args.differential)
    labelers = {"ours": rule.label, "naive": NaiveLabeler(args.naive_window).label}
    halves = {"both": ("dev", "check"), "all": ("all",)}.get(args.half, (args.half,))
    n_uncoded = sum(1 for r in reports if mesh_judgement(r.major) is None)
    n_empty = sum(1 for r in reports if not r.text.strip())
    print(
        f"{len(reports)} reports from {args.tgz.name}; excluded: {n_uncoded} not indexed, "
        f"{n_empty} without text (loaded in {time.perf_counter() - t0:.1f} s)"
    )
    mode = "1 or -1" if args.uncertain_positive else "1 only"
    if args.differential != "positive":
        mode += f"; ours reads differentials as {args.differential}"
    for half in halves:
        subset = [r for r in reports if half in ("all", r.half)]
        gold, preds, results = run(subset, labelers, args.uncertain_positive)
        print_table(
            f"half={half}: {len(gold)} scored reports; predicted positive = {mode}", results
        )
        if args.errors:
            if half != "dev":
                print("(--errors is shown for the dev half only)", file=sys.stderr)
                continue
            kept = [r for r in subset if mesh_judgement(r.major) is not None and r.text.strip()]
            show_errors(kept, gold, preds["ours"], args.errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
