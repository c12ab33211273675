"""The synthetic world: determinism, visible signatures, report labels, manifest, CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from orapo.manifest import read_manifest
from orapo.observations import NO_FINDING, OBSERVATIONS, SUPPORT_DEVICES
from orapo.synth import (
    SUPPORTED,
    Anatomy,
    Finding,
    StudySpec,
    aggregate_labels,
    generate,
    make_study,
    render_image,
    sample_spec,
    split_counts,
    study_rngs,
    write_report,
    write_report_sentences,
)
from orapo.synth.render import Frame, build_geometry
from orapo.synth.report import load_phrases, parse_phrases
from orapo.synth.spec import load_world, parse_world

# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_same_bytes_and_workers_do_not_matter(tmp_path):
    a = generate(tmp_path / "a", 14, seed=5, progress=False)
    b = generate(tmp_path / "b", 14, seed=5, progress=False, workers=2)
    fa, fb = _files(a.parent), _files(b.parent)
    assert fa.keys() == fb.keys()
    assert "manifest.jsonl" in fa and "contact_sheet.png" in fa
    assert sum(k.startswith("images/") for k in fa) == 14
    for key in fa:
        assert fa[key] == fb[key], key


def test_different_seed_differs_and_reports_do_not_depend_on_images(tmp_path):
    a = generate(tmp_path / "a", 10, seed=1, progress=False, contact_sheet=False)
    b = generate(tmp_path / "b", 10, seed=2, progress=False, contact_sheet=False)
    c = generate(tmp_path / "c", 10, seed=1, progress=False, write_images=False)
    assert a.read_bytes() != b.read_bytes()
    assert (a.parent / "images/synth-000000.png").read_bytes() != (
        b.parent / "images/synth-000000.png"
    ).read_bytes()
    assert a.read_bytes() == c.read_bytes()
    assert not (c.parent / "images").exists()


def test_existing_dataset_needs_overwrite(tmp_path):
    generate(tmp_path, 3, progress=False, contact_sheet=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(tmp_path, 3, progress=False)
    (tmp_path / "images" / "stale.png").write_bytes(b"x")
    generate(tmp_path, 2, progress=False, overwrite=True, contact_sheet=False)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "synth-000000.png",
        "synth-000001.png",
    ]


def test_split_counts_worked_values():
    assert split_counts(1000) == {"train": 700, "val": 100, "test": 200}
    assert split_counts(30, (0.5, 0.25, 0.25)) == {"train": 14, "val": 8, "test": 8}
    assert split_counts(1, (0.0, 0.0, 1.0)) == {"train": 0, "val": 0, "test": 1}
    with pytest.raises(ValueError, match="3 fractions"):
        split_counts(10, (0.5, 0.5))


# --------------------------------------------------------------------------------------------
# Every finding changes the image where it should
# --------------------------------------------------------------------------------------------

BASE = StudySpec(anatomy=Anatomy(noise=0.0))
FRAME = Frame.build(BASE.anatomy, 112)
u_grid, v_grid, d_grid = FRAME.u, FRAME.v, FRAME.d  # body coordinates of each pixel


def _img(spec: StudySpec) -> np.ndarray:
    return render_image(spec, 112, np.random.default_rng(0)).astype(float)


BASE_IMG = _img(BASE)


def _region(side, d0, d1, v0, v1):
    m = (d_grid >= d0) & (d_grid < d1) & (v_grid >= v0) & (v_grid < v1)
    return m & (u_grid < 0) if side == "right" else m & (u_grid > 0) if side == "left" else m


def _diff(*findings: Finding) -> np.ndarray:
    return _img(BASE.with_findings(*findings)) - BASE_IMG


def _bright_width(img: np.ndarray, v: float, dmax: float) -> int:
    row = np.abs(v_grid - v) < 0.5 / 112
    return int((img[row & (d_grid < dmax)] > 120).sum())


def _check_cardiomegaly():
    big = _img(BASE.with_findings(Finding("Cardiomegaly", severity="mild")))
    assert _bright_width(big, 0.6, 0.33) >= _bright_width(BASE_IMG, 0.6, 0.33) + 6


def _check_mediastinum():
    wide = _img(BASE.with_findings(Finding("Enlarged Cardiomediastinum", severity="mild")))
    assert _bright_width(wide, 0.3, 0.3) >= _bright_width(BASE_IMG, 0.3, 0.3) + 5
    # Only the upper mediastinum widens: the heart row is unchanged.
    assert _bright_width(wide, 0.6, 0.33) == _bright_width(BASE_IMG, 0.6, 0.33)


def _check_effusion():
    for hedged in (False, True):
        diff = _diff(Finding("Pleural Effusion", hedged=hedged, severity="mild", side="right"))
        assert diff[_region("right", 0.25, 0.36, 0.62, 0.74)].mean() > 25  # costophrenic angle
        assert np.all(diff[u_grid > 0.01] == 0)  # left side untouched
        assert diff[_region("right", 0.1, 0.3, 0.15, 0.45)].max() == 0  # upper lung clear


def _check_pneumothorax():
    g = build_geometry(FRAME, BASE, lambda f: np.random.default_rng(0))
    inward = g.lateral - d_grid
    for severity in ("mild", "severe"):
        diff = _diff(Finding("Pneumothorax", severity=severity, side="right"))
        rim = (u_grid < 0) & (v_grid > 0.14) & (v_grid < 0.28) & (inward > 0.005) & (inward < 0.03)
        assert diff[rim].mean() < -15  # dark, no lung markings, next to the chest wall
        assert diff.max() > 20  # the bright visceral pleural line
        assert np.all(diff[u_grid > 0.01] == 0)
    small = _diff(Finding("Pneumothorax", severity="mild", side="right"))
    assert np.all(small[v_grid > 0.5] == 0)  # a small one stays apical


def _check_consolidation():
    spot = _region("right", 0.2, 0.26, 0.54, 0.6)
    dense = _diff(Finding("Consolidation", location="right lower lobe", side="right"))
    faint = _diff(Finding("Consolidation", hedged=True, location="right lower lobe", side="right"))
    assert dense[spot].mean() > 60
    assert 20 < faint[spot].mean() < dense[spot].mean()
    assert np.all(dense[_region("right", 0.0, 0.4, 0.0, 0.35)] == 0)  # upper lobe untouched


def _check_pneumonia():
    spot = _region("left", 0.14, 0.28, 0.2, 0.34)
    diff = _diff(Finding("Pneumonia", location="left upper lobe", side="left"))
    assert diff[spot].mean() > 25
    assert np.all(diff[u_grid < -0.01] == 0)
    # Patchy: more varied inside the patch than a consolidation of the same lobe.
    cons = _diff(Finding("Consolidation", location="left upper lobe", side="left"))
    inside = spot & (diff > 5) & (cons > 5)
    assert diff[inside].std() > cons[inside].std()


def _check_opacity():
    diff = _diff(Finding("Lung Opacity", location="right base", side="right"))
    assert diff[_region("right", 0.17, 0.27, 0.52, 0.62)].mean() > 25
    assert np.all(diff[u_grid > 0.01] == 0)


def _check_edema():
    diff = _diff(Finding("Edema", severity="mild", side="bilateral"))
    for side in ("right", "left"):
        assert diff[_region(side, 0.12, 0.22, 0.35, 0.5)].mean() > 25  # perihilar, both sides


def _check_lesion():
    nodule = _diff(Finding("Lung Lesion", location="right upper lobe", side="right", kind="nodule"))
    mass = _diff(Finding("Lung Lesion", location="right upper lobe", side="right", kind="mass"))
    spot = _region("right", 0.13, 0.27, 0.17, 0.31)
    assert nodule[spot].max() > 80
    assert 5 < (nodule > 40).sum() < (mass > 40).sum()


def _check_atelectasis():
    diff = _diff(Finding("Atelectasis", severity="mild", side="left"))
    assert diff[_region("left", 0.17, 0.36, 0.55, 0.68)].max() > 60
    assert np.all(diff[u_grid < -0.01] == 0)


def _check_fracture():
    diff = _diff(Finding("Fracture", side="right"))
    changed = diff != 0
    assert changed.sum() > 5
    assert np.all(u_grid[changed] < 0) and np.all(
        d_grid[changed] > 0.15
    )  # lateral, right side only


def _check_devices():
    for kind, where in [
        ("pacemaker", _region("left", 0.15, 0.4, 0.1, 0.25)),
        ("endotracheal tube", _region(None, 0.0, 0.03, 0.02, 0.2)),
        ("central line", _region("right", 0.0, 0.15, 0.15, 0.35)),
        ("enteric tube", _region(None, 0.0, 0.06, 0.45, 0.6)),
    ]:
        diff = _diff(Finding(SUPPORT_DEVICES, kind=kind, side="left", location="internal jugular"))
        assert diff[where].max() > 40, kind


def _check_pleural_other():
    g = build_geometry(FRAME, BASE, lambda f: np.random.default_rng(0))
    inward = g.lateral - d_grid
    lateral = _diff(Finding("Pleural Other", side="right", location="lateral"))
    band = (u_grid < 0) & (v_grid > 0.3) & (v_grid < 0.55) & (inward > 0) & (inward < 0.02)
    assert lateral[band].mean() > 30
    apical = _diff(Finding("Pleural Other", side="left", location="apical"))
    assert apical[_region("left", 0.05, 0.4, 0.05, 0.25)].max() > 60
    assert np.all(apical[v_grid > 0.3] == 0)


SIGNATURES = {
    "Cardiomegaly": _check_cardiomegaly,
    "Enlarged Cardiomediastinum": _check_mediastinum,
    "Pleural Effusion": _check_effusion,
    "Pneumothorax": _check_pneumothorax,
    "Consolidation": _check_consolidation,
    "Pneumonia": _check_pneumonia,
    "Lung Opacity": _check_opacity,
    "Edema": _check_edema,
    "Lung Lesion": _check_lesion,
    "Atelectasis": _check_atelectasis,
    "Fracture": _check_fracture,
    SUPPORT_DEVICES: _check_devices,
    "Pleural Other": _check_pleural_other,
}


def test_every_supported_finding_has_a_signature_check():
    assert set(SIGNATURES) == set(SUPPORTED)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_finding_is_visible_where_it_should_be(name):
    SIGNATURES[name]()


def test_render_shapes_sizes_and_variation():
    spec = sample_spec(np.random.default_rng(3))
    for size in (64, 112, 160):
        img = render_image(spec, size, np.random.default_rng(0))
        assert img.shape == (size, size) and img.dtype == np.uint8
    # Lungs dark, mediastinum bright, on every sampled anatomy.
    for seed in range(5):
        img = render_image(StudySpec(anatomy=sample_spec(np.random.default_rng(seed)).anatomy))
        assert img[_region("right", 0.2, 0.3, 0.3, 0.5)].mean() + 60 < img[d_grid < 0.03].mean()
    with pytest.raises(ValueError, match="at least 32"):
        render_image(spec, 16)


def test_fast_drawing_helpers_equal_their_plain_versions():
    from orapo.synth import render

    frame = Frame.build(Anatomy(width=0.95, tilt_deg=2.0, shift=0.01), 96)
    for p, q, w in [((0.04, 0.19), (0.33, 0.115), 0.013), ((0.0, 0.33), (-0.07, 0.42), 0.011)]:
        plain = render.ramp(w - render._segment_distance(frame, p, q), frame.eps)
        assert np.allclose(render._segment_band(frame, p, q, w), plain, atol=1e-6)
    # Vessel table by FFT convolution == the sum of rotated copies of the branch kernel.
    rng = np.random.default_rng(4)
    shifts = np.round(rng.uniform(-1.5, 1.6, size=9) / (2 * np.pi) * render._PHI_BINS)
    weights = rng.uniform(0.5, 1.0, size=9)
    plain = sum(
        w * np.roll(render._branch_kernel(), int(k), axis=0)
        for k, w in zip(shifts, weights, strict=True)
    )
    spikes = np.zeros(render._PHI_BINS)
    np.add.at(spikes, shifts.astype(int) % render._PHI_BINS, weights)
    fast = np.fft.irfft(
        np.fft.rfft(spikes)[:, None] * render._branch_spectrum(), n=render._PHI_BINS, axis=0
    )
    assert np.allclose(fast, plain, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Reports and labels
# --------------------------------------------------------------------------------------------

HEDGE = re.compile(r"\b(possible|cannot exclude|may|questionable)\b", re.IGNORECASE)
NEGATION = re.compile(r"\b(no|normal|without|negative for)\b", re.IGNORECASE)


def test_each_sentence_states_its_labels_in_one_clear_state():
    for seed in range(250):
        spec = sample_spec(np.random.default_rng(seed))
        findings, impression = write_report_sentences(spec, np.random.default_rng(seed + 1))
        for s in findings + impression:
            states = set(s.labels.values())
            assert len(states) <= 1, s
            if NO_FINDING in s.labels:  # a global normal statement
                assert s.labels == {NO_FINDING: 1} and not spec.names - {SUPPORT_DEVICES}, s
            elif HEDGE.search(s.text):
                assert states == {-1}, s
            elif NEGATION.search(s.text):
                assert states <= {0}, s
            else:
                assert states <= {1}, s


def _expected_from_spec(spec: StudySpec) -> dict[str, set]:
    """Label states each observation may take given the spec, whatever the phrasing."""
    allowed = {name: {0, None} for name in OBSERVATIONS if name != NO_FINDING}
    for f in spec.findings:
        if f.name != "Pneumonia":
            allowed[f.name] = {-1 if f.hedged else 1}
    pneumonia = spec.get("Pneumonia")
    if pneumonia is not None:  # written as consolidation (hedged: opacity) + pneumonia
        allowed["Pneumonia"] = {-1 if pneumonia.hedged else 1}
        allowed["Lung Opacity" if pneumonia.hedged else "Consolidation"] = {1}
    umbrella = ("Consolidation", "Edema", "Atelectasis")  # "consolidative opacity", ...
    if any(f.name in umbrella and not f.hedged for f in spec.findings):
        allowed["Lung Opacity"] = allowed["Lung Opacity"] | {1}
    return allowed


def test_labels_follow_the_spec_through_the_written_report():
    for seed in range(300):
        spec = sample_spec(np.random.default_rng(seed))
        findings, impression, labels = write_report(spec, np.random.default_rng(seed))
        assert set(labels) == set(OBSERVATIONS)
        for name, allowed in _expected_from_spec(spec).items():
            assert labels[name] in allowed, (name, labels[name], spec, findings, impression)
        pathology = {f.name for f in spec.findings} - {SUPPORT_DEVICES}
        assert (labels[NO_FINDING] == 1) == (not pathology)


def test_hedged_and_negated_findings_worked_example():
    spec = BASE.with_findings(Finding("Pleural Effusion", hedged=True, side="left"))
    found = False
    for seed in range(20):
        findings, impression, labels = write_report(spec, np.random.default_rng(seed))
        assert labels["Pleural Effusion"] == -1 and labels[NO_FINDING] is None
        assert HEDGE.search(findings) and "effusion" in findings
        if labels["Pneumothorax"] == 0:
            found = True
            assert re.search(r"\bno (evidence of )?pneumothorax", findings + impression, re.I)
    assert found


def test_normal_reports_have_no_finding_and_several_styles():
    texts = set()
    for seed in range(40):
        findings, impression, labels = write_report(BASE, np.random.default_rng(seed))
        assert labels[NO_FINDING] == 1
        assert all(labels[n] in (0, None) for n in OBSERVATIONS if n != NO_FINDING)
        texts.add(impression)
    assert len(texts) >= 4


def test_aggregate_labels_worked_values():
    assert aggregate_labels([{"Edema": 0}, {"Edema": -1}])["Edema"] == -1
    assert aggregate_labels([{"Edema": -1}, {"Edema": 1}, {"Edema": 0}])["Edema"] == 1
    out = aggregate_labels([{SUPPORT_DEVICES: 1}, {"Pneumothorax": 0}])
    assert out[NO_FINDING] == 1 and out["Edema"] is None
    assert aggregate_labels([{"Atelectasis": -1}])[NO_FINDING] is None


def test_vocabulary_is_moderate():
    book = load_phrases()
    for name, pools in book.observations.items():
        for pool, templates in pools.items():
            assert len(templates) <= 6, (name, pool)
    words = set()
    for seed in range(400):
        study = make_study(seed, 0, with_image=False)
        words |= set(re.findall(r"[a-z-]+", (study.findings + study.impression).lower()))
    assert 120 < len(words) < 250


def test_phrase_and_world_files_reject_bad_entries():
    import yaml

    from orapo.synth.report import PHRASES_FILE
    from orapo.synth.spec import WORLD_FILE

    raw = yaml.safe_load(PHRASES_FILE.read_text())
    raw["observations"]["Edema"]["positive"].append("{Degree} pulmonary {oops}.")
    with pytest.raises(ValueError, match=r"Edema\.positive.*oops"):
        parse_phrases(raw, "p.yaml")
    raw = yaml.safe_load(PHRASES_FILE.read_text())
    raw["negative_combos"][0]["labels"]["Pneumothorx"] = 0
    with pytest.raises(ValueError, match="Pneumothorx"):
        parse_phrases(raw, "p.yaml")
    raw = yaml.safe_load(WORLD_FILE.read_text())
    raw["base"]["Edema"] = 1.5
    with pytest.raises(ValueError, match=r"w.yaml: base\.Edema"):
        parse_world(raw, "w.yaml")
    assert load_world().normal_fraction == pytest.approx(0.35)


def test_profiles_share_findings_and_labels_and_differ_in_salience(tmp_path):
    """salient and realistic draw the same findings and labels for a seed; salient draws
    definite findings stronger on a quieter patient; an unknown profile fails before work."""
    from orapo.synth.spec import PROFILES, load_profile

    assert set(PROFILES) == {"salient", "realistic"}
    salient, realistic = load_profile("salient"), load_profile("realistic")
    assert salient.base == realistic.base and salient.links == realistic.links
    assert salient.hedged == realistic.hedged
    assert salient.severity["default"]["severe"] > realistic.severity["default"]["severe"]
    for key in ("noise", "tilt_deg", "ctr"):
        lo, hi = salient.anatomy[key]
        rlo, rhi = realistic.anatomy[key]
        assert hi - lo < (rhi - rlo) / 2, key
    severe = {"salient": 0, "realistic": 0}
    for i in range(200):
        a = make_study(3, i, with_image=False, profile="salient")
        b = make_study(3, i, with_image=False, profile="realistic")
        assert a.labels == b.labels and [f.name for f in a.spec.findings] == [
            f.name for f in b.spec.findings
        ]
        severe["salient"] += sum(f.severity == "severe" for f in a.spec.findings)
        severe["realistic"] += sum(f.severity == "severe" for f in b.spec.findings)
    assert severe["salient"] > 2 * severe["realistic"]
    with pytest.raises(ValueError, match="unknown world profile 'subtle'; valid profiles"):
        generate(tmp_path, 4, profile="subtle")
    assert not (tmp_path / "images").exists()


def test_world_file_extends_another(tmp_path):
    from orapo.synth.spec import WORLD_FILE

    child = tmp_path / "child.yaml"
    (tmp_path / "world.yaml").write_text(WORLD_FILE.read_text())
    child.write_text("extends: world.yaml\nnormal_fraction: 0.5\n")
    assert load_world(str(child)).normal_fraction == 0.5
    assert load_world(str(child)).base == load_world().base
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ValueError, match="loops back"):
        load_world(str(loop))


def test_prevalence_is_roughly_like_chest_xray_data():
    counts = dict.fromkeys(OBSERVATIONS, 0)
    n = 600
    for seed in range(n):
        study = make_study(7, seed, with_image=False)
        for name, state in study.labels.items():
            counts[name] += state in (1, -1)
    share = {k: v / n for k, v in counts.items()}
    assert 0.28 < share[NO_FINDING] < 0.42
    for frequent in ("Pleural Effusion", "Cardiomegaly", "Lung Opacity", "Atelectasis"):
        assert share[frequent] > 0.12, frequent
    for rare in ("Pneumothorax", "Fracture"):
        assert share[rare] < 0.06, rare
    assert share[SUPPORT_DEVICES] > 0.12


# --------------------------------------------------------------------------------------------
# Manifest and CLI
# --------------------------------------------------------------------------------------------


def test_manifest_validates_and_matches_in_memory_studies(tmp_path):
    path = generate(tmp_path, 12, seed=3, progress=False, split_fracs=(0.5, 0.25, 0.25))
    m = read_manifest(path)
    assert [s.split for s in m].count("val") == 3 and len(m) == 12
    for s in m:
        assert s.image_paths(m.root)[0].is_file()
        assert s.source["dataset"] == "synth" and s.source["seed"] == 3
        again = make_study(3, s.source["index"], with_image=False)
        assert (s.findings, s.impression, s.labels) == (
            again.findings,
            again.impression,
            again.labels,
        )
        spec = StudySpec.from_json(s.source["spec"])
        assert spec == again.spec
        # The stored spec and (seed, index) redraw the stored image exactly.
        image = render_image(spec, 112, study_rngs(3, s.source["index"])[1])
        assert np.array_equal(np.asarray(Image.open(s.image_paths(m.root)[0])), image)


def _app() -> typer.Typer:
    from orapo.synth.cli import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_synth_and_stats_smoke(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds"
    args = ["synth", "--out", str(out), "--n", "30", "--seed", "4", "--no-progress"]
    result = runner.invoke(_app(), [*args, "--n-val", "5", "--test-frac", "0.1"])
    assert result.exit_code == 0, result.output
    assert "train 22, val 5, test 3" in result.output and "studies/s" in result.output
    assert (out / "contact_sheet.png").is_file() and len(list((out / "images").iterdir())) == 30
    again = runner.invoke(_app(), args)
    assert again.exit_code != 0 and "overwrite" in again.output

    chart = tmp_path / "stats.png"
    result = runner.invoke(_app(), ["stats", str(out / "manifest.jsonl"), "--out", str(chart)])
    assert result.exit_code == 0, result.output
    assert "Cardiomegaly" in result.output and "not mentioned" in result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "split": "train"}) + "\n")
    result = runner.invoke(_app(), ["stats", str(bad)])
    assert result.exit_code != 0 and "bad.jsonl:1" in result.output
