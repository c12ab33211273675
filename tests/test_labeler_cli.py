"""`orapo label`: JSONL, CSV, manifests, stdin, --text, bad lines (CliRunner, real labeler)."""

from __future__ import annotations

import json

import pytest
import typer

from helpers import cli_app, cli_runner
from orapo.labeler import label_report
from orapo.labeler.cli import register
from orapo.manifest import format_report, write_manifest
from orapo.observations import OBSERVATIONS


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return cli_app(register)


def run(app, args, input=None):
    return cli_runner().invoke(app, ["label", *args], input=input)


def parse(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


TEXTS = {
    "a": "Mild cardiomegaly. No pleural effusion.",
    "b": "Possible right lower lobe pneumonia.",
    "c": "   ",
}


def test_jsonl_to_stdout_in_order(app, tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TEXTS.items()))
    res = run(app, [str(f)])
    assert res.exit_code == 0, res.output
    rows = parse(res.stdout)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for r in rows:
        assert list(r["labels"]) == list(OBSERVATIONS)
        assert r["labels"] == label_report(TEXTS[r["id"]])
    assert rows[0]["labels"]["Cardiomegaly"] == 1
    assert rows[1]["labels"]["Pneumonia"] == -1
    assert all(v is None for v in rows[2]["labels"].values())  # whitespace text: all null


def test_output_file_and_custom_field(app, tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"id": 7, "report": "Small left pneumothorax."}) + "\n")
    out = tmp_path / "sub" / "labels.jsonl"
    res = run(app, [str(f), "-o", str(out), "--field", "report"])
    assert res.exit_code == 0, res.output
    rows = parse(out.read_text())
    assert rows == [{"id": 7, "labels": label_report("Small left pneumothorax.")}]
    assert rows[0]["labels"]["Pneumothorax"] == 1


def test_csv(app, tmp_path):
    f = tmp_path / "in.csv"
    f.write_text('id,text\nr1,"No effusion, pneumothorax or consolidation."\nr2,Cardiomegaly.\n')
    res = run(app, [str(f)])
    assert res.exit_code == 0, res.output
    rows = parse(res.stdout)
    assert [r["id"] for r in rows] == ["r1", "r2"]
    assert rows[0]["labels"]["Pneumothorax"] == 0
    assert rows[1]["labels"]["Cardiomegaly"] == 1


def test_csv_without_text_column_is_an_error(app, tmp_path):
    f = tmp_path / "in.csv"
    f.write_text("id,body\n1,x\n")
    res = run(app, [str(f)])
    assert res.exit_code != 0
    assert "no 'text' column" in res.output + (res.stderr or "")


def test_manifest(app, tmp_path):
    studies = [
        {
            "id": "s1",
            "split": "train",
            "images": ["x.png"],
            "findings": "Heart is enlarged.",
            "impression": "Cardiomegaly.",
        },
        {
            "id": "s2",
            "split": "test",
            "images": ["y.png"],
            "findings": "",
            "impression": "Small right pleural effusion.",
        },
    ]
    path = tmp_path / "manifest.jsonl"
    write_manifest(path, studies)
    res = run(app, [str(path)])
    assert res.exit_code == 0, res.output
    rows = parse(res.stdout)
    assert [r["id"] for r in rows] == ["s1", "s2"]
    for r, s in zip(rows, studies, strict=True):
        assert r["labels"] == label_report(format_report(s["findings"], s["impression"]))
    assert rows[1]["labels"]["Pleural Effusion"] == 1


def test_stdin(app):
    lines = json.dumps({"id": "x", "text": "No pneumothorax."}) + "\n"
    res = run(app, ["-"], input=lines)
    assert res.exit_code == 0, res.output
    assert parse(res.stdout) == [{"id": "x", "labels": label_report("No pneumothorax.")}]
    res = run(app, ["-"], input="id,text\n1,Pneumothorax.\n")  # CSV on stdin, sniffed
    assert parse(res.stdout)[0]["labels"]["Pneumothorax"] == 1


def test_text_prints_a_table(app):
    res = run(app, ["--text", "Possible small left pleural effusion. No pneumothorax."])
    assert res.exit_code == 0, res.output
    for word in ("Pleural Effusion", "uncertain", "Pneumothorax", "negative", "possible"):
        assert word in res.stdout


BAD = (
    json.dumps({"id": "ok1", "text": "Cardiomegaly."})
    + "\n"
    + "{not json\n"
    + json.dumps({"text": "no id"})
    + "\n"
    + json.dumps({"id": "t", "text": 5})
    + "\n"
    + json.dumps({"id": "n"})
    + "\n"
    + json.dumps([1, 2])
    + "\n"
    + json.dumps({"id": "ok2", "text": "No effusion."})
    + "\n"
)


def test_bad_line_is_an_error_naming_its_line(app, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(BAD)
    res = run(app, [str(f)])
    assert res.exit_code == 1
    assert f"{f}:2: invalid JSON" in (res.stderr or res.output)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (json.dumps({"text": "x"}), ":1: missing field 'id'"),
        (json.dumps({"id": "a", "text": 5}), ":1: field 'text' must be a string, got int"),
        (json.dumps({"id": "a"}), ":1: missing field 'text'"),
        (json.dumps({"id": None, "text": "x"}), ":1: field 'id' must be a string or an integer"),
        ("[1]", ":1: expected a JSON object, got list"),
    ],
)
def test_each_kind_of_bad_line(app, tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(line + "\n")
    res = run(app, [str(f)])
    assert res.exit_code == 1
    assert message in (res.stderr or res.output)


def test_skip_bad_counts_and_keeps_order(app, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(BAD)
    res = run(app, [str(f), "--skip-bad"])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in parse(res.stdout)] == ["ok1", "ok2"]
    err = res.stderr if res.stderr is not None else res.output
    assert "skipped 5 bad records" in err
    assert "invalid JSON" in err


def test_unknown_labeler_and_bad_usage(app, tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"id": 1, "text": "x"}) + "\n")
    res = run(app, [str(f), "--labeler", "gpt-magic"])
    assert res.exit_code != 0
    assert "rule" in res.output + (res.stderr or "")
    assert run(app, []).exit_code != 0  # neither INPUT nor --text
    assert run(app, [str(f), "--text", "x"]).exit_code != 0  # both
    assert run(app, [str(tmp_path / "missing.jsonl")]).exit_code != 0


def test_differential_option(app):
    line = json.dumps({"id": "d", "text": "Left basilar atelectasis versus pneumonia."}) + "\n"
    default = parse(run(app, ["-"], input=line).stdout)[0]["labels"]
    assert (default["Atelectasis"], default["Pneumonia"]) == (1, 1)  # as NLM's coders read it
    res = run(app, ["-", "--differential", "uncertain"], input=line)
    assert res.exit_code == 0, res.output
    chexpert = parse(res.stdout)[0]["labels"]
    assert (chexpert["Atelectasis"], chexpert["Pneumonia"]) == (-1, -1)
    res = run(app, ["-", "--differential", "maybe"], input=line)
    assert res.exit_code != 0
    assert "--differential must be one of" in res.output + (res.stderr or "")
    res = run(app, ["-", "--differential", "uncertain", "--extractor", "llm"], input=line)
    assert res.exit_code != 0
    assert "rule extractor only" in res.output + (res.stderr or "")
