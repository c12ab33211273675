"""Draw a :class:`~orapo.synth.spec.StudySpec` as a frontal chest radiograph (numpy only).

The picture is built as a *density* map (bright = dense, as on film) from analytic shapes
evaluated on the pixel grid, then mapped to brightness with the study's exposure and noise:

1. body coordinates ``(u, v)``: ``u`` across (0 = midline, negative = image left = patient's
   right), ``v`` down (0 = top); patient size, tilt and position are an affine map of the grid;
2. anatomy: soft tissue, lungs (air; vessel markings from the hila), mediastinum and heart,
   trachea, diaphragm domes and gastric bubble, posterior ribs, clavicles, spine;
3. findings: each one adds a *fill* inside the lungs (fluid or tissue replacing air), changes
   the anatomy (heart width, mediastinum, diaphragm) or adds its own marks (pleural line,
   broken rib, metal of devices). Where each finding is drawn is listed in ``docs/synth.md``.

Every length is a fraction of the image side, so any ``size`` draws the same picture.
Randomness (texture, exact positions, noise) comes from ``rng``, split into independent
streams per part: adding a finding to a spec leaves everything else in the image unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from orapo.observations import SUPPORT_DEVICES, index
from orapo.synth.spec import DEVICE_KINDS, Anatomy, Finding, StudySpec

#: Bumped whenever a change alters the pixels drawn for a given spec and seed.
RENDER_VERSION = 1

# (d, v) centres: d = distance from the midline towards the patient's side, v = down.
LOBE_CENTERS: dict[str, tuple[float, float]] = {
    "right upper lobe": (0.20, 0.24),
    "right middle lobe": (0.15, 0.48),
    "right lower lobe": (0.23, 0.57),
    "left upper lobe": (0.21, 0.27),
    "left lower lobe": (0.27, 0.58),
}
ZONE_CENTERS: dict[str, tuple[float, float]] = {
    "right base": (0.22, 0.57),
    "left base": (0.27, 0.58),
    "right midlung": (0.21, 0.40),
    "left midlung": (0.24, 0.40),
}
_SEVERITY_INDEX = {"mild": 0, "moderate": 1, "severe": 2}

# Densities (before exposure): soft tissue, lung air, and the extra brightness of parts.
SOFT_TISSUE = 0.48
LUNG_AIR = 0.34
MEDIASTINUM = 0.07
VESSELS = 0.10
RIBS = 0.085
CLAVICLE = 0.13
SPINE = 0.05
METAL = 0.55
LMAX = 0.37  # half-width of the lung fields (lateral wall) at the bases
APEX = 0.09  # level of the lung apices
HILUM = (0.11, 0.40)


def ramp(x: np.ndarray, eps: float) -> np.ndarray:
    """Soft step: 0 for ``x < -eps/2``, 1 for ``x > eps/2``, linear between (antialiasing)."""
    return np.clip(x / eps + 0.5, 0.0, 1.0)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in image coordinates: X, Y of shape (size, size) in (0, 1)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c)


@lru_cache(maxsize=16)
def _upsample_matrix(size: int, res: int) -> np.ndarray:
    """(size, res) bilinear interpolation matrix from a res-grid to a size-grid."""
    pos = (np.arange(size) + 0.5) / size * res - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, res - 1)
    hi = np.clip(lo + 1, 0, res - 1)
    w = np.clip(pos - lo, 0.0, 1.0)
    m = np.zeros((size, res), dtype=np.float32)
    m[np.arange(size), lo] += 1 - w
    m[np.arange(size), hi] += w
    return m


def smooth_noise(rng: np.random.Generator, size: int, res: int) -> np.ndarray:
    """Unit-variance-ish noise varying on a res x res scale, upsampled to (size, size)."""
    m = _upsample_matrix(size, res)
    return m @ rng.standard_normal((res, res)).astype(np.float32) @ m.T


@dataclass
class Frame:
    """Body coordinates of every pixel and the affine map back to pixels."""

    size: int
    u: np.ndarray  # (H, W) across; negative = patient's right (image left)
    v: np.ndarray  # (H, W) down
    d: np.ndarray  # (H, W) |u|: distance from the midline
    right: np.ndarray  # (H, W) bool: patient's right half
    anatomy: Anatomy
    eps: float
    hilar_r: np.ndarray  # (H, W) distance to the hilum of the pixel's side
    hilar_phi: np.ndarray  # (H, W) angle from that hilum, 0 = lateral, positive = down
    hilar_falloff: np.ndarray  # (H, W) exp(-hilar_r / 0.35)

    @staticmethod
    def build(anatomy: Anatomy, size: int) -> Frame:
        x, y = _grid(size)
        c, s = math.cos(math.radians(anatomy.tilt_deg)), math.sin(math.radians(anatomy.tilt_deg))
        x1, y1 = x - 0.5 - anatomy.shift, y - 0.5
        u = (c * x1 + s * y1) / anatomy.width
        v = (-s * x1 + c * y1) / anatomy.height + 0.5
        d = np.abs(u)
        dd, dv = d - np.float32(HILUM[0]), v - np.float32(HILUM[1])
        r = np.hypot(dd, dv)
        return Frame(
            size, u, v, d, u < 0, anatomy, 1.0 / size, r, np.arctan2(dv, dd), np.exp(-r / 0.35)
        )

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates of points -> (column, row) pixel coordinates (floats)."""
        a = self.anatomy
        c, s = math.cos(math.radians(a.tilt_deg)), math.sin(math.radians(a.tilt_deg))
        x2, y2 = u * a.width, (v - 0.5) * a.height
        x = 0.5 + a.shift + c * x2 - s * y2
        y = 0.5 + s * x2 + c * y2
        return x * self.size - 0.5, y * self.size - 0.5

    def by_side(self, right: float, left: float) -> np.ndarray:
        """(H, W) float32: ``right`` on the patient's right half, ``left`` on the left."""
        return np.where(self.right, np.float32(right), np.float32(left))

    def side(self, side: str | None) -> np.ndarray:
        """1.0 on the patient's ``side`` (right / left), everywhere for bilateral or None."""
        if side == "right":
            return self.right.astype(np.float32)
        if side == "left":
            return (~self.right).astype(np.float32)
        return np.ones_like(self.u)


@dataclass
class Geometry:
    """Anatomical lines of one study after the findings that move them (per pixel arrays)."""

    lateral: np.ndarray  # lateral lung wall, as distance from the midline, at each pixel's v
    top: np.ndarray  # apical boundary v at each pixel's d
    medial: np.ndarray  # mediastinal border (distance from midline) at each v
    diaphragm: np.ndarray  # diaphragm v at each pixel's d (side-specific dome)
    dome_right: float
    dome_left: float
    heart_base: float  # the left dome before any volume loss: where the heart sits
    ctr: float


def _lateral(v: np.ndarray, lmax: np.ndarray | float) -> np.ndarray:
    return lmax * (0.55 + 0.45 * np.sqrt(np.clip((v - 0.07) / 0.45, 0.0, 1.0)))


def _diaphragm(d: np.ndarray, dome: np.ndarray | float, lmax: np.ndarray | float) -> np.ndarray:
    d0 = 0.17
    medial = dome + 0.03 * np.square(np.clip((d0 - d) / d0, 0.0, 1.0))
    lateral = dome + 0.12 * np.power(np.clip((d - d0) / (lmax - d0), 0.0, 1.5), 1.7)
    return np.where(d < d0, medial, lateral)


def build_geometry(f: Frame, spec: StudySpec, rng_of) -> Geometry:
    a = f.anatomy
    ctr = a.ctr
    widen = 0.0
    lift = {"right": 0.0, "left": 0.0}
    for finding in spec.findings:
        k = _SEVERITY_INDEX[finding.severity]
        if finding.name == "Cardiomegaly":
            ctr = 0.52 if finding.hedged else (0.56, 0.62, 0.68)[k]
            ctr += float(rng_of(finding).uniform(-0.01, 0.01))
        elif finding.name == "Enlarged Cardiomediastinum":
            widen = 0.025 if finding.hedged else (0.04, 0.055, 0.075)[k]
        elif finding.name == "Atelectasis":
            up = 0.012 if finding.hedged else (0.022, 0.035, 0.045)[k]
            for s in ("right", "left") if finding.side == "bilateral" else (finding.side,):
                lift[s] = up
    dome_r = a.diaphragm - lift["right"]
    dome_l = a.diaphragm + 0.025 - lift["left"]
    asym = 1.0 + 1.5 * a.rotation
    lmax = f.by_side(LMAX * asym, LMAX / asym)
    dome = f.by_side(dome_r, dome_l)
    v = f.v
    window = np.exp(-np.square((v - 0.3) / 0.11))
    knob = np.where(f.right, 0.0, 0.022 * np.exp(-np.square((v - 0.27) / 0.035)))
    medial = np.where(v < 0.5, a.mediastinum + knob + widen * window, 0.045)
    return Geometry(
        lateral=_lateral(v, lmax),
        top=APEX + 1.2 * np.square(f.d - 0.16),
        medial=medial,
        diaphragm=_diaphragm(f.d, dome, lmax),
        dome_right=dome_r,
        dome_left=dome_l,
        heart_base=a.diaphragm + 0.025,
        ctr=ctr,
    )


def _segment_distance(f: Frame, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    """Distance (body units) from every pixel to the segment p-q (p, q as (u, v))."""
    pu, pv = p
    du, dv = q[0] - pu, q[1] - pv
    t = np.clip(((f.u - pu) * du + (f.v - pv) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(f.u - pu - t * du, f.v - pv - t * dv)


def _segment_band(
    f: Frame, p: tuple[float, float], q: tuple[float, float], half_width: float
) -> np.ndarray:
    """(H, W) antialiased band of ``half_width`` around the segment p-q (body coordinates).

    Same values as ``ramp(half_width - _segment_distance(f, p, q), f.eps)``, but evaluated
    only inside the segment's bounding box (plus a margin), which is much cheaper.
    """
    out = np.zeros_like(f.u)
    x, y = f.to_pixels(np.array([p[0], q[0]]), np.array([p[1], q[1]]))
    margin = half_width * f.size * max(f.anatomy.width, f.anatomy.height) + 2
    c0, c1 = max(0, int(x.min() - margin)), min(f.size, int(x.max() + margin) + 2)
    r0, r1 = max(0, int(y.min() - margin)), min(f.size, int(y.max() + margin) + 2)
    if c0 >= c1 or r0 >= r1:
        return out
    u, v = f.u[r0:r1, c0:c1], f.v[r0:r1, c0:c1]
    du, dv = q[0] - p[0], q[1] - p[1]
    t = np.clip(((u - p[0]) * du + (v - p[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    dist = np.hypot(u - p[0] - t * du, v - p[1] - t * dv)
    out[r0:r1, c0:c1] = ramp(half_width - dist, f.eps)
    return out


def _bezier(points: list[tuple[float, float]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """A cubic Bezier (4 control points) sampled at n points: (u, v) arrays."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p = np.asarray(points, dtype=np.float64)
    curve = (
        (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]
    )
    return curve[:, 0], curve[:, 1]


def _splat(layer: np.ndarray, f: Frame, u: np.ndarray, v: np.ndarray, value: float) -> None:
    """Draw a thin antialiased curve through body points (u, v) into ``layer`` (max blend)."""
    x, y = f.to_pixels(u, v)
    # Resample so consecutive points are at most half a pixel apart.
    step = np.hypot(np.diff(x), np.diff(y))
    n = max(2, int(step.sum() * 2) + 2)
    s = np.concatenate([[0.0], np.cumsum(step)])
    t = np.linspace(0.0, s[-1], n)
    x, y = np.interp(t, s, x), np.interp(t, s, y)
    radius = max(0, round(f.size / 112 * 0.5 - 0.25))
    size = layer.shape[0]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for oy in range(-radius, radius + 2):
        for ox in range(-radius, radius + 2):
            wx = np.where(ox <= 0, 1.0 - fx, fx) if radius == 0 else np.ones_like(fx)
            wy = np.where(oy <= 0, 1.0 - fy, fy) if radius == 0 else np.ones_like(fy)
            if radius == 0 and (ox not in (0, 1) or oy not in (0, 1)):
                continue
            xx, yy = x0 + ox, y0 + oy
            ok = (xx >= 0) & (xx < size) & (yy >= 0) & (yy < size)
            np.maximum.at(layer, (yy[ok], xx[ok]), (value * wx * wy)[ok])


def _blob(
    f: Frame, center: tuple[float, float], radii: tuple[float, float], side: str
) -> np.ndarray:
    """Normalised elliptical radius (0 at the centre, 1 on the edge) of a blob on ``side``."""
    d0, v0 = center
    u0 = -d0 if side == "right" else d0
    return np.sqrt(np.square((f.u - u0) / radii[0]) + np.square((f.v - v0) / radii[1]))


# --------------------------------------------------------------------------------------------
# Findings inside the lungs: each returns a fill in [0, 1] (share of air replaced)
# --------------------------------------------------------------------------------------------


def _effusion(f: Frame, g: Geometry, finding: Finding, rng) -> np.ndarray:
    k = _SEVERITY_INDEX[finding.severity]
    h = 0.03 if finding.hedged else (0.06, 0.13, 0.24)[k]
    h *= float(rng.uniform(0.9, 1.1))
    level = f.by_side(g.dome_right, g.dome_left) + 0.04
    t = np.clip((f.d - 0.05) / (LMAX - 0.05), 0.0, 1.0)
    surface = level - h * (0.6 + 0.8 * t * t)  # meniscus: fluid climbs the lateral wall
    fill = 0.95 * np.clip((f.v - surface) / (0.012 + 0.15 * h), 0.0, 1.0)
    return fill * f.side(finding.side)


def _consolidation(f: Frame, finding: Finding, rng) -> np.ndarray:
    k = _SEVERITY_INDEX[finding.severity]
    r = 0.06 if finding.hedged else (0.08, 0.1, 0.125)[k]
    d0, v0 = LOBE_CENTERS[finding.location]
    center = (d0 + float(rng.uniform(-0.02, 0.02)), v0 + float(rng.uniform(-0.02, 0.02)))
    rr = _blob(f, center, (r * 1.15, r * 0.9), finding.side)
    edge = 0.25 * smooth_noise(rng, f.size, 7)
    dense = 0.45 if finding.hedged else 0.88
    return dense * np.clip((1.0 - rr + edge) / 0.25, 0.0, 1.0)


def _pneumonia(f: Frame, finding: Finding, rng) -> np.ndarray:
    """Patchy, mottled, multifocal consolidation in one lobe (unlike the smooth dense patch)."""
    d0, v0 = LOBE_CENTERS[finding.location]
    mottle = np.clip(0.7 + 0.4 * smooth_noise(rng, f.size, 22), 0.3, 1.0)
    fill = np.zeros_like(f.u)
    k = _SEVERITY_INDEX[finding.severity]
    for _ in range(4):
        r = float(rng.uniform(0.05, 0.07)) * (1.0, 1.15, 1.3)[k]
        c = (d0 + float(rng.uniform(-0.06, 0.06)), v0 + float(rng.uniform(-0.05, 0.05)))
        fill = np.maximum(
            fill, np.clip((1.0 - _blob(f, c, (r, r * 0.85), finding.side)) / 0.3, 0, 1)
        )
    dense = 0.6 if finding.hedged else 0.95
    return dense * fill * mottle


def _opacity(f: Frame, finding: Finding, rng) -> np.ndarray:
    """Ill-defined hazy opacity (soft Gaussian edge)."""
    d0, v0 = ZONE_CENTERS[finding.location]
    r = float(rng.uniform(0.09, 0.12))
    center = (d0 + float(rng.uniform(-0.02, 0.02)), v0 + float(rng.uniform(-0.02, 0.02)))
    rr = _blob(f, center, (r, r * 0.85), finding.side)
    a = 0.4 if finding.hedged else 0.62
    texture = np.clip(0.8 + 0.3 * smooth_noise(rng, f.size, 10), 0.4, 1.2)
    return np.clip(a * np.exp(-1.6 * rr * rr) * texture, 0.0, 1.0)


def _edema(f: Frame, finding: Finding) -> np.ndarray:
    """Bilateral perihilar ("bat wing") haze."""
    k = _SEVERITY_INDEX[finding.severity]
    a = 0.3 if finding.hedged else (0.45, 0.6, 0.75)[k]
    return a * np.exp(-np.square((f.d - 0.15) / 0.17) - np.square((f.v - 0.43) / 0.19))


def _lesion(f: Frame, finding: Finding, rng) -> np.ndarray:
    d0, v0 = LOBE_CENTERS[finding.location]
    center = (d0 + float(rng.uniform(-0.03, 0.03)), v0 + float(rng.uniform(-0.03, 0.03)))
    if finding.kind == "mass":
        r = 0.045 if finding.hedged else float(rng.uniform(0.06, 0.075))
        edge = 0.08 * smooth_noise(rng, f.size, 8)
    else:
        r = 0.02 if finding.hedged else float(rng.uniform(0.026, 0.032))
        edge = 0.0
    rr = _blob(f, center, (r, r), finding.side)
    return np.clip((1.0 - rr + edge) * r / f.eps + 0.5, 0.0, 1.0) * (
        0.75 if finding.hedged else 1.0
    )


def _atelectasis(f: Frame, g: Geometry, finding: Finding, rng) -> np.ndarray:
    """Plate-like band above the (raised) diaphragm."""
    k = _SEVERITY_INDEX[finding.severity]
    half = 0.06 if finding.hedged else (0.075, 0.09, 0.105)[k]
    thick = 0.012 if finding.hedged else (0.018, 0.026, 0.032)[k]
    fill = np.zeros_like(f.u)
    for side in ("right", "left") if finding.side == "bilateral" else (finding.side,):
        dome = g.dome_right if side == "right" else g.dome_left
        sign = -1.0 if side == "right" else 1.0
        c = (sign * float(rng.uniform(0.25, 0.27)), dome - float(rng.uniform(0.03, 0.06)))
        ang = math.radians(float(rng.uniform(-14, 6)) * sign)
        p = (c[0] - half * math.cos(ang), c[1] - half * math.sin(ang))
        q = (c[0] + half * math.cos(ang), c[1] + half * math.sin(ang))
        fill = np.maximum(fill, _segment_band(f, p, q, thick / 2))
    return (0.55 if finding.hedged else 0.92) * fill


def _pleural_distance(f: Frame, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Distance inwards from the lateral wall and down from the apical boundary."""
    return g.lateral - f.d, f.v - g.top


def _pleural_thickening(f: Frame, g: Geometry, finding: Finding) -> np.ndarray:
    k = _SEVERITY_INDEX[finding.severity]
    t = 0.02 if finding.hedged else (0.03, 0.038, 0.046)[k]
    lateral, apical = _pleural_distance(f, g)
    if finding.location == "apical":
        band = ramp(t - apical, f.eps) * np.clip((0.24 - f.v) / 0.05, 0.0, 1.0)
    else:
        taper = np.clip((f.v - 0.24) / 0.06, 0.0, 1.0) * np.clip((0.6 - f.v) / 0.06, 0.0, 1.0)
        band = ramp(t * taper - lateral, f.eps) * (taper > 0.05)
    return 0.9 * band * f.side(finding.side)


def _pneumothorax(f: Frame, g: Geometry, finding: Finding) -> tuple[np.ndarray, np.ndarray]:
    """(air region without lung markings, visceral pleural line) on one side."""
    k = _SEVERITY_INDEX[finding.severity]
    gap = 0.022 if finding.hedged else (0.045, 0.08, 0.12)[k]
    extent = 0.3 if finding.hedged else (0.36, 0.52, 0.7)[k]
    lateral, apical = _pleural_distance(f, g)
    dist = np.minimum(lateral, apical * 1.2)
    taper = np.sqrt(np.clip((extent - f.v) / 0.12, 0.0, 1.0))
    width = gap * taper
    side = f.side(finding.side)
    region = ramp(width - dist, f.eps) * (width > 0) * side
    line = ramp(0.006 - np.abs(dist - width), f.eps) * (taper > 0.15) * side
    return region, line


# --------------------------------------------------------------------------------------------
# Bones and devices
# --------------------------------------------------------------------------------------------


def _ribs(f: Frame, g: Geometry, fracture: Finding | None, rng) -> np.ndarray:
    """Posterior ribs: arcs sloping down laterally, 10 per side; a fracture steps one off."""
    spacing = 0.071
    thick = 0.024
    d = f.d
    curve = 1.5 * d * d - 0.3 * d
    inside = ramp(d - g.medial + 0.01, f.eps) * ramp(g.lateral + 0.045 - d, f.eps)

    def band(shift: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        phase = (f.v - shift - curve - 0.1) / spacing
        k = np.floor(phase)
        dist = np.abs(phase - k - 0.5) * spacing
        return ramp(thick / 2 - dist, f.eps) * ((k >= 0) & (k < 10)), k

    ribs, k = band(0.0)
    if fracture is not None:
        rib = int(rng.integers(4, 7))
        at = float(rng.uniform(0.2, 0.25))
        step = 0.012 if fracture.hedged else 0.03
        gap = 0.012 if fracture.hedged else 0.03
        side = f.side(fracture.side) > 0
        beyond = side & (k == rib) & (d > at - gap / 2)
        ribs = np.where(beyond, 0.0, ribs)
        moved, k2 = band(step + 0.35 * np.clip(d - at, 0.0, None))
        keep = side & (k2 == rib) & (d > at + gap / 2)
        ribs = np.where(keep, moved, ribs)
    return ribs * inside


def _clavicles(f: Frame) -> np.ndarray:
    out = np.zeros_like(f.u)
    for sign in (-1.0, 1.0):
        p, q = (sign * 0.04, 0.19), (sign * 0.33, 0.115)
        out = np.maximum(out, _segment_band(f, p, q, 0.013))
    return out


def _devices(f: Frame, g: Geometry, devices: list[Finding], rng_of) -> np.ndarray:
    """Metal layer: pacemaker generator and leads, catheters and tubes (thin bright lines)."""
    layer = np.zeros_like(f.u)
    for dev in devices:
        rng = rng_of(dev)
        if dev.kind == "pacemaker":
            sign = -1.0 if dev.side == "right" else 1.0
            gu, gv = sign * float(rng.uniform(0.24, 0.29)), float(rng.uniform(0.15, 0.19))
            box = np.power(np.abs(f.u - gu) / 0.045, 4) + np.power(np.abs(f.v - gv) / 0.03, 4)
            layer = np.maximum(layer, ramp(1.0 - box, 0.3))
            start = (gu - sign * 0.03, gv + 0.01)
            ra = (-0.07, g.dome_right - 0.13)
            rv = (0.1 + 0.1 * (g.ctr - 0.45), g.dome_left - 0.04)
            for end in (ra, rv):
                u, v = _bezier([start, (sign * 0.06, 0.2), (-0.03, 0.36), end], 64)
                _splat(layer, f, u, v, 1.0)
        elif dev.kind == "central line":
            if dev.location != "subclavian":  # right internal jugular
                pts = [(-0.11, 0.0), (-0.09, 0.12), (-0.04, 0.2), (-0.035, 0.36)]
            else:  # right subclavian
                pts = [(-0.34, 0.17), (-0.2, 0.15), (-0.06, 0.2), (-0.035, 0.37)]
            u, v = _bezier(pts, 48)
            _splat(layer, f, u, v, 1.0)
        elif dev.kind == "endotracheal tube":
            tip = float(rng.uniform(0.22, 0.28))
            for off in (-0.009, 0.009):
                u, v = _bezier([(off, 0.0), (off, tip / 3), (off, 2 * tip / 3), (off, tip)], 16)
                _splat(layer, f, u, v, 1.0)
        elif dev.kind == "enteric tube":
            low = g.dome_left + 0.02
            u, v = _bezier([(0.01, 0.0), (0.02, 0.4), (0.03, low), (0.12, low + 0.06)], 48)
            _splat(layer, f, u, v, 0.9)
            u, v = _bezier(
                [(0.12, low + 0.06), (0.17, low + 0.09), (0.21, low + 0.1), (0.24, low + 0.16)], 24
            )
            _splat(layer, f, u, v, 0.9)
        else:  # pragma: no cover - Finding validates kinds
            raise ValueError(f"unknown device kind {dev.kind!r}; valid: {DEVICE_KINDS}")
    return layer


_PHI_BINS, _R_BINS, _R_MAX = 256, 24, 0.5


@lru_cache(maxsize=1)
def _branch_kernel() -> np.ndarray:
    """(A, R) one vessel branch along angle 0 of the polar table, tapering with distance."""
    phi = np.linspace(-np.pi, np.pi, _PHI_BINS, endpoint=False, dtype=np.float32)[:, None]
    r = np.linspace(0.0, _R_MAX, _R_BINS, dtype=np.float32)[None, :]
    sigma = 0.004 + 0.01 * np.exp(-r / 0.08)
    decay = np.exp(-r / 0.2) * (1.0 - np.exp(-r / 0.04))
    branch = (np.cos(phi) > 0) * np.exp(-0.5 * np.square(r * np.sin(phi) / sigma))
    return np.fft.ifftshift(branch * decay, axes=0).astype(np.float32)  # angle 0 at row 0


@lru_cache(maxsize=1)
def _branch_spectrum() -> np.ndarray:
    """(A // 2 + 1, R) Fourier transform of the branch kernel along the angle axis."""
    return np.fft.rfft(_branch_kernel(), axis=0)


def _vessels(f: Frame, rng: np.random.Generator) -> np.ndarray:
    """Vessel markings: 9 tapering branches fanning out of each hilum.

    The branches are drawn in polar coordinates around each hilum on a small
    (side, angle, radius) table (each branch a rotated copy of one kernel: a circular
    convolution along the angle, done by FFT), then looked up
    per pixel (bilinear), which is far cheaper than evaluating every branch at every pixel.
    """
    spectrum = _branch_spectrum()
    table = np.empty((2, _PHI_BINS, _R_BINS), dtype=np.float32)
    for side in range(2):
        # Branch directions and weights as spikes on the angle axis, convolved with the kernel.
        spikes = np.zeros(_PHI_BINS, dtype=np.float32)
        shifts = np.round(rng.uniform(-1.5, 1.6, size=9) / (2 * np.pi) * _PHI_BINS).astype(int)
        np.add.at(spikes, shifts % _PHI_BINS, rng.uniform(0.5, 1.0, size=9))
        table[side] = np.fft.irfft(np.fft.rfft(spikes)[:, None] * spectrum, n=_PHI_BINS, axis=0)
    # Per-pixel polar coordinates (mirrored so angle 0 points laterally on both sides).
    ai = np.minimum((f.hilar_phi / np.float32(2 * np.pi) % 1.0) * _PHI_BINS, _PHI_BINS - 1e-3)
    ri = np.minimum(f.hilar_r / _R_MAX * (_R_BINS - 1), _R_BINS - 1.001)
    a0, r0 = ai.astype(np.int32), ri.astype(np.int32)
    wa, wr = ai - a0.astype(np.float32), ri - r0.astype(np.float32)
    base = np.where(f.right, 0, _PHI_BINS * _R_BINS) + a0 * _R_BINS + r0
    flat = table.ravel()
    a1 = np.where(a0 + 1 < _PHI_BINS, _R_BINS, -(_PHI_BINS - 1) * _R_BINS)
    top = flat[base] * (1 - wr) + flat[base + 1] * wr
    bottom = flat[base + a1] * (1 - wr) + flat[base + a1 + 1] * wr
    return top * (1 - wa) + bottom * wa


# --------------------------------------------------------------------------------------------
# The whole picture
# --------------------------------------------------------------------------------------------


def _streams(rng: np.random.Generator):
    """Independent generators keyed by part, so adding a finding changes nothing else."""
    root = int(rng.integers(0, 2**62))

    def stream(key: int) -> np.random.Generator:
        return np.random.default_rng([root, key])

    def of(finding: Finding) -> np.random.Generator:
        kind = DEVICE_KINDS.index(finding.kind) if finding.name == SUPPORT_DEVICES else 0
        return stream(100 + 10 * index(finding.name) + kind)

    return stream, of


def render_density(spec: StudySpec, size: int, rng: np.random.Generator) -> np.ndarray:
    """The density map (H, W) float32, before exposure and noise (bright = dense)."""
    stream, rng_of = _streams(rng)
    f = Frame.build(spec.anatomy, size)
    g = build_geometry(f, spec, rng_of)
    u, v, d, eps = f.u, f.v, f.d, f.eps
    a = spec.anatomy

    # Body outline: neck widening into shoulders.
    half_width = 0.09 + 0.38 * np.clip((v - 0.02) / 0.13, 0.0, 1.0) ** 0.7
    body = ramp(half_width - d, 2 * eps)
    lung = (
        ramp(d - g.medial, eps)
        * ramp(g.lateral - d, eps)
        * ramp(v - g.top, eps)
        * ramp(g.diaphragm - v, eps)
    )

    # Heart: an ellipse sitting on the left dome, two fifths right of the midline.
    width = g.ctr * 2 * LMAX
    a_right, a_left = 0.38 * width, 0.62 * width
    b = 0.2 + 0.3 * (g.ctr - 0.45)
    vc = g.heart_base - 0.02
    ue = np.where(u < 0, u / a_right, u / a_left)
    heart = ramp((1.0 - np.sqrt(ue * ue + np.square((v - vc) / b))) * a_left, eps)
    below = ramp(g.heart_base + 0.02 - v, 2 * eps)
    central = np.maximum(heart, ramp(g.medial - d, eps) * (v < 0.55)) * below

    # Fills inside the lungs (1 - prod(1 - f)) and the marks findings add.
    keep = 1.0 - heart
    keep *= 1.0 - 0.45 * np.exp(
        -(np.square((d - HILUM[0]) / 0.035) + np.square((v - HILUM[1]) / 0.05))
    )
    vessel_gain = np.ones_like(u)
    no_markings = np.zeros_like(u)
    extra = np.zeros_like(u)
    fracture = None
    devices: list[Finding] = []
    for finding in spec.findings:
        name = finding.name
        r = rng_of(finding)
        if name == "Pleural Effusion":
            keep *= 1.0 - _effusion(f, g, finding, r)
        elif name == "Consolidation":
            keep *= 1.0 - _consolidation(f, finding, r)
        elif name == "Pneumonia":
            keep *= 1.0 - _pneumonia(f, finding, r)
        elif name == "Lung Opacity":
            keep *= 1.0 - _opacity(f, finding, r)
        elif name == "Edema":
            haze = _edema(f, finding)
            keep *= 1.0 - haze
            vessel_gain += 2.5 * haze
        elif name == "Lung Lesion":
            fill = _lesion(f, finding, r)
            keep *= 1.0 - fill
            extra += 0.05 * fill
        elif name == "Atelectasis":
            keep *= 1.0 - _atelectasis(f, g, finding, r)
        elif name == "Pleural Other":
            keep *= 1.0 - _pleural_thickening(f, g, finding)
        elif name == "Pneumothorax":
            region, line = _pneumothorax(f, g, finding)
            no_markings = np.maximum(no_markings, region)
            extra += 0.2 * line * lung
        elif name == "Fracture":
            fracture = finding
        elif name == SUPPORT_DEVICES:
            devices.append(finding)
        # Cardiomegaly and Enlarged Cardiomediastinum act through the geometry.

    # Vessel markings: branches fanning out of each hilum, plus fine mottle.
    tex = stream(0)
    vessels = _vessels(f, tex) + 0.25 * smooth_noise(tex, size, 28) * f.hilar_falloff
    air = lung * keep
    markings = air * (1.0 - no_markings)

    density = SOFT_TISSUE * body
    abdomen = ramp(v - g.diaphragm, 2 * eps)
    density += MEDIASTINUM * np.maximum(central, abdomen) * body
    density -= LUNG_AIR * air + 0.09 * no_markings * lung
    density += VESSELS * markings * vessels * vessel_gain
    density += extra

    # Air in the trachea and main bronchi; gastric bubble under the left dome.
    trachea = ramp(0.017 - d, eps) * ramp(0.33 - v, eps)
    for sign in (-1.0, 1.0):
        trachea = np.maximum(trachea, _segment_band(f, (0.0, 0.33), (sign * 0.07, 0.42), 0.011))
    density -= 0.09 * trachea * (1.0 - heart)
    if a.gastric_bubble:
        bubble = _blob(f, (0.17, g.dome_left + 0.055), (0.05, 0.03), "left")
        density -= 0.16 * ramp(1.0 - bubble, 0.15) * (v > g.dome_left + 0.035)

    # Bones.
    over = (0.2 + 0.8 * lung * (1.0 - heart)) * ramp(g.diaphragm + 0.03 - v, 4 * eps)
    density += RIBS * _ribs(f, g, fracture, stream(1)) * body * over
    density += CLAVICLE * _clavicles(f) * body
    spine = ramp(0.032 - np.abs(u - a.rotation), eps)
    plates = 0.6 + 0.4 * (np.cos(2 * np.pi * v / 0.055) > -0.6)
    density += SPINE * spine * plates * body

    # Metal.
    if devices:
        density += METAL * _devices(f, g, devices, rng_of)
    return density.astype(np.float32)


def render_image(
    spec: StudySpec, size: int = 112, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draw ``spec`` as a (size, size) uint8 grayscale radiograph.

    ``rng`` supplies texture, exact positions and noise (default: a fixed generator, so the
    same spec always gives the same picture). Same spec + same rng state -> same pixels.
    """
    if size < 32:
        raise ValueError(f"image size must be at least 32 pixels, got {size}")
    rng = rng if rng is not None else np.random.default_rng(0)
    noise_rng = np.random.default_rng(int(rng.integers(0, 2**62)))
    density = render_density(spec, size, rng)
    a = spec.anatomy
    img = np.clip((density - 0.02) / 0.72 * a.gain + a.offset, 0.0, 1.0) ** a.gamma
    if a.noise > 0:
        img = img + noise_rng.normal(0.0, a.noise, size=img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
