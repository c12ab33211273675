"""The LLM labeler against a real HTTP server on 127.0.0.1 (orapo.llm.fake_server): protocol,
every fault class, fallbacks, response_format step-down, hybrid mode, concurrency, cost."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import pytest

from orapo.labeler import LABELERS, Labeler, get_labeler
from orapo.llm import LLMConfigError, LLMError, LLMLabeler, facts_to_labels
from orapo.llm.facts import AtomicFact, map_observation, map_state
from orapo.llm.fake_server import FakeChatServer, fake_facts
from orapo.observations import OBSERVATIONS

REPORT = (
    "Heart size is mildly enlarged.  No pneumothorax.\n\nPossible left pleural effusion. "
    "Right IJ catheter in place. Old rib deformity."
)
FAST = dict(backoff=0.01, backoff_max=0.05, timeout=2.0, deadline=5.0, trust_env=False)


@pytest.fixture(autouse=True, scope="module")
def rule_labeler_built():
    """Build the shared rule labeler before any timed test (its first build takes ~1 s)."""
    get_labeler("rule").label("No effusion.")


@pytest.fixture
def server():
    with FakeChatServer(retry_after=0.4, hang_seconds=5.0, drip_seconds=0.05) as s:
        yield s


@pytest.fixture
def make(server):
    made: list[LLMLabeler] = []

    def build(**options) -> LLMLabeler:
        options = {"model": "fake-facts", "base_url": server.base_url, **FAST, **options}
        labeler = LLMLabeler(**options)
        made.append(labeler)
        return labeler

    yield build
    for labeler in made:
        labeler.close()


def expected(report: str):
    """What the labeler must give for the fake model's answer (the mapping, done by hand)."""
    facts = []
    for f in fake_facts(" ".join(report.split())):
        observation, _ = map_observation(f["observation"])
        facts.append(AtomicFact(f["fact"], observation, map_state(f["state"])))
    return facts_to_labels(facts), facts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- protocol and interface -------------------------------------------------------------------


def test_labels_facts_and_request(server, make):
    labeler = make(max_tokens=300, seed=7)
    labels, facts = labeler.label_with_facts(REPORT)
    want_labels, want_facts = expected(REPORT)
    assert (labels, facts) == (want_labels, want_facts)
    assert labels["Cardiomegaly"] == 1 and labels["Pleural Effusion"] == -1
    assert labels["Pneumothorax"] == 0 and labels["Support Devices"] == 1
    assert facts[-1] == AtomicFact("Old rib deformity", None, 1)  # "Other": kept, no label
    (request,) = server.chat_requests()
    body = request.body
    assert body["model"] == "fake-facts" and body["temperature"] == 0
    assert body["max_tokens"] == 300 and body["seed"] == 7
    assert body["response_format"]["type"] == "json_schema"
    assert body["messages"][-1]["content"] == "Report:\n" + " ".join(REPORT.split()) + "\n"
    assert request.path == "/v1/chat/completions"


def test_is_a_labeler_and_registers(server, make):
    labeler = make()
    assert isinstance(labeler, Labeler) and labeler.name == "llm"
    assert list(labeler.label("No effusion.")) == list(OBSERVATIONS)
    assert {"llm", "hybrid"} <= set(LABELERS)
    hybrid = get_labeler("hybrid", model="fake-facts", base_url=server.base_url, **FAST)
    try:
        assert isinstance(hybrid, LLMLabeler) and hybrid.name == "hybrid" and hybrid.hybrid
    finally:
        hybrid.close()


def test_rule_labeler_does_not_load_the_llm_client():
    """orapo.labeler registers the LLM labelers by name and imports orapo.llm (HTTP, SQLite)
    only when one is built."""
    code = (
        "import sys, orapo.labeler; "
        "assert 'orapo.llm' not in sys.modules and 'sqlite3' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith('orapo'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_batch_dedupes_keeps_order_and_skips_empty(server, make):
    labeler = make()
    texts = ["No effusion.", "Mild edema.", "  No   effusion. ", "", "Mild edema.", "\n"]
    out = labeler.label_batch(texts)
    assert len(server.chat_requests()) == 2
    assert out[0] == out[2] == expected("No effusion.")[0]
    assert out[1] == out[4] == expected("Mild edema.")[0]
    assert out[3] == out[5] == dict.fromkeys(OBSERVATIONS)
    s = labeler.summary()
    assert (s.reports, s.empty, s.batch_duplicates, s.cache_misses, s.llm_ok) == (6, 2, 2, 2, 2)


def test_bad_input_is_rejected(make):
    labeler = make()
    with pytest.raises(TypeError, match="not one string"):
        labeler.label_batch("No effusion.")
    with pytest.raises(TypeError, match="must be a string, got int"):
        labeler.label_batch(["ok", 3])
    with pytest.raises(LLMConfigError, match="model is required"):
        LLMLabeler("", "http://127.0.0.1:1/v1")
    with pytest.raises(LLMConfigError, match="base_url must start with http"):
        LLMLabeler("m", "127.0.0.1:8000/v1")
    with pytest.raises(LLMConfigError, match="unknown response_format 'xml'"):
        LLMLabeler("m", response_format="xml")


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "repairs"),
    [
        ("fenced", ("code_fence", "leading_text")),
        ("single_quotes", ("single_quotes", "trailing_comma")),
        ("truncated", ("truncated",)),
    ],
)
def test_repairable_answers_need_no_retry(server, make, fault, repairs):
    labeler = make()
    server.push_faults(fault)
    result = labeler.extract_batch([REPORT])[0]
    assert len(server.chat_requests()) == 1
    assert (result.source, result.repairs) == ("llm", repairs)
    want = expected(REPORT)[1]
    # a cut answer loses its incomplete last fact; the others are intact
    assert list(result.facts) == (want[:-1] if fault == "truncated" else want)
    assert labeler.summary().repairs == dict.fromkeys(repairs, 1)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("timeout", "timeout"),
        ("drip", "timeout"),
        ("drop", "connection"),
        ("500", "server_error"),
        ("503", "server_error"),
        ("429", "rate_limited"),
        ("429ms", "rate_limited"),
        ("bad_body", "bad_response"),
        ("no_content", "bad_response"),
        ("malformed", "bad_json"),
        ("truncated_hard", "bad_json"),
        ("wrong_schema", "bad_schema"),
        ("bad_state", "bad_schema"),
    ],
)
def test_each_fault_is_retried_then_answered(server, make, fault, reason):
    labeler = make(timeout=0.5)
    server.push_faults(fault)
    start = time.monotonic()
    result = labeler.extract_batch([REPORT])[0]
    assert time.monotonic() - start < 2.5
    assert len(server.chat_requests()) == 2
    assert result.source == "llm" and result.labels == expected(REPORT)[0]
    s = labeler.summary()
    assert s.retries == {reason: 1} and s.requests == 2 and not s.fallbacks


@pytest.mark.parametrize("fault", ["429", "429ms", "503"])
def test_retry_after_is_honoured(server, make, fault):
    labeler = make()  # backoff 0.01 s: only the server's 0.4 s explains a longer wait
    server.push_faults(fault)
    labeler.label(REPORT)
    first, second = server.chat_requests()
    assert 0.4 <= second.time - first.time < 1.5


def test_persistent_fault_falls_back_to_the_rule_labeler(server, make):
    labeler = make(max_retries=2)
    text = "Mild cardiomegaly. Possible edema. [fault:500]"
    result = labeler.extract_batch([text, "No effusion."])
    assert len(server.chat_requests()) == 3 + 1  # 1 + 2 retries, plus the good report
    assert (result[0].source, result[0].reason) == ("fallback", "server_error")
    assert result[0].labels == get_labeler("rule").label(text)
    assert all(f.source == "rule" for f in result[0].facts)
    assert result[1].source == "llm"
    s = labeler.summary()
    assert s.fallbacks == {"server_error": 1} and s.retries == {"server_error": 2}
    assert "fallbacks to the rule labeler: server_error 1" in s.format()
    assert s.as_metrics()["llm/fallback/server_error"] == 1.0


def test_hanging_server_is_bounded_by_the_deadline(server, make):
    labeler = make(timeout=0.3, deadline=1.0, max_retries=50)
    start = time.monotonic()
    result = labeler.extract_batch(["Mild edema. [fault:timeout]"])[0]
    elapsed = time.monotonic() - start
    assert elapsed < 1.6, elapsed  # never the 5 s the server hangs
    assert (result.source, result.reason) == ("fallback", "timeout")
    assert 2 <= len(server.chat_requests()) <= 4


def test_connection_refused_is_bounded_and_falls_back(make):
    labeler = make(base_url=f"http://127.0.0.1:{free_port()}/v1", deadline=0.5)
    start = time.monotonic()
    result = labeler.extract_batch(["Mild edema."])[0]
    assert time.monotonic() - start < 1.0
    assert (result.source, result.reason) == ("fallback", "connection")
    assert labeler.summary().retries["connection"] >= 2


def test_circuit_breaker_stops_asking_a_dead_server(make):
    labeler = make(
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        deadline=0.3,
        concurrency=1,
        breaker_threshold=2,
        breaker_cooldown=60,
    )
    start = time.monotonic()
    results = labeler.extract_batch([f"Report {i}: mild edema." for i in range(8)])
    assert time.monotonic() - start < 1.5  # 2 reports x 0.3 s, then no more waiting
    assert [r.reason for r in results] == ["connection"] * 2 + ["circuit_open"] * 6
    assert labeler.summary().fallbacks == {"connection": 2, "circuit_open": 6}


def test_client_error_is_not_retried(server, make):
    labeler = make()
    server.push_faults("400")
    result = labeler.extract_batch([REPORT])[0]
    assert len(server.chat_requests()) == 1
    assert (result.source, result.reason) == ("fallback", "client_error")


def test_fallback_off_raises_after_the_batch(server, make, tmp_path):
    cache = tmp_path / "cache.sqlite"
    labeler = make(fallback=False, max_retries=1, cache_path=cache)
    with pytest.raises(LLMError) as info:
        labeler.label_batch(["No effusion.", "Mild edema. [fault:wrong_schema]"])
    assert info.value.reason == "bad_schema"
    assert "1 of 2 reports could not be labelled by 'fake-facts'" in str(info.value)
    assert "fallback is off" in str(info.value)
    assert labeler.summary().failures == {"bad_schema": 1}
    # the report that did get an answer was cached: a second labeler does not ask again
    before = len(server.chat_requests())
    assert make(cache_path=cache).extract_batch(["No effusion."])[0].source == "cache"
    assert len(server.chat_requests()) == before


@pytest.mark.parametrize(("fault", "hint"), [("401", "OPENAI_API_KEY"), ("404", "base_url")])
def test_config_errors_raise_even_with_fallback(server, make, fault, hint):
    labeler = make()
    server.push_faults(fault)
    with pytest.raises(LLMConfigError, match=hint):
        labeler.label(REPORT)
    assert len(server.chat_requests()) == 1


# -- response_format --------------------------------------------------------------------------


def test_auto_response_format_steps_down_once():
    with FakeChatServer(reject_json_schema=True) as server:
        with LLMLabeler("fake-facts", server.base_url, **FAST) as labeler:
            assert labeler.label(REPORT) == expected(REPORT)[0]
            assert labeler.format_in_use == "json_object_schema"
            labeler.label("No effusion.")
            formats = [r.body.get("response_format") or {} for r in server.chat_requests()]
            kinds = [f.get("type") for f in formats]
            assert kinds == ["json_schema", "json_object", "json_object"]
            assert all(f["schema"] == labeler.prompt.schema for f in formats[1:])
            assert not labeler.summary().retries
            assert labeler.summary().formats == {"json_object_schema": 2}
        with LLMLabeler(
            "fake-facts", server.base_url, response_format="json_schema", **FAST
        ) as strict:
            assert strict.extract_batch([REPORT])[0].reason == "client_error"
        with LLMLabeler("fake-facts", server.base_url, response_format="none", **FAST) as none:
            none.label(REPORT)
            assert "response_format" not in server.chat_requests()[-1].body


# -- secrets ----------------------------------------------------------------------------------


def test_api_key_is_sent_but_never_shown(monkeypatch, tmp_path, caplog):
    secret = "sk-test-DO-NOT-LEAK-1234"
    monkeypatch.setenv("ORAPO_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "c.sqlite"
    with FakeChatServer(api_key=secret) as server:
        with LLMLabeler(
            "fake-facts", server.base_url, api_key_env="ORAPO_TEST_KEY", cache_path=cache, **FAST
        ) as labeler:
            labeler.label(REPORT)
            assert server.chat_requests()[-1].authorized
            shown = [
                repr(labeler),
                repr(labeler.client),
                str(labeler.summary()),
                str(labeler.summary().as_metrics()),
                caplog.text,
            ]
        monkeypatch.setenv("ORAPO_TEST_KEY", "sk-wrong-key-5678")
        with (
            LLMLabeler(
                "fake-facts", server.base_url, api_key_env="ORAPO_TEST_KEY", **FAST
            ) as wrong,
            pytest.raises(LLMConfigError) as info,
        ):
            wrong.label("Other report.")
        assert "ORAPO_TEST_KEY (currently set)" in str(info.value)
        shown.append(str(info.value))
    assert all(secret not in s and "sk-wrong" not in s for s in shown)
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes()


def test_azure_style_api_key_header(monkeypatch, server, make):
    monkeypatch.setenv("ORAPO_TEST_KEY", "azure-key")
    make(api_key_env="ORAPO_TEST_KEY", auth_header="api-key").label("No effusion.")
    # the fake server logs headers without secrets; the request carried no Bearer header
    headers = server.chat_requests()[-1].headers
    assert "authorization" not in headers and "api-key" not in headers


# -- hybrid -----------------------------------------------------------------------------------


def test_hybrid_asks_only_where_the_rule_labeler_is_unsure(server, make):
    labeler = make(hybrid=True)
    settled = "Mild cardiomegaly. No pneumothorax."
    hedged = "Possible left pleural effusion."
    silent = "Degenerative changes of the spine."
    rule = get_labeler("rule")
    assert rule.label(hedged)["Pleural Effusion"] == -1
    assert {v for k, v in rule.label(silent).items()} == {None}
    results = labeler.extract_batch([settled, hedged, silent])
    assert [r.source for r in results] == ["rule", "llm", "llm"]
    assert results[0].labels == rule.label(settled)
    assert results[1].labels == expected(hedged)[0]
    assert len(server.chat_requests()) == 2
    assert labeler.summary().rule_decided == 1


# -- concurrency, speed, cost -----------------------------------------------------------------


def test_concurrency_limit_is_respected():
    with FakeChatServer(latency=0.2) as server:
        with LLMLabeler("fake-facts", server.base_url, concurrency=3, **FAST) as labeler:
            start = time.monotonic()
            labeler.label_batch([f"Report {i}: small effusion." for i in range(12)])
            elapsed = time.monotonic() - start
        assert server.max_in_flight == 3
        assert len(server.chat_requests()) == 12
        assert elapsed < 12 * 0.2 * 0.75  # in parallel: about 4 rounds of 0.2 s, not 12


def test_token_and_cost_accounting(server, make):
    labeler = make(price_per_1k_input=0.5, price_per_1k_output=2.0)
    labeler.label_batch(["No effusion.", "Mild edema."])
    server.push_faults("wrong_schema")  # a failed answer's tokens are paid for too
    labeler.label("Small pneumothorax.")
    prompt_tokens = completion_tokens = 0
    for request in server.chat_requests():
        prompt_tokens += sum(len(m["content"].split()) for m in request.body["messages"])
    s = labeler.summary()
    assert s.prompt_tokens == prompt_tokens and s.requests == 4
    completion_tokens = s.completion_tokens
    assert completion_tokens > 0
    assert s.cost == pytest.approx((prompt_tokens * 0.5 + completion_tokens * 2.0) / 1000)
    metrics = s.as_metrics()
    assert metrics["llm/requests"] == 4.0 and metrics["llm/retry/bad_schema"] == 1.0
    labeler.reset_stats()
    assert labeler.summary().requests == 0


def test_httpx2_works_too(server, monkeypatch):
    httpx2 = pytest.importorskip("httpx2")
    import orapo.llm.client as client

    monkeypatch.setattr(client, "http_module", lambda: httpx2)
    with LLMLabeler("fake-facts", server.base_url, **FAST) as labeler:
        assert labeler.client._http is httpx2
        assert labeler.label(REPORT) == expected(REPORT)[0]
