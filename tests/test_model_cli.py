"""CPU smoke runs of `orapo model demo`, `orapo generate` and `orapo evaluate` (tiny preset)."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from orapo.manifest import write_manifest
from orapo.model.cli import register

STUDIES = [
    ("Cardiomegaly.", "The heart is enlarged. No pleural effusion.", {"Cardiomegaly": 1}),
    ("No acute disease.", "The lungs are clear. No pneumothorax.", None),
    ("Left pleural effusion.", "There is a small left pleural effusion.", {"Pleural Effusion": 1}),
    ("Pneumothorax.", "There is a right apical pneumothorax.", None),
]


@pytest.fixture(scope="module")
def app():
    root = typer.Typer()

    @root.callback()
    def _main() -> None:
        """Test root."""

    register(root)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A manifest of 6 studies (4 test, 2 train) with 64 px PNGs made with PIL."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        impression, findings, labels = STUDIES[i % len(STUDIES)]
        name = f"images/s{i}.png"
        Image.fromarray((rng.random((64, 64)) * 255).astype("uint8")).save(root / name)
        rows.append(
            {
                "id": f"s{i}",
                "split": "test" if i < 4 else "train",
                "images": [name],
                "findings": findings,
                "impression": impression,
                **({"labels": labels} if labels else {}),
            }
        )
    write_manifest(root / "manifest.jsonl", rows)
    return root


@pytest.fixture(scope="module")
def model_dir(app, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny"
    result = CliRunner().invoke(
        app,
        [
            "model",
            "demo",
            "--out",
            str(out),
            "--manifest",
            str(data / "manifest.jsonl"),
            "--preset",
            "tiny",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output
    return out


def test_model_demo_builds_a_model_directory(model_dir):
    record = json.loads((model_dir / "orapo_model.json").read_text())
    assert record["preset"] == "tiny" and record["seed"] == 3
    assert record["tokenizer_corpus_texts"] == 2  # the train split of the manifest
    assert (model_dir / "config.json").is_file()


def test_generate_from_manifest_folder_and_single_image(app, data, model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "reports.jsonl"
    result = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(model_dir),
            "--input",
            str(data / "manifest.jsonl"),
            "-o",
            str(out),
            "--split",
            "test",
            "--batch-size",
            "3",
            "--max-new-tokens",
            "6",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "s/report" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["s0", "s1", "s2", "s3"]
    assert all(set(r) == {"id", "image", "report"} for r in lines)
    assert lines[0]["image"] == "images/s0.png"

    result = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(model_dir),
            "--input",
            str(data / "images"),
            "--max-new-tokens",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    ids = [json.loads(line)["id"] for line in result.stdout.splitlines() if line.startswith("{")]
    assert ids == [f"s{i}" for i in range(6)]

    single = tmp_path / "one.txt"
    result = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(model_dir),
            "--input",
            str(data / "images" / "s1.png"),
            "-o",
            str(single),
            "--max-new-tokens",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert not single.read_text().startswith("{")


def test_generate_bad_image_names_the_file_or_is_skipped(app, data, model_dir, tmp_path):
    listing = tmp_path / "list.txt"
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG broken")
    listing.write_text(f"{data / 'images' / 's0.png'}\ncorrupt.png\nmissing.png\n")
    runner = CliRunner()
    args = ["generate", "--model", str(model_dir), "--input", str(listing), "--max-new-tokens", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "corrupt.png" in result.output
    result = runner.invoke(app, [*args, "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    assert "skipped 2 bad images" in result.output
    assert len([ln for ln in result.stdout.splitlines() if ln.startswith("{")]) == 1


def test_evaluate_end_to_end(app, data, model_dir, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--data",
            str(data / "manifest.jsonl"),
            "--split",
            "test",
            "-o",
            str(out),
            "--limit",
            "3",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "positive/all14" in result.output and "bleu_4" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["split"] == "test"
    assert metrics["prompt_version"] == "report_v1"
    assert metrics["model"] == str(model_dir.resolve())
    assert set(metrics["protocols"]) == {
        "positive/all14",
        "positive/top5",
        "uncertain-positive/all14",
        "uncertain-positive/top5",
    }
    # s0 and s2 carry gold labels, s1 is labeled from its reference report
    assert metrics["reference_labels"] == {"manifest": 2, "labeler": 1}
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["s0", "s1", "s2"]
    assert preds[0]["reference_labels"]["Cardiomegaly"] == 1
    assert preds[0]["reference_labels"]["Pleural Effusion"] is None  # gold: not in the manifest
    assert preds[1]["reference_labels_from"] == "labeler"
    assert "Cardiomegaly" in (out / "report.md").read_text()
    page = (out / "examples.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "s2" in page


def test_evaluate_with_every_image_unreadable_is_one_line(app, model_dir, tmp_path):
    """--skip-bad-images on a manifest whose images all fail: one red line naming why and an
    example, exit 1, no traceback."""
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    rows = [
        {"id": f"b{i}", "split": "test", "images": [name], "findings": "", "impression": "x."}
        for i, name in enumerate(["bad.png", "missing.png"])
    ]
    write_manifest(tmp_path / "m.jsonl", rows)
    args = ["evaluate", "--model", str(model_dir), "--data", str(tmp_path / "m.jsonl")]
    result = CliRunner().invoke(app, [*args, "--skip-bad-images", "-o", str(tmp_path / "e")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    [line] = [x for x in result.output.splitlines() if "error" in x.lower()]  # after progress bars
    assert line.startswith("error: no study could be evaluated: all 2 images were skipped")
    assert "1 missing, 1 unreadable" in line


def test_model_demo_without_manifest_uses_the_synthetic_report_writer(app, tmp_path):
    result = CliRunner().invoke(
        app, ["model", "demo", "--out", str(tmp_path / "m"), "--preset", "tiny"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m" / "orapo_model.json").read_text())
    assert record["tokenizer_corpus_texts"] == 2000
