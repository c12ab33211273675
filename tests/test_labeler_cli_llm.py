"""`orapo label --extractor llm|hybrid` against the loopback fake chat server (CliRunner).

Every run names its cache (or points XDG_CACHE_HOME at tmp_path), so no test writes to ~/.cache.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from helpers import cli_app, cli_runner
from orapo.labeler import label_report
from orapo.labeler.cli import default_llm_cache, register
from orapo.llm import facts_to_labels, validate_facts
from orapo.llm.fake_server import FakeChatServer, fake_facts
from orapo.observations import OBSERVATIONS

APP = cli_app(register)


def run(args: list[str], input: str | None = None):
    return cli_runner().invoke(APP, ["label", *args], input=input)


def parse(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def write_jsonl(path, texts: dict) -> str:
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))
    return str(path)


def model_labels(text: str) -> dict:
    """What the fake model's answer maps to, through the library (not the CLI)."""
    return facts_to_labels(validate_facts({"facts": fake_facts(text)}).facts)


@pytest.fixture
def server():
    with FakeChatServer() as s:
        yield s


def llm_args(server, cache) -> list[str]:
    """The LLM extractor on the fake server; ``cache`` None: ``--no-cache``."""
    return [
        "--extractor",
        "llm",
        "--model",
        "fake-facts",
        "--base-url",
        server.base_url,
        *(["--no-cache"] if cache is None else ["--cache", str(cache)]),
    ]


TEXTS = {
    "a": "Mild cardiomegaly. No pleural effusion.",
    "b": "Possible right lower lobe pneumonia.",
    "c": "   ",
    "d": "Mild cardiomegaly. No pleural effusion.",  # a repeat: one request for a and d
}


def test_llm_extractor_keeps_the_jsonl_contract(server, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    res = run([src, *llm_args(server, tmp_path / "c.sqlite")])
    assert res.exit_code == 0, res.output
    rows = parse(res.stdout)
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    for r in rows:
        assert list(r["labels"]) == list(OBSERVATIONS)  # all 14, in order
        assert r["labels"] == model_labels(TEXTS[r["id"]])
    assert rows[0]["labels"]["Cardiomegaly"] == 1 and rows[0]["labels"]["Pleural Effusion"] == 0
    assert rows[1]["labels"]["Pneumonia"] == -1
    assert all(v is None for v in rows[2]["labels"].values())  # whitespace: no request
    assert len(server.chat_requests()) == 2
    assert "LLM labeler: 4 reports (1 empty, 1 repeated in a batch" in res.stderr
    assert "2 requests" in res.stderr and "fallbacks to the rule labeler: none" in res.stderr
    # the same through -o and the --labeler alias; output file identical to stdout
    out = tmp_path / "labels.jsonl"
    args = llm_args(server, tmp_path / "c.sqlite")
    args[0] = "--labeler"
    res2 = run([src, "-o", str(out), *args])
    assert res2.exit_code == 0, res2.output
    assert out.read_text() == res.stdout


def test_second_run_is_served_from_the_cache(server, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    cache = tmp_path / "answers.sqlite"
    first = run([src, *llm_args(server, cache)])
    assert first.exit_code == 0, first.output
    asked = len(server.chat_requests())
    assert asked == 2
    second = run([src, *llm_args(server, cache)])
    assert second.exit_code == 0, second.output
    assert len(server.chat_requests()) == asked  # 0 requests on the second run
    assert second.stdout == first.stdout
    assert "cache: 2 hits, 0 misses (hit rate 100.0%)" in second.stderr
    assert "0 requests" in second.stderr


def test_faulty_server_finishes_in_bounded_time_with_fallbacks(tmp_path):
    texts = {
        f"r{i}": f"Small left pleural effusion, case {i}. [fault:{fault}]"
        for i, fault in enumerate(["timeout", "timeout", "500", "drop", "timeout", "500"])
    }
    src = write_jsonl(tmp_path / "in.jsonl", texts)
    with FakeChatServer(hang_seconds=30.0) as server:
        start = time.monotonic()
        res = run(
            [
                src,
                *llm_args(server, tmp_path / "c.sqlite"),
                "--timeout",
                "0.3",
                "--deadline",
                "0.6",
                "--concurrency",
                "3",
                "--max-fallback-rate",
                "1",
            ]
        )
        elapsed = time.monotonic() - start
    assert res.exit_code == 0, res.output
    # ceil(6 / 3) * 0.6 s is the bound; a hung request would take 30 s
    assert elapsed < 6.0, elapsed
    rows = parse(res.stdout)
    assert [r["labels"] for r in rows] == [label_report(t) for t in texts.values()]
    assert all(r["labels"]["Pleural Effusion"] == 1 for r in rows)
    line = next(x for x in res.stderr.splitlines() if "fallbacks to the rule labeler" in x)
    counts = {k: int(v) for k, v in (p.rsplit(" ", 1) for p in line.split(": ", 1)[1].split(", "))}
    assert sum(counts.values()) == 6 and "timeout" in counts
    assert "0 answered" in res.stderr


def test_no_fallback_fails_the_command_and_keeps_what_arrived(tmp_path):
    texts = {"ok": "Mild edema.", "bad": "Mild edema again. [fault:500]"}
    src = write_jsonl(tmp_path / "in.jsonl", texts)
    out = tmp_path / "labels.jsonl"
    cache = tmp_path / "c.sqlite"
    with FakeChatServer() as server:
        res = run(
            [
                src,
                "-o",
                str(out),
                *llm_args(server, cache),
                "--no-fallback",
                "--deadline",
                "1",
                "--timeout",
                "0.5",
            ]
        )
        assert res.exit_code == 1
        assert "fallback is off" in res.stderr and "[server_error]" in res.stderr
        assert "failures (fallback off): server_error 1" in res.stderr
        assert not out.exists()  # nothing half-written
        before = len(server.chat_requests())
        again = run(
            [
                write_jsonl(tmp_path / "ok.jsonl", {"ok": "Mild edema."}),
                *llm_args(server, cache),
                "--no-fallback",
            ]
        )
        assert again.exit_code == 0, again.output
        assert len(server.chat_requests()) == before  # the good answer was cached


def test_hybrid_asks_only_where_the_rule_labeler_is_unsure(server, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", {"a": TEXTS["a"], "b": TEXTS["b"]})
    args = llm_args(server, tmp_path / "c.sqlite")
    args[1] = "hybrid"
    res = run([src, *args])
    assert res.exit_code == 0, res.output
    rows = parse(res.stdout)
    assert rows[0]["labels"] == label_report(TEXTS["a"])  # settled by the rule labeler
    assert rows[1]["labels"] == model_labels(TEXTS["b"])
    assert len(server.chat_requests()) == 1
    assert "1 settled by the rule labeler" in res.stderr


def test_text_table_shows_the_facts(server, tmp_path):
    res = run(["--text", "Mild cardiomegaly. No pneumothorax.", *llm_args(server, tmp_path / "c")])
    assert res.exit_code == 0, res.output
    for word in ("Cardiomegaly", "positive", "'Mild", "(llm)", "'No", "negative"):
        assert word in res.stdout
    assert "LLM labeler: 1 reports" in res.stderr


def test_api_key_env_is_passed_and_a_bad_key_stops_at_once(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", {"a": "Mild edema."})
    with FakeChatServer(api_key="sesame") as server:
        args = [src, *llm_args(server, tmp_path / "c.sqlite"), "--api-key-env", "ORAPO_TEST_KEY"]
        monkeypatch.setenv("ORAPO_TEST_KEY", "wrong")
        bad = run(args)
        assert bad.exit_code == 1 and "ORAPO_TEST_KEY" in bad.stderr
        assert "wrong" not in bad.stderr  # the key itself is never printed
        monkeypatch.setenv("ORAPO_TEST_KEY", "sesame")
        good = run(args)
        assert good.exit_code == 0, good.output
        assert parse(good.stdout)[0]["labels"]["Edema"] == 1


def test_default_cache_is_per_user(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_llm_cache() == tmp_path / "xdg" / "orapo" / "llm-cache.sqlite"
    src = write_jsonl(tmp_path / "in.jsonl", {"a": "Mild edema."})
    res = run([src, "--extractor", "llm", "--model", "fake-facts", "--base-url", server.base_url])
    assert res.exit_code == 0, res.output
    assert default_llm_cache().is_file()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored (XDG spec)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_llm_cache() == tmp_path / "home" / ".cache" / "orapo" / "llm-cache.sqlite"
    nocache = run([src, *llm_args(server, None)])
    assert nocache.exit_code == 0, nocache.output
    assert not default_llm_cache().exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m"], "--model only apply to the LLM extractors"),
        (["--no-fallback", "--price-in", "1"], "--no-fallback, --price-in only apply"),
        (["--cache", "x.sqlite"], "--cache only apply"),
        (["--extractor", "llm"], "needs --model"),
        (["--extractor", "llm", "--model", "m", "--cache", "c", "--no-cache"], "not both"),
        (["--extractor", "llm", "--model", "m", "--timeout", "0"], "timeout must be > 0"),
        (
            ["--extractor", "llm", "--model", "m", "--concurrency", "0"],
            "greater than or equal to 1",
        ),
    ],
)
def test_bad_llm_options_are_usage_errors(tmp_path, args, message):
    src = write_jsonl(tmp_path / "in.jsonl", {"a": "Mild edema."})
    res = run(
        [src, *args, "--base-url", "http://127.0.0.1:9/v1"] if "llm" in args else [src, *args]
    )
    assert res.exit_code == 2, res.output
    err = re.sub(r"[\u2500-\u257f]", " ", res.stderr or res.output)  # rich's box lines
    assert message in " ".join(err.split())
