"""The LLM extractor against servers as they really answer (issue 20): llama-cpp-python's
(json_schema refused with a 500, one request at a time, any model name), a server that cannot
answer, a wrong model name; format negotiation in the cache key; the adaptive concurrency
limit; loud failure on fallbacks, in `orapo label` and in the FactS reward.

All against the loopback fake server (``FakeChatServer(llama_cpp=True)``); the real
llama.cpp server is tests/test_llm_real_server.py.
"""

from __future__ import annotations

import json
import math

import pytest

from helpers import cli_app, cli_runner
from orapo.labeler.cli import register
from orapo.llm import LLMFallbackError, LLMLabeler, facts_to_labels, validate_facts
from orapo.llm.client import AdaptiveLimit
from orapo.llm.fake_server import FakeChatServer, fake_facts
from orapo.llm.labeler import model_listed

APP = cli_app(register)
REPORTS = [
    "Heart size is mildly enlarged. Small left pleural effusion.",
    "No pneumothorax. Possible right lower lobe consolidation.",
    "Lungs are clear. No acute cardiopulmonary process.",
    "Right IJ catheter tip in the SVC. Mild pulmonary edema.",
    "Stable left lower lobe atelectasis. No effusion.",
    "Moderate cardiomegaly. Old left rib fracture.",
]


def write_reports(path, texts) -> str:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return str(path)


def label(args, tmp_path):
    """`orapo label` with the per-user cache in tmp_path (the default cache, not --no-cache)."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    return cli_runner().invoke(APP, ["label", *args], env=env)


def model_labels(text: str) -> dict:
    return facts_to_labels(validate_facts({"facts": fake_facts(text)}).facts)


def test_llama_cpp_server_with_default_options_answers_every_report(tmp_path):
    src = write_reports(tmp_path / "in.jsonl", REPORTS)
    with FakeChatServer(llama_cpp=True, latency=0.02, model="smollm2") as server:
        res = label(
            [src, "--extractor", "llm", "--model", "smollm2", "--base-url", server.base_url],
            tmp_path,
        )
        requests = server.chat_requests()
        assert server.max_in_flight >= 2  # the client did send several at once: it queued
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["labels"] for r in rows] == [model_labels(t) for t in REPORTS]
    assert f"model: {len(REPORTS)} answered" in res.stderr
    assert f"response_format: json_object_schema {len(REPORTS)}" in res.stderr
    assert "fallbacks to the rule labeler: none" in res.stderr
    # json_schema refused (500, not retried as a fault), then json_object with the schema
    kinds = [(r.body.get("response_format") or {}).get("type") for r in requests]
    assert kinds.count("json_schema") >= 1 and kinds.count("json_object") == len(REPORTS)
    objects = [
        r.body["response_format"]
        for r, k in zip(requests, kinds, strict=True)
        if k == "json_object"
    ]
    assert all("schema" in f for f in objects)


def test_llama_cpp_json_object_without_schema_drops_keys(tmp_path):
    """Why the schema must travel with json_object: without it the (fake) small model leaves
    out 'state', every report falls back, and the command says so and fails."""
    src = write_reports(tmp_path / "in.jsonl", REPORTS[:2])
    with FakeChatServer(llama_cpp=True, model="smollm2") as server:
        args = ["--extractor", "llm", "--model", "smollm2", "--base-url", server.base_url]
        res = label([src, *args, "--response-format", "json_object", "--deadline", "2"], tmp_path)
    assert res.exit_code == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 2 reports (100%) fell back") and "bad_schema" in last
    assert res.stdout == ""  # nothing written


def test_single_slot_server_loses_no_report_to_timeouts(tmp_path):
    """Scaled down: each answer 0.15 s, one at a time, 16 reports, the default concurrency 8
    and a 0.9 s timeout: eight queued requests would need 1.2 s. The limit adapts."""
    texts = [f"Small left pleural effusion, case {i}." for i in range(16)]
    src = write_reports(tmp_path / "in.jsonl", texts)
    with FakeChatServer(llama_cpp=True, latency=0.15, model="smollm2") as server:
        args = ["--extractor", "llm", "--model", "smollm2", "--base-url", server.base_url]
        res = label([src, *args, "--timeout", "0.9"], tmp_path)
    assert res.exit_code == 0, res.output
    assert "model: 16 answered" in res.stderr


def test_adaptive_limit_measures_first_then_follows_the_server():
    limit = AdaptiveLimit(8)
    assert limit.limit == 1  # one request first: its latency says how fast the server is
    for expected in (2, 3, 4):  # slow start: +1 per quick answer (under timeout / 4)
        assert limit.acquire(0)
        limit.release(0.1, 1.0)
        assert limit.limit == expected
    for _ in range(3):
        assert limit.acquire(0)
    limit.release(0.6, 1.0)  # over half the timeout: answers queue; growth ends
    assert limit.limit == 3
    limit.release(1.0, 1.0, "timeout")
    assert limit.limit == 1
    assert not limit.acquire(0.01)  # one still in flight
    limit.release(0.1, 1.0, "error")  # errors do not move it
    assert limit.limit == 1 and limit.highest == 4
    limit.acquire(0)
    limit.release(0.1, 1.0)  # limit (1) quick answers in a row: +1
    assert limit.limit == 2

    dead = AdaptiveLimit(8)  # a timeout before any answer: down or hanging, not queueing
    dead.acquire()
    dead.release(1.0, 1.0, "timeout")
    assert dead.limit == 8
    fixed = AdaptiveLimit(2, adaptive=False)
    fixed.acquire()
    fixed.release(5.0, 1.0, "timeout")
    assert fixed.limit == 2


def test_server_that_cannot_answer_fails_the_command(tmp_path):
    src = write_reports(tmp_path / "in.jsonl", REPORTS)
    with FakeChatServer(fail_all="500") as server:
        args = ["--extractor", "llm", "--model", "fake-facts", "--base-url", server.base_url]
        res = label([src, *args, "--deadline", "2"], tmp_path)
    assert res.exit_code == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {len(REPORTS)} of {len(REPORTS)} reports (100%) fell back")
    assert "--max-fallback-rate" in last and res.stdout == ""
    # nothing listens: same
    with FakeChatServer() as gone:
        url = gone.base_url
    res = label([src, "--extractor", "llm", "--model", "m", "--base-url", url], tmp_path)
    assert res.exit_code == 1 and "fell back" in res.stderr.strip().splitlines()[-1]
    # --text too
    with FakeChatServer(fail_all="500") as server:
        args = ["--extractor", "llm", "--model", "fake-facts", "--base-url", server.base_url]
        res = label(["--text", "Mild edema.", *args, "--deadline", "1"], tmp_path)
    assert res.exit_code == 1 and "error: 1 of 1 reports" in res.stderr


def test_max_fallback_rate_accepts_a_share(tmp_path):
    texts = [*REPORTS[:3], "Mild edema. [fault:500]"]
    src = write_reports(tmp_path / "in.jsonl", texts)
    with FakeChatServer() as server:
        args = ["--extractor", "llm", "--model", "fake-facts", "--base-url", server.base_url]
        args += ["--deadline", "1", "--no-cache"]
        assert label([src, *args], tmp_path).exit_code == 1
        ok = label([src, *args, "--max-fallback-rate", "0.25"], tmp_path)
    assert ok.exit_code == 0, ok.output
    assert len(ok.stdout.splitlines()) == 4


def test_wrong_model_name_is_caught_by_the_models_list(tmp_path):
    src = write_reports(tmp_path / "in.jsonl", REPORTS[:1])
    with FakeChatServer(llama_cpp=True, model="/models/smollm2.gguf") as server:
        args = ["--extractor", "llm", "--base-url", server.base_url]
        bad = label([src, *args, "--model", "smolm2"], tmp_path)
        good = label([src, *args, "--model", "smollm2"], tmp_path)
        assert len(server.chat_requests()) == 2  # json_schema refused, then json_object
    assert bad.exit_code == 1 and "'smolm2' is not served" in bad.stderr
    assert good.exit_code == 0, good.output
    assert model_listed("llama3.1", ["llama3.1:latest"]) and not model_listed("a", ["b"])


def test_cache_key_holds_the_response_format(tmp_path):
    cache = tmp_path / "c.sqlite"
    report = REPORTS[0]
    with FakeChatServer() as server:

        def ask(fmt: str) -> str:
            with LLMLabeler(
                "fake-facts", server.base_url, cache_path=cache, response_format=fmt
            ) as labeler:
                return labeler.extract_batch([report])[0].source

        assert ask("json_object_schema") == "llm"
        assert ask("json_object_schema") == "cache"
        assert ask("json_schema") == "llm"  # got another way: asked again
        assert ask("auto") == "cache"  # auto takes an answer of any format
        assert ask("none") == "llm"


def test_reward_logs_the_fallback_rate_and_stops_by_the_rule():
    from orapo.rewards import FactsReward

    texts = ["Mild edema.", "Small left effusion. [fault:500]"]
    with FakeChatServer() as server:
        options = dict(model="fake-facts", base_url=server.base_url, deadline=1.0)
        reward = FactsReward(labeler_name="llm", labeler_options=dict(options))
        try:
            reward(texts, labels=[{"Edema": 1}] * 2)
            metrics = reward.metrics()
            assert metrics["reward/facts_llm_fallback_rate"] == 0.5  # warned, went on
            assert metrics["reward/facts_llm_fallbacks"] == 1.0
            reward(["No edema."], labels=[{"Edema": 1}])
            assert reward.metrics()["reward/facts_llm_fallback_rate"] == 0.0
            reward([""], labels=[{"Edema": 1}])  # nothing asked of the model
            assert math.isnan(reward.metrics()["reward/facts_llm_fallback_rate"])
        finally:
            reward.labeler.close()
        stop = FactsReward(labeler_name="llm", labeler_options=dict(options, on_fallback="stop"))
        try:
            with pytest.raises(LLMFallbackError, match="1 of 2 reports"):
                stop(["Mild edema, again.", "Effusion. [fault:500]"], labels=[{"Edema": 1}] * 2)
        finally:
            stop.labeler.close()


def test_format_fields_per_mode():
    from orapo.llm import load_prompt

    prompt = load_prompt()
    assert prompt.format_fields("guided_json") == {"guided_json": prompt.schema}
    assert prompt.format_fields("json_object_schema")["response_format"] == {
        "type": "json_object",
        "schema": prompt.schema,
    }
    assert prompt.format_fields("none") == {} and prompt.response_format("guided_json") is None
