"""What one synthetic study *is*: its anatomy and its findings, and how they are drawn at random.

A :class:`StudySpec` is the ground truth of one synthetic study. :func:`render_image` draws it
(:mod:`orapo.synth.render`) and :func:`write_report` describes it (:mod:`orapo.synth.report`);
both read only the spec (and their own random generator), so an image and its report can be
made separately and in any order.

Finding names are the CheXpert observation names of :mod:`orapo.observations`. Sides are the
*patient's* sides: the patient's right is on the image's left, as on every chest radiograph.

The prevalences, co-occurrences, hedging rates, severities, locations and the ranges of benign
anatomical variation are data, in ``world.yaml`` beside this file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orapo.observations import NO_FINDING, OBSERVATIONS, SUPPORT_DEVICES, index

WORLD_FILE = Path(__file__).with_name("world.yaml")
#: World profiles by name -> world file beside this module. ``salient`` (the default, what the
#: main job trains on) draws definite findings strongly on a quieter patient; ``realistic`` is
#: the subtler world of ``world.yaml``. See docs/synth.md.
PROFILES: dict[str, str] = {"salient": "world_salient.yaml", "realistic": "world.yaml"}
DEFAULT_PROFILE = "salient"

#: Observations the world draws (every CheXpert observation except No Finding, which follows
#: from the report by CheXpert's rule).
SUPPORTED: tuple[str, ...] = tuple(name for name in OBSERVATIONS if name != NO_FINDING)
SEVERITIES: tuple[str, ...] = ("mild", "moderate", "severe")
SIDES: tuple[str, ...] = ("right", "left", "bilateral")
LOBES: tuple[str, ...] = (
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
    "left upper lobe",
    "left lower lobe",
)
ZONES: tuple[str, ...] = ("right base", "left base", "right midlung", "left midlung")
PLEURAL_SITES: tuple[str, ...] = ("apical", "lateral")
LESION_KINDS: tuple[str, ...] = ("nodule", "mass")
DEVICE_KINDS: tuple[str, ...] = ("pacemaker", "central line", "endotracheal tube", "enteric tube")
#: Venous access of a central line (its ``location``).
LINE_ROUTES: tuple[str, ...] = ("internal jugular", "subclavian")
# Findings that live in a lobe (Consolidation, Pneumonia, Lung Lesion) or a zone (Lung Opacity).
LOBE_FINDINGS: tuple[str, ...] = ("Consolidation", "Pneumonia", "Lung Lesion")


@dataclass(frozen=True)
class Finding:
    """One finding of a study.

    ``name`` is a CheXpert observation. ``hedged`` findings are drawn subtle and written with a
    hedge (label -1). ``severity`` is mild / moderate / severe. ``side`` is the patient's side
    (right / left / bilateral) where the finding has one; ``location`` a lobe
    (:data:`LOBES`), zone (:data:`ZONES`), pleural site (:data:`PLEURAL_SITES`) or central
    line route (:data:`LINE_ROUTES`); ``kind`` the lesion kind (nodule / mass) or device kind
    (:data:`DEVICE_KINDS`). A pacemaker's ``side`` is the side of its generator.
    """

    name: str
    hedged: bool = False
    severity: str = "moderate"
    side: str | None = None
    location: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.name not in SUPPORTED:
            raise ValueError(
                f"finding {self.name!r} is not drawn by the synthetic world; "
                f"supported: {', '.join(SUPPORTED)}"
            )
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"finding {self.name!r}: severity {self.severity!r} not in {SEVERITIES}"
            )
        if self.side is not None and self.side not in SIDES:
            raise ValueError(f"finding {self.name!r}: side {self.side!r} not in {SIDES}")
        valid_kinds = DEVICE_KINDS if self.name == SUPPORT_DEVICES else LESION_KINDS
        if self.kind is not None and self.kind not in valid_kinds:
            raise ValueError(f"finding {self.name!r}: kind {self.kind!r} not in {valid_kinds}")
        valid_locations = LOBES + ZONES + PLEURAL_SITES + LINE_ROUTES
        if self.location is not None and self.location not in valid_locations:
            raise ValueError(
                f"finding {self.name!r}: location {self.location!r} not in {valid_locations}"
            )


@dataclass(frozen=True)
class Anatomy:
    """Benign variation of one patient and exposure (ranges in ``world.yaml``).

    Lengths are fractions of the image side. ``rotation`` shifts the spine off the midline;
    ``tilt_deg`` tilts the whole image; ``gain``, ``offset`` and ``gamma`` map density to
    brightness; ``noise`` is the standard deviation of pixel noise (0 gives a clean image).
    """

    width: float = 1.0
    height: float = 1.0
    tilt_deg: float = 0.0
    shift: float = 0.0
    rotation: float = 0.0
    ctr: float = 0.44
    mediastinum: float = 0.062
    diaphragm: float = 0.65
    gastric_bubble: bool = True
    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    noise: float = 0.015


@dataclass(frozen=True)
class StudySpec:
    """The ground truth of one synthetic study: anatomy plus findings (canonical order)."""

    anatomy: Anatomy = field(default_factory=Anatomy)
    findings: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.findings if f.name != SUPPORT_DEVICES]
        if len(names) != len(set(names)):
            raise ValueError(f"a study has each finding at most once, got {names}")
        kinds = [f.kind for f in self.findings if f.name == SUPPORT_DEVICES]
        if len(kinds) != len(set(kinds)):
            raise ValueError(f"a study has each device kind at most once, got {kinds}")
        ordered = tuple(sorted(self.findings, key=_finding_order))
        object.__setattr__(self, "findings", ordered)

    @property
    def names(self) -> set[str]:
        return {f.name for f in self.findings}

    def get(self, name: str) -> Finding | None:
        """The (first) finding called ``name``, or None."""
        return next((f for f in self.findings if f.name == name), None)

    def with_findings(self, *findings: Finding) -> StudySpec:
        """A copy with ``findings`` added (replacing findings of the same name / device kind)."""
        keys = {_finding_key(f) for f in findings}
        kept = tuple(f for f in self.findings if _finding_key(f) not in keys)
        return replace(self, findings=kept + tuple(findings))

    def without(self, name: str) -> StudySpec:
        return replace(self, findings=tuple(f for f in self.findings if f.name != name))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the manifest's ``source["spec"]``)."""
        return {
            "anatomy": asdict(self.anatomy),
            "findings": [
                {k: v for k, v in asdict(f).items() if v is not None} for f in self.findings
            ],
        }

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> StudySpec:
        return StudySpec(
            anatomy=Anatomy(**obj.get("anatomy", {})),
            findings=tuple(Finding(**f) for f in obj.get("findings", [])),
        )


def _finding_key(f: Finding) -> tuple[str, str | None]:
    return (f.name, f.kind if f.name == SUPPORT_DEVICES else None)


def _finding_order(f: Finding) -> tuple[int, int]:
    kind_rank = DEVICE_KINDS.index(f.kind) if f.name == SUPPORT_DEVICES and f.kind else 0
    return (index(f.name), kind_rank)


# --------------------------------------------------------------------------------------------
# The world file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Validated contents of ``world.yaml`` (see the comments in that file)."""

    normal_fraction: float
    device_in_normal: float
    base: dict[str, float]
    links: list[tuple[str, dict[str, float]]]
    excludes: list[tuple[str, str]]
    hedged: dict[str, float]
    severity: dict[str, dict[str, float]]
    side: dict[str, dict[str, float]]
    bilateral_effusion_with_edema: float
    lobes: dict[str, float]
    zones: dict[str, float]
    pleural_other_sites: dict[str, float]
    lesion_kind: dict[str, float]
    device_kinds: dict[str, float]
    device_count: dict[int, float]
    pacemaker_side: dict[str, float]
    line_routes: dict[str, float]
    anatomy: dict[str, Any]


def _check_prob(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def _check_dist(obj: Any, valid: tuple, where: str) -> dict:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{where}: expected a mapping of choice -> weight")
    out = {}
    for key, weight in obj.items():
        if key not in valid:
            raise ValueError(f"{where}: {key!r} is not one of {', '.join(map(str, valid))}")
        out[key] = _check_prob(weight, f"{where}.{key}")
    if sum(out.values()) <= 0:
        raise ValueError(f"{where}: weights sum to zero")
    return out


def _check_names(obj: Any, where: str) -> dict[str, float]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a mapping of observation -> probability")
    for name in obj:
        if name not in SUPPORTED:
            raise ValueError(f"{where}: {name!r} is not one of {', '.join(SUPPORTED)}")
    return {name: _check_prob(p, f"{where}.{name}") for name, p in obj.items()}


def parse_world(raw: Mapping[str, Any], source: str = "world") -> World:
    """Validate a decoded world file; errors name ``source`` and the key."""
    try:
        base = _check_names(raw["base"], f"{source}: base")
        links = [
            (link["if"], _check_names(link["add"], f"{source}: links[{i}].add"))
            for i, link in enumerate(raw.get("links", []))
        ]
        for i, (name, _) in enumerate(links):
            if name not in SUPPORTED:
                raise ValueError(f"{source}: links[{i}].if: unknown observation {name!r}")
        excludes = [tuple(pair) for pair in raw.get("excludes", [])]
        for i, pair in enumerate(excludes):
            if len(pair) != 2 or any(n not in SUPPORTED for n in pair):
                raise ValueError(f"{source}: excludes[{i}]: expected two observation names")
        severity = {
            key: _check_dist(dist, SEVERITIES, f"{source}: severity.{key}")
            for key, dist in raw["severity"].items()
        }
        if "default" not in severity:
            raise ValueError(f"{source}: severity needs a 'default' entry")
        devices = raw["devices"]
        anatomy = dict(raw["anatomy"])
        unknown = set(anatomy) - set(Anatomy.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{source}: anatomy: unknown keys {sorted(unknown)}")
        return World(
            normal_fraction=_check_prob(raw["normal_fraction"], f"{source}: normal_fraction"),
            device_in_normal=_check_prob(raw["device_in_normal"], f"{source}: device_in_normal"),
            base=base,
            links=links,
            excludes=excludes,  # type: ignore[arg-type]
            hedged=_check_names(raw.get("hedged", {}), f"{source}: hedged"),
            severity=severity,
            side={
                name: _check_dist(dist, SIDES, f"{source}: side.{name}")
                for name, dist in _check_names_keys(raw["side"], f"{source}: side").items()
            },
            bilateral_effusion_with_edema=_check_prob(
                raw["bilateral_effusion_with_edema"], f"{source}: bilateral_effusion_with_edema"
            ),
            lobes=_check_dist(raw["lobes"], LOBES, f"{source}: lobes"),
            zones=_check_dist(raw["zones"], ZONES, f"{source}: zones"),
            pleural_other_sites=_check_dist(
                raw["pleural_other_sites"], PLEURAL_SITES, f"{source}: pleural_other_sites"
            ),
            lesion_kind=_check_dist(raw["lesion_kind"], LESION_KINDS, f"{source}: lesion_kind"),
            device_kinds=_check_dist(devices["kinds"], DEVICE_KINDS, f"{source}: devices.kinds"),
            device_count=_check_dist(devices["count"], (1, 2, 3, 4), f"{source}: devices.count"),
            pacemaker_side=_check_dist(
                devices["pacemaker_side"], ("right", "left"), f"{source}: devices.pacemaker_side"
            ),
            line_routes=_check_dist(
                devices["line_routes"], LINE_ROUTES, f"{source}: devices.line_routes"
            ),
            anatomy=anatomy,
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing key {err.args[0]!r}") from None


def _check_names_keys(obj: Any, where: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a mapping keyed by observation")
    for name in obj:
        if name not in SUPPORTED:
            raise ValueError(f"{where}: {name!r} is not one of {', '.join(SUPPORTED)}")
    return obj


def _read_world(file: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A world file's mapping, with ``extends: OTHER.yaml`` resolved (top-level keys replace)."""
    if file in seen:
        raise ValueError(f"{file}: 'extends' loops back to itself")
    with file.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a YAML mapping at the top level")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base_file = file.with_name(str(parent))
    if not base_file.is_file():
        raise ValueError(f"{file}: extends {parent!r}, which is not a file beside it")
    return {**_read_world(base_file, (*seen, file)), **raw}


def profile_path(profile: str) -> Path:
    """The world file of a named profile (:data:`PROFILES`)."""
    if profile not in PROFILES:
        raise ValueError(
            f"unknown world profile {profile!r}; valid profiles are: {', '.join(PROFILES)}"
        )
    return WORLD_FILE.with_name(PROFILES[profile])


@lru_cache(maxsize=8)
def load_world(path: str | None = None) -> World:
    """Load and validate a world file (default: the realistic ``world.yaml`` beside this module).

    A world file may start from another with ``extends: OTHER.yaml`` (a file beside it).
    """
    file = Path(path) if path else WORLD_FILE
    return parse_world(_read_world(file), str(file))


def load_profile(profile: str = DEFAULT_PROFILE) -> World:
    """The world of a named profile (``salient`` or ``realistic``)."""
    return load_world(str(profile_path(profile)))


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, dist: Mapping[Any, float]) -> Any:
    keys = list(dist)
    weights = np.asarray([dist[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=weights / weights.sum()))]


def sample_anatomy(rng: np.random.Generator, world: World | None = None) -> Anatomy:
    """Draw benign anatomical and exposure variation uniformly from the world's ranges."""
    world = world or load_profile()
    values: dict[str, Any] = {}
    for name, spec in world.anatomy.items():
        if isinstance(spec, list):
            lo, hi = spec
            values[name] = round(float(rng.uniform(lo, hi)), 5)  # as stored in manifests
        else:
            values[name] = bool(rng.random() < float(spec))
    return Anatomy(**values)


def _sample_finding(
    rng: np.random.Generator, name: str, world: World, present: set[str]
) -> Finding:
    hedged = bool(rng.random() < world.hedged.get(name, 0.0))
    severity = (
        "mild" if hedged else _choice(rng, world.severity.get(name, world.severity["default"]))
    )
    side = location = kind = None
    if name in world.side:
        side = _choice(rng, world.side[name])
        edema = name == "Pleural Effusion" and "Edema" in present
        if edema and rng.random() < world.bilateral_effusion_with_edema:
            side = "bilateral"
    if name in LOBE_FINDINGS:
        location = _choice(rng, world.lobes)
        side = location.split()[0]
    if name == "Lung Opacity":
        location = _choice(rng, world.zones)
        side = location.split()[0]
    if name == "Pleural Other":
        location = _choice(rng, world.pleural_other_sites)
    if name == "Lung Lesion":
        kind = _choice(rng, world.lesion_kind)
    return Finding(name, hedged=hedged, severity=severity, side=side, location=location, kind=kind)


def _sample_devices(rng: np.random.Generator, world: World) -> list[Finding]:
    count = min(int(_choice(rng, world.device_count)), len(world.device_kinds))
    kinds: list[str] = []
    while len(kinds) < count:
        kind = _choice(rng, world.device_kinds)
        if kind not in kinds:
            kinds.append(kind)
    out = []
    for kind in kinds:
        side = location = None
        if kind == "pacemaker":
            side = _choice(rng, world.pacemaker_side)
        elif kind == "central line":
            location = _choice(rng, world.line_routes)
        out.append(Finding(SUPPORT_DEVICES, side=side, location=location, kind=kind))
    return out


def sample_findings(rng: np.random.Generator, world: World | None = None) -> tuple[Finding, ...]:
    """Draw the findings of one study following the world's prevalence and co-occurrence."""
    world = world or load_profile()
    if rng.random() < world.normal_fraction:
        if rng.random() < world.device_in_normal:
            return tuple(_sample_devices(rng, world))
        return ()
    while True:
        present: set[str] = set()
        findings: list[Finding] = []
        for name, base in world.base.items():
            if any(a in present and b == name for a, b in world.excludes):
                continue
            p = base + sum(add.get(name, 0.0) for cond, add in world.links if cond in present)
            if rng.random() >= min(p, 1.0):
                continue
            present.add(name)
            if name == SUPPORT_DEVICES:
                findings.extend(_sample_devices(rng, world))
            else:
                findings.append(_sample_finding(rng, name, world, present))
        if present - {SUPPORT_DEVICES}:
            return tuple(findings)


def sample_spec(rng: np.random.Generator, world: World | None = None) -> StudySpec:
    """Draw one study: anatomy, then findings (see ``world.yaml``).

    >>> spec = sample_spec(np.random.default_rng(0))
    >>> isinstance(spec, StudySpec)
    True
    """
    world = world or load_profile()
    anatomy = sample_anatomy(rng, world)
    return StudySpec(anatomy=anatomy, findings=sample_findings(rng, world))
