"""Worked values for the pure parts of orapo.llm: JSON repair, schema, entailment, prompt,
cache key, retry policy, circuit breaker. No network."""

from __future__ import annotations

import json

import pytest

from orapo.llm import (
    AtomicFact,
    AttemptError,
    CircuitBreaker,
    LLMConfigError,
    LLMError,
    ParseError,
    RetryPolicy,
    cache_key,
    call_with_retries,
    facts_from_labels,
    facts_to_labels,
    load_prompt,
    normalize_report,
    parse_answer,
    parse_json,
    validate_facts,
)
from orapo.llm.client import parse_retry_after
from orapo.llm.facts import map_observation, map_state
from orapo.observations import OBSERVATIONS

GOOD = {"facts": [{"fact": "no effusion", "observation": "Pleural Effusion", "state": "absent"}]}

# -- JSON repair ------------------------------------------------------------------------------


def test_valid_json_needs_no_repair():
    assert parse_json(json.dumps(GOOD)) == (GOOD, [])


@pytest.mark.parametrize(
    ("text", "value", "repairs"),
    [
        ("```json\n" + json.dumps(GOOD) + "\n```", GOOD, ["code_fence"]),
        ("```\n" + json.dumps(GOOD), GOOD, ["code_fence"]),  # fence never closed
        (
            "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```\nAnything else?",
            GOOD,
            ["code_fence", "leading_text"],
        ),
        ("Facts: " + json.dumps(GOOD), GOOD, ["leading_text"]),
        (json.dumps(GOOD) + " Done.", GOOD, ["trailing_text"]),
        ('{"a": [1, 2,], "b": 3,}', {"a": [1, 2], "b": 3}, ["trailing_comma"]),
        ("{'a': 'x', 'b': ['y']}", {"a": "x", "b": ["y"]}, ["single_quotes"]),
        ("{'a': 'the patient's heart'}", {"a": "the patient's heart"}, ["single_quotes"]),
        ("{'a': 'say \"hi\"'}", {"a": 'say "hi"'}, ["single_quotes"]),
        (
            '{"facts": [{"a": 1}, {"b": 2}, {"c": "tru',
            {"facts": [{"a": 1}, {"b": 2}]},
            ["truncated"],
        ),
        ('{"facts": [{"a": 1}, {"b": 2}', {"facts": [{"a": 1}, {"b": 2}]}, ["truncated"]),
        ('{"facts": [{"a": 1}, {"b": 2},', {"facts": [{"a": 1}, {"b": 2}]}, ["truncated"]),
        ('{"facts": [{"a": 1', {"facts": []}, ["truncated"]),
        ('{"facts": [', {"facts": []}, ["truncated"]),
        ('{"a": "line\nbreak"}', {"a": "line\nbreak"}, []),  # raw control character
    ],
)
def test_repairs(text, value, repairs):
    assert parse_json(text) == (value, repairs)


def test_combined_repairs_doctest_value():
    text = "```json\n{'facts': [{'fact': 'no effusion',},]}\n```"
    assert parse_json(text) == (
        {"facts": [{"fact": "no effusion"}]},
        ["code_fence", "single_quotes", "trailing_comma"],
    )


@pytest.mark.parametrize(
    "text",
    ["", "   ", "Sure! The report is normal.", '{"facts": [1, 2]]', '{"fac', '{"a": tru}'],
)
def test_unrepairable_json_is_bad_json(text):
    with pytest.raises(ParseError) as info:
        parse_json(text)
    assert info.value.reason == "bad_json"


# -- schema -----------------------------------------------------------------------------------


def test_validate_maps_facts_and_keeps_raw():
    parsed = validate_facts(
        {
            "facts": [
                {"fact": " mild cardiomegaly ", "observation": "cardiomegaly", "state": "Present"},
                {"fact": "effusion", "observation": "pleural effusions", "state": "uncertain"},
                {"fact": "hernia", "observation": "Hiatal hernia", "state": "present", "extra": 1},
                {"fact": "spine", "observation": "Other", "state": "present"},
            ]
        }
    )
    assert parsed.facts == (
        AtomicFact("mild cardiomegaly", "Cardiomegaly", 1),
        AtomicFact("effusion", "Pleural Effusion", -1),
        AtomicFact("hernia", None, 1),
        AtomicFact("spine", None, 1),
    )
    assert parsed.unmapped == ("Hiatal hernia",)  # "Other" is a name, not unmapped
    assert parsed.raw[2] == {"fact": "hernia", "observation": "Hiatal hernia", "state": "present"}
    assert parsed.repairs == ()


def test_bare_array_is_accepted_and_reported():
    parsed = validate_facts(GOOD["facts"])
    assert parsed.repairs == ("bare_array",)
    assert parsed.facts == (AtomicFact("no effusion", "Pleural Effusion", 0),)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"findings": []}, "no 'facts' key (keys: 'findings')"),
        ({"facts": {}}, "facts: expected a list, got dict"),
        ("facts", "expected an object, got str"),
        ({"facts": ["x"]}, "facts[0]: expected an object, got str"),
        ({"facts": [{"fact": "a", "state": "present"}]}, "facts[0]: missing key 'observation'"),
        (
            {"facts": [{"fact": 1, "observation": "Edema", "state": "present"}]},
            "facts[0].fact: expected a string, got int",
        ),
        (
            {"facts": [GOOD["facts"][0], {"fact": "a", "observation": "Edema", "state": "maybe"}]},
            "facts[1].state: 'maybe' is not one of present, absent, uncertain",
        ),
    ],
)
def test_schema_errors_name_the_path(data, message):
    with pytest.raises(ParseError) as info:
        validate_facts(data)
    assert info.value.reason == "bad_schema"
    assert message in str(info.value)


def test_parse_answer_joins_json_and_shape_repairs():
    parsed = parse_answer("```json\n" + json.dumps(GOOD["facts"]) + "\n```")
    assert parsed.repairs == ("code_fence", "bare_array")


# -- entailment -------------------------------------------------------------------------------


def test_map_observation_and_state():
    assert map_observation("  Pleural   Effusion. ") == ("Pleural Effusion", True)
    assert map_observation("ENLARGED HEART") == ("Cardiomegaly", True)
    assert map_observation("other") == (None, True)
    assert map_observation("hiatal hernia") == (None, False)
    assert [map_state(w) for w in ("present", "ABSENT", "possible", "no", "maybe")] == [
        1,
        0,
        -1,
        0,
        None,
    ]


def test_aggregation_positive_beats_uncertain_beats_negative():
    facts = [
        AtomicFact("no effusion", "Pleural Effusion", 0),
        AtomicFact("possible effusion", "Pleural Effusion", -1),
        AtomicFact("possible edema", "Edema", -1),
        AtomicFact("no edema", "Edema", 0),
        AtomicFact("no pneumothorax", "Pneumothorax", 0),
        AtomicFact("left effusion", "Pleural Effusion", 1),
    ]
    labels = facts_to_labels(facts)
    assert labels["Pleural Effusion"] == 1
    assert labels["Edema"] == -1
    assert labels["Pneumothorax"] == 0
    assert labels["No Finding"] is None  # something is positive
    assert set(labels) == set(OBSERVATIONS)


def test_no_finding_rules():
    normal = AtomicFact("normal chest radiograph", "No Finding", 1)
    # a global-normal statement alone gives No Finding = 1
    assert facts_to_labels([normal])["No Finding"] == 1
    # only negatives: the CheXpert rule gives No Finding = 1
    assert facts_to_labels([AtomicFact("no effusion", "Pleural Effusion", 0)])["No Finding"] == 1
    # support devices do not break No Finding
    devices = AtomicFact("ET tube", "Support Devices", 1)
    assert facts_to_labels([normal, devices])["No Finding"] == 1
    # a global-normal statement loses to a positive finding
    assert facts_to_labels([normal, AtomicFact("edema", "Edema", 1)])["No Finding"] is None
    # No Finding absent / uncertain facts never label; nothing else: nothing mentioned
    assert facts_to_labels([AtomicFact("abnormal", "No Finding", 0)])["No Finding"] is None
    # only "Other" facts: the report says nothing about the 14 -> all None
    assert set(facts_to_labels([AtomicFact("spine", None, 1)]).values()) == {None}
    assert set(facts_to_labels([]).values()) == {None}


def test_facts_from_labels():
    facts = facts_from_labels({"No Finding": 1, "Pneumothorax": 0, "Edema": None})
    assert facts == [
        AtomicFact("No Finding: present", "No Finding", 1, "rule"),
        AtomicFact("Pneumothorax: absent", "Pneumothorax", 0, "rule"),
    ]
    assert facts_to_labels(facts) == {
        **dict.fromkeys(OBSERVATIONS),
        "No Finding": 1,
        "Pneumothorax": 0,
    }


# -- prompt -----------------------------------------------------------------------------------


def test_prompt_file_is_consistent():
    prompt = load_prompt()
    assert prompt.version == "facts-v1"
    assert prompt.id.startswith("facts-v1:") and len(prompt.id) == len("facts-v1:") + 12
    # the few-shot answers pass our own schema and the schema's enum is the 14 names + Other
    for example in prompt.examples:
        validate_facts({"facts": example["facts"]})
    enum = prompt.schema["properties"]["facts"]["items"]["properties"]["observation"]["enum"]
    assert enum == [*OBSERVATIONS, "Other"]
    messages = prompt.messages("Mild {cardiomegaly}.")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * len(
        prompt.examples
    ) + ["user"]
    assert messages[-1]["content"].endswith("Report:\nMild {cardiomegaly}.\n")
    assert prompt.response_format("json_schema")["json_schema"]["strict"] is True
    assert prompt.response_format("json_object") == {"type": "json_object"}
    assert prompt.response_format("none") is None


def test_prompt_errors_name_file_and_field(tmp_path):
    with pytest.raises(ValueError, match="unknown prompt 'nope'; valid names are: facts-v1"):
        load_prompt("nope")
    bad = tmp_path / "p.yaml"
    bad.write_text("version: x\nsystem: s\nuser_template: no field\nexamples: []\nschema: {}\n")
    with pytest.raises(ValueError, match=r"p.yaml: field 'user_template' must contain \{report\}"):
        load_prompt(bad)
    bad.write_text("version: 3\n")
    with pytest.raises(ValueError, match="field 'version' must be a str"):
        load_prompt(bad)


def test_prompt_digest_changes_with_content(tmp_path):
    text = load_prompt().path.read_text()
    copy = tmp_path / "copy.yaml"
    copy.write_text(text)
    same = load_prompt(copy)
    copy.write_text(text + "\n# an edit\n")
    assert same.id == load_prompt().id != load_prompt(copy).id


# -- cache key --------------------------------------------------------------------------------


def test_normalize_and_key():
    assert normalize_report("  No\teffusion.\n\n Mild  cardiomegaly. ") == (
        "No effusion. Mild cardiomegaly."
    )
    assert normalize_report("Cafe\u0301") == "Caf\u00e9"  # NFC
    k = cache_key("m", "facts-v1:abc", "No effusion.")
    assert k == cache_key("m", "facts-v1:abc", "No effusion.")
    assert (
        len(
            {
                k,
                cache_key("m2", "facts-v1:abc", "No effusion."),
                cache_key("m", "facts-v2:abc", "No effusion."),
                cache_key("m", "facts-v1:abc", "no effusion."),
            }
        )
        == 4
    )


# -- retries ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def failing(*errors: AttemptError | str, clock: FakeClock | None = None, cost: float = 0.0):
    """An attempt function raising ``errors`` in turn, then returning "ok"."""
    queue = list(errors)
    seen: list[float] = []

    def attempt(left: float) -> str:
        seen.append(left)
        if clock is not None:
            clock.t += cost
        if queue:
            raise queue.pop(0)
        return "ok"

    attempt.seen = seen  # type: ignore[attr-defined]
    return attempt


def test_backoff_schedule_then_success():
    clock = FakeClock()
    errors = [AttemptError("server_error", "HTTP 500") for _ in range(3)]
    retried: list[str] = []
    result = call_with_retries(
        failing(*errors),
        RetryPolicy(max_retries=4, deadline=100, backoff=0.5, backoff_max=1.5),
        on_retry=lambda e: retried.append(e.reason),
        clock=clock,
        sleep=clock.sleep,
        rng=lambda: 0.0,
    )
    assert result == ("ok", 4)
    assert clock.sleeps == [0.5, 1.0, 1.5]
    assert retried == ["server_error"] * 3


def test_jitter_stretches_the_wait():
    assert RetryPolicy(backoff=1.0, jitter=0.5).delay(2, None, u=0.5) == 2.0 * 1.25


def test_retry_after_is_honoured_exactly():
    clock = FakeClock()
    call_with_retries(
        failing(AttemptError("rate_limited", "429", retry_after=3.0)),
        RetryPolicy(backoff=0.1),
        clock=clock,
        sleep=clock.sleep,
    )
    assert clock.sleeps == [3.0]


def test_max_retries_bounds_attempts():
    clock = FakeClock()
    attempt = failing(*[AttemptError("timeout", "slow") for _ in range(10)])
    with pytest.raises(LLMError) as info:
        call_with_retries(
            attempt, RetryPolicy(max_retries=2, backoff=0.0), clock=clock, sleep=clock.sleep
        )
    assert info.value.reason == "timeout" and info.value.attempts == 3
    assert "max_retries=2" in str(info.value)


def test_deadline_bounds_total_time_and_cuts_attempt_time():
    clock = FakeClock()
    attempt = failing(*[AttemptError("timeout", "slow") for _ in range(10)], clock=clock, cost=2.0)
    with pytest.raises(LLMError) as info:
        call_with_retries(
            attempt,
            RetryPolicy(max_retries=50, deadline=7.0, backoff=1.0, jitter=0.0),
            clock=clock,
            sleep=clock.sleep,
        )
    # attempts at t=0 (2 s), wait 1, t=3 (2 s), wait 2, t=7 would end at the deadline: stop
    assert attempt.seen == [7.0, 4.0]
    assert clock.t == 5.0 <= 7.0
    assert "deadline of 7 s" in str(info.value)


def test_retry_after_past_the_deadline_fails_at_once():
    clock = FakeClock()
    with pytest.raises(LLMError) as info:
        call_with_retries(
            failing(AttemptError("rate_limited", "429", retry_after=120.0)),
            RetryPolicy(deadline=10.0),
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.sleeps == [] and info.value.reason == "rate_limited"


def test_not_retryable_and_config_errors():
    clock = FakeClock()
    with pytest.raises(LLMError) as info:
        call_with_retries(
            failing(AttemptError("client_error", "HTTP 400")),
            RetryPolicy(),
            clock=clock,
            sleep=clock.sleep,
        )
    assert info.value.attempts == 1 and "not retried" in str(info.value)

    def config(left: float) -> str:
        raise LLMConfigError("config", "HTTP 401")

    with pytest.raises(LLMConfigError):
        call_with_retries(config, RetryPolicy(), clock=clock, sleep=clock.sleep)


def test_retry_policy_rejects_bad_values():
    with pytest.raises(ValueError, match="deadline must be > 0"):
        RetryPolicy(deadline=0)
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        RetryPolicy(max_retries=-1)


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "20", "retry-after": "9"}) == 0.02
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_circuit_breaker_opens_and_recovers():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10.0, clock=clock)
    breaker.record(False, "bad_json")  # a report fault does not count
    breaker.record(False, "connection")
    assert breaker.allow()
    breaker.record(False, "timeout")
    assert not breaker.allow()
    clock.t = 10.0
    assert breaker.allow()
    breaker.record(False, "connection")  # still failing: open again at once
    assert not breaker.allow()
    clock.t = 20.0
    breaker.record(True)
    breaker.record(False, "connection")
    assert breaker.allow()
    assert CircuitBreaker(0, 1.0).allow()


def test_alias_file_errors(tmp_path):
    from orapo.llm.facts import load_aliases

    bad = tmp_path / "aliases.yaml"
    bad.write_text("observations: {}\nstates: {absent: [no]}\n")
    with pytest.raises(ValueError, match="states: absent: False is not a string"):
        load_aliases(bad)
    bad.write_text("observations: {Heart: [big heart]}\n")
    with pytest.raises(ValueError, match="unknown observation 'Heart'"):
        load_aliases(bad)
    bad.write_text("observations: {Edema: [fluid], Pleural Effusion: [fluid]}\n")
    with pytest.raises(ValueError, match="'fluid' is listed under 'Edema' and 'Pleural Effusion'"):
        load_aliases(bad)
