"""Write the FINDINGS and IMPRESSION of a synthetic study, and its gold labels.

The writer picks sentence templates from ``phrases.yaml`` (the vocabulary is data). Every
template says which observations it states and in which state, so the gold labels are read
off what was *written*, never off the spec directly:

1. each written sentence carries a small label dict (``{"Pneumothorax": 0}``);
2. the report's labels aggregate them per observation, positive (1) over uncertain (-1) over
   negative (0), as the CheXpert labeler does; observations never written stay not mentioned;
3. No Finding follows by :func:`orapo.observations.apply_no_finding_rule`.

What the writer does (the full semantics are in ``docs/synth.md``): each finding of the spec
is written once in FINDINGS (hedged findings with a hedge, label -1), the most important ones
again in IMPRESSION (same state); absent observations may be stated as pertinent negatives
(label 0), alone or several in one sentence; the rest is not mentioned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orapo.observations import (
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
    LabelDict,
    apply_no_finding_rule,
    unknown_observation_message,
)
from orapo.synth.spec import DEVICE_KINDS, SEVERITIES, SUPPORTED, Finding, StudySpec

PHRASES_FILE = Path(__file__).with_name("phrases.yaml")

#: The state a plain template of each pool asserts for its own observation.
POOL_STATES: dict[str, int] = {
    "positive": POSITIVE,
    "uncertain": UNCERTAIN,
    "negative": NEGATIVE,
    "impression_positive": POSITIVE,
    "impression_uncertain": UNCERTAIN,
}
HEART = ("Cardiomegaly", "Enlarged Cardiomediastinum")
LUNGS = ("Pneumonia", "Consolidation", "Lung Opacity", "Edema", "Lung Lesion", "Atelectasis")
PLEURA = ("Pleural Effusion", "Pneumothorax", "Pleural Other")
BONES = ("Fracture",)
_ZONE_IN = {
    "right base": "at the right lung base",
    "left base": "at the left lung base",
    "right midlung": "in the right midlung",
    "left midlung": "in the left midlung",
}
_ZONE_ADJ = {
    "right base": "right basilar",
    "left base": "left basilar",
    "right midlung": "right midlung",
    "left midlung": "left midlung",
}
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


@dataclass(frozen=True)
class Template:
    """One sentence template: its text, the labels it asserts, and when it may not be used."""

    text: str
    labels: dict[str, int] | None = None  # None: {own observation: pool state}
    unless: tuple[str, ...] = ()


@dataclass(frozen=True)
class Written:
    """One written sentence (or a short group of sentences) and the labels it states."""

    text: str
    labels: dict[str, int]


@dataclass(frozen=True)
class PhraseBook:
    """Validated contents of ``phrases.yaml``."""

    severity_words: dict[str, dict[str, str]]
    severity_adverbs: dict[str, str]
    observations: dict[str, dict[str, tuple[Template, ...]]]
    devices: dict[str, tuple[Template, ...]]
    negative_combos: tuple[Template, ...]
    impression_combos: tuple[Template, ...]
    normal: dict[str, tuple[Template, ...]]
    writer: dict[str, Any]

    def templates(self) -> Iterable[tuple[str, str, Template]]:
        """Every template as (where, pool, template), for checks and documentation."""
        for name, pools in self.observations.items():
            for pool, items in pools.items():
                for t in items:
                    yield name, pool, t
        for kind, items in self.devices.items():
            for t in items:
                yield f"devices.{kind}", "positive", t
        for t in self.negative_combos:
            yield "negative_combos", "negative", t
        for t in self.impression_combos:
            yield "impression_combos", "impression_positive", t
        for key, items in self.normal.items():
            for t in items:
                yield f"normal.{key}", "normal", t


# --------------------------------------------------------------------------------------------
# Loading and checking the phrase book
# --------------------------------------------------------------------------------------------


def _check_labels(obj: Any, where: str) -> dict[str, int]:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{where}: 'labels' must be a non-empty mapping observation -> state")
    out = {}
    for name, state in obj.items():
        if name == NO_FINDING:
            if state != POSITIVE:
                raise ValueError(f"{where}: No Finding can only be stated positive (1)")
        elif name not in SUPPORTED:
            raise ValueError(f"{where}: {unknown_observation_message(name)}")
        if state not in (POSITIVE, NEGATIVE, UNCERTAIN):
            raise ValueError(f"{where}: state of {name!r} must be 1, 0 or -1, got {state!r}")
        out[name] = int(state)
    return out


def _template(obj: Any, where: str) -> Template:
    if isinstance(obj, str):
        return Template(obj)
    if not isinstance(obj, dict) or "text" not in obj:
        raise ValueError(f"{where}: expected a string or a mapping with 'text'")
    unknown = set(obj) - {"text", "labels", "unless"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    labels = _check_labels(obj["labels"], where) if "labels" in obj else None
    unless = tuple(obj.get("unless", ()))
    for name in unless:
        if name not in SUPPORTED:
            raise ValueError(f"{where}: unless: {unknown_observation_message(name)}")
    return Template(str(obj["text"]), labels, unless)


def _templates(items: Any, where: str) -> tuple[Template, ...]:
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of templates")
    return tuple(_template(t, f"{where}[{i}]") for i, t in enumerate(items))


def _sample_context() -> dict[str, str]:
    """A context with every placeholder, to check templates at load time."""
    return context(Finding("Pleural Effusion", side="bilateral", location="right base"), None)


def parse_phrases(raw: Mapping[str, Any], source: str = "phrases") -> PhraseBook:
    """Validate a decoded phrase file; errors name ``source`` and the template."""
    try:
        observations: dict[str, dict[str, tuple[Template, ...]]] = {}
        for name, pools in raw["observations"].items():
            if name not in SUPPORTED or name == SUPPORT_DEVICES:
                raise ValueError(f"{source}: observations: {name!r} is not a drawn finding")
            missing = set(POOL_STATES) - set(pools)
            if missing:
                raise ValueError(f"{source}: observations.{name}: missing pools {sorted(missing)}")
            observations[name] = {
                pool: _templates(pools[pool], f"{source}: observations.{name}.{pool}")
                for pool in POOL_STATES
            }
            for pool in ("positive", "uncertain", "impression_positive", "impression_uncertain"):
                if not observations[name][pool]:
                    raise ValueError(f"{source}: observations.{name}.{pool} is empty")
        absent = set(SUPPORTED) - set(observations) - {SUPPORT_DEVICES}
        if absent:
            raise ValueError(f"{source}: observations: no templates for {sorted(absent)}")
        devices = {
            kind: _templates(raw["devices"][kind], f"{source}: devices.{kind}")
            for kind in DEVICE_KINDS
        }
        book = PhraseBook(
            severity_words={
                key: {s: str(words[s]) for s in SEVERITIES}
                for key, words in raw["severity_words"].items()
            },
            severity_adverbs={s: str(raw["severity_adverbs"][s]) for s in SEVERITIES},
            observations=observations,
            devices=devices,
            negative_combos=_templates(raw["negative_combos"], f"{source}: negative_combos"),
            impression_combos=_templates(raw["impression_combos"], f"{source}: impression_combos"),
            normal={
                key: _templates(raw["normal"][key], f"{source}: normal.{key}")
                for key in ("lungs_clear", "bones", "impression")
            },
            writer=dict(raw["writer"]),
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing key {err.args[0]!r}") from None
    for t in book.negative_combos + book.impression_combos:
        if t.labels is None:
            raise ValueError(f"{source}: combo {t.text!r} needs 'labels'")
    ctx = _sample_context()
    for where, pool, t in book.templates():
        try:
            t.text.format(**ctx)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"{source}: {where}.{pool}: bad placeholder in {t.text!r}: {err}"
            ) from None
    for where, pool, t in book.templates():
        if pool in ("negative", "normal"):
            try:
                t.text.format()
            except (KeyError, IndexError) as err:
                raise ValueError(
                    f"{source}: {where}: negatives and normal sentences take no placeholders, "
                    f"got {t.text!r} ({err})"
                ) from None
    for key in ("negate", "style_factor", "styles", "impression_order"):
        if key not in book.writer:
            raise ValueError(f"{source}: writer: missing key {key!r}")
    for name in list(book.writer["negate"]) + list(book.writer["impression_order"]):
        if name not in SUPPORTED:
            raise ValueError(f"{source}: writer: {unknown_observation_message(name)}")
    return book


@lru_cache(maxsize=8)
def load_phrases(path: str | None = None) -> PhraseBook:
    """Load and validate a phrase file (default: ``phrases.yaml`` beside this module)."""
    file = Path(path) if path else PHRASES_FILE
    with file.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a YAML mapping at the top level")
    return parse_phrases(raw, str(file))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def context(finding: Finding, book: PhraseBook | None) -> dict[str, str]:
    """Placeholder values for one finding (see the header of ``phrases.yaml``)."""
    words = (book.severity_words if book else {}).get(finding.name) or (
        book.severity_words["default"] if book else {s: s for s in SEVERITIES}
    )
    adverbs = book.severity_adverbs if book else {s: s + "ly" for s in SEVERITIES}
    side = finding.side or ""
    both = side == "bilateral"
    zone = finding.location if finding.location in _ZONE_IN else "right base"
    ctx = {
        "side": side,
        "degree": words[finding.severity],
        "degree_ly": adverbs[finding.severity],
        "lobe": finding.location or "",
        "zone_in": _ZONE_IN[zone],
        "zone_adj": _ZONE_ADJ[zone],
        "base": {"right": "right base", "left": "left base"}.get(side, "lung bases"),
        "basilar": {"right": "right basilar", "left": "left basilar"}.get(side, "bibasilar"),
        "effusions": "pleural effusions" if both else "pleural effusion",
        "is_a": "are" if both else "is a",
        "a_": "" if both else "a ",
        "s": "s" if both else "",
        "apical": "apical " if finding.severity == "mild" or finding.hedged else "",
        "site": finding.location or "",
        "lesion": finding.kind or "nodule",
        "lesion_desc": {"mass": "lobulated"}.get(finding.kind or "", "rounded"),
        "route": finding.location or "",
    }
    ctx.update({k.capitalize(): v[:1].upper() + v[1:] for k, v in ctx.items()})
    return ctx


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


def _usable(templates: Sequence[Template], asserted: set[str]) -> list[Template]:
    return [t for t in templates if not set(t.unless) & asserted]


def _pick(rng: np.random.Generator, templates: Sequence[Template]) -> Template:
    return templates[int(rng.integers(len(templates)))]


def _write(template: Template, own: str, pool: str, ctx: Mapping[str, str]) -> Written:
    labels = template.labels if template.labels is not None else {own: POOL_STATES[pool]}
    return Written(_sentence(template.text.format(**ctx)), dict(labels))


def _plain(template: Template) -> Written:
    """A sentence without placeholders; it states only its explicit labels (often none)."""
    return Written(_sentence(template.text), dict(template.labels or {}))


def _choice(rng: np.random.Generator, dist: Mapping[str, float]) -> str:
    keys = list(dist)
    p = np.asarray([dist[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def aggregate_labels(mentions: Iterable[Mapping[str, int]]) -> LabelDict:
    """Per-sentence label dicts -> report labels (1 over -1 over 0), with No Finding's rule."""
    out: dict[str, int] = {}
    for labels in mentions:
        for name, state in labels.items():
            if name not in out or _RANK[state] > _RANK[out[name]]:
                out[name] = state
    return apply_no_finding_rule(out)


def _negatives(
    names: list[str], book: PhraseBook, rng: np.random.Generator, asserted: set[str]
) -> list[Written]:
    """Pertinent negatives for ``names``, several per sentence where a combo fits."""
    todo = list(names)
    out: list[Written] = []
    combine = float(book.writer.get("combine_negatives", 0.0))
    while todo:
        fits = [
            t
            for t in _usable(book.negative_combos, asserted)
            if t.labels and set(t.labels) <= set(todo)
        ]
        if fits and rng.random() < combine:
            t = _pick(rng, fits)
            out.append(_plain(t))
            todo = [n for n in todo if n not in (t.labels or {})]
            continue
        name = todo.pop(0)
        pool = _usable(book.observations[name]["negative"], asserted)
        if pool:
            out.append(_write(_pick(rng, pool), name, "negative", {}))
    return out


def write_report_sentences(
    spec: StudySpec, rng: np.random.Generator, phrases: PhraseBook | None = None
) -> tuple[list[Written], list[Written]]:
    """The FINDINGS and IMPRESSION sentences of ``spec``, each with the labels it states."""
    book = phrases or load_phrases()
    w = book.writer
    style = _choice(rng, w["styles"])
    factor = float(w["style_factor"][style])
    present = {f.name: f for f in spec.findings if f.name != SUPPORT_DEVICES}
    devices = [f for f in spec.findings if f.name == SUPPORT_DEVICES]

    # Positive and hedged sentences first: they decide what is asserted.
    stated: dict[str, Written] = {}
    for name in HEART + LUNGS + PLEURA + BONES:
        if name in present:
            f = present[name]
            pool = "uncertain" if f.hedged else "positive"
            t = _pick(rng, book.observations[name][pool])
            stated[name] = _write(t, name, pool, context(f, book))
    device_lines = [
        _write(_pick(rng, book.devices[d.kind]), SUPPORT_DEVICES, "positive", context(d, book))
        for d in devices
    ]
    asserted = {n for s in list(stated.values()) + device_lines for n in s.labels}

    # Pertinent negatives for some of the absent observations.
    negate = []
    for name, p in w["negate"].items():
        if name not in present and name not in asserted and rng.random() < min(1.0, p * factor):
            negate.append(name)
    heart_neg = _negatives([n for n in negate if n in HEART], book, rng, asserted)
    other_neg = _negatives([n for n in negate if n not in HEART + BONES], book, rng, asserted)
    bone_neg = _negatives([n for n in negate if n in BONES], book, rng, asserted)

    heart = [stated[n] for n in HEART if n in stated] + heart_neg
    lungs = [stated[n] for n in LUNGS if n in stated]
    clear = _usable(book.normal["lungs_clear"], asserted | set(present))
    if clear and rng.random() < min(1.0, float(w["lungs_clear"]) * factor):
        lungs.append(_plain(_pick(rng, clear)))
    pleura = [stated[n] for n in PLEURA if n in stated] + other_neg
    bones = [stated[n] for n in BONES if n in stated] + bone_neg
    if not bones and rng.random() < min(1.0, float(w["bones_normal"]) * factor):
        bones.append(_plain(_pick(rng, book.normal["bones"])))
    chest = heart + lungs + pleura if rng.random() < 0.7 else lungs + pleura + heart
    findings = device_lines + chest + bones if rng.random() < 0.6 else chest + device_lines + bones

    impression = _impression(spec, present, book, rng, asserted)
    return findings, impression


def _impression(
    spec: StudySpec,
    present: dict[str, Finding],
    book: PhraseBook,
    rng: np.random.Generator,
    asserted: set[str],
) -> list[Written]:
    w = book.writer
    order = [n for n in w["impression_order"] if n in present]
    items: list[Written] = []
    combo: Written | None = None
    if rng.random() < float(w.get("impression_combo", 0.0)):
        definite = {n for n in order if not present[n].hedged}
        fits = [t for t in book.impression_combos if t.labels and set(t.labels) <= definite]
        if fits:
            t = _pick(rng, fits)
            last = list(t.labels or {})[-1]
            combo = Written(_sentence(t.text.format(**context(present[last], book))), t.labels)
            used = set(t.labels or {})
            first = min(order.index(n) for n in used)
            order = [n for n in order if n not in used]
            order.insert(first, "__combo__")
    for name in order[: int(w["impression_max_items"])]:
        if name == "__combo__" and combo is not None:
            items.append(combo)
            continue
        f = present[name]
        pool = "impression_uncertain" if f.hedged else "impression_positive"
        items.append(
            _write(_pick(rng, book.observations[name][pool]), name, pool, context(f, book))
        )
    if not items:
        items.append(_plain(_pick(rng, book.normal["impression"])))
    risky = "Fracture" in present or any(
        f.name == SUPPORT_DEVICES and f.kind == "central line" for f in spec.findings
    )
    if (
        risky
        and "Pneumothorax" not in present
        and "Pneumothorax" not in asserted
        and rng.random() < float(w.get("impression_ptx_negative", 0.0))
    ):
        items.extend(_negatives(["Pneumothorax"], book, rng, asserted))
    if len(items) >= 2 and rng.random() < float(w.get("numbered_impression", 0.0)):
        items = [Written(f"{i}. {s.text}", s.labels) for i, s in enumerate(items, start=1)]
    return items


def write_report(
    spec: StudySpec, rng: np.random.Generator, phrases: PhraseBook | None = None
) -> tuple[str, str, LabelDict]:
    """Write ``spec`` as a report: ``(findings, impression, labels)``.

    ``labels`` has all 14 observations (None = not mentioned), read off the written
    sentences (see the module docstring); the same spec and rng state give the same report.
    """
    findings, impression = write_report_sentences(spec, rng, phrases)
    labels = aggregate_labels(s.labels for s in findings + impression)
    return (
        " ".join(s.text for s in findings),
        " ".join(s.text for s in impression),
        labels,
    )
