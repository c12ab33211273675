"""orapo.rewards: worked values, an independent check of FactS against scikit-learn, failure
handling, the TRL calling convention and the registry. The labeler is a small fake."""

from __future__ import annotations

import math
import random
import re
import subprocess
import sys
import types

import pytest

import orapo.rewards
from orapo.observations import NO_FINDING, OBSERVATIONS, SUPPORT_DEVICES
from orapo.rewards import (
    REWARDS,
    BleuReward,
    Fact,
    FactOptions,
    FactsReward,
    RougeLReward,
    f_beta,
    label_facts,
    make_reward,
    precision_recall_f_beta,
    score_labels,
)


class FakeLabeler:
    """Keyword labeler: "no X" -> 0, "possible X" -> -1, "X" -> 1 (X an observation name).

    No Finding is left unset (FactS recomputes it by rule). Texts containing "CRASH" raise.
    """

    name = "fake"

    def __init__(self, batch_fails: bool = False) -> None:
        self.batch_fails = batch_fails
        self.batches: list[list[str]] = []

    def label(self, text: str) -> dict[str, int | None]:
        if "CRASH" in text:
            raise RuntimeError("labeler crashed")
        low = text.lower()
        out: dict[str, int | None] = {name: None for name in OBSERVATIONS}
        for name in OBSERVATIONS[1:]:
            word = name.lower()
            if f"no {word}" in low:
                out[name] = 0
            elif f"possible {word}" in low:
                out[name] = -1
            elif word in low:
                out[name] = 1
        return out

    def label_batch(self, texts):
        self.batches.append(list(texts))
        if self.batch_fails:
            raise RuntimeError("batch failed")
        return [self.label(t) for t in texts]


P, A, U = "present", "absent", "uncertain"


# -- F_beta over fact sets ------------------------------------------------------------------


def test_f_beta_worked():
    # P = 1/2, R = 1/3: F2 = 5 (1/6) / (4/2 + 1/3) = 5/14; F1 = (1/3) / (5/6) = 2/5
    pred, ref = {"a", "b"}, {"a", "c", "d"}
    assert precision_recall_f_beta(pred, ref) == pytest.approx((1 / 2, 1 / 3, 5 / 14))
    assert f_beta(pred, ref, beta=1.0) == pytest.approx(0.4)
    assert f_beta({"a"}, {"a"}) == 1.0
    assert f_beta({"a"}, {"b"}) == 0.0
    assert precision_recall_f_beta(set(), set()) == (1.0, 1.0, 1.0)
    assert precision_recall_f_beta({"a"}, set()) == (0.0, 0.0, 0.0)
    assert precision_recall_f_beta(set(), {"a"}) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="beta"):
        f_beta({"a"}, {"a"}, beta=0.0)


def test_f_beta_matches_sklearn_on_random_sets():
    from sklearn.metrics import fbeta_score, precision_score, recall_score

    rng = random.Random(0)
    universe = [Fact(o, s) for o in OBSERVATIONS for s in (P, A, U)]
    for _ in range(200):
        pred = {f for f in universe if rng.random() < 0.15}
        ref = {f for f in universe if rng.random() < 0.15}
        if not pred or not ref:
            continue
        y_true = [f in ref for f in universe]
        y_pred = [f in pred for f in universe]
        beta = rng.choice([1.0, 2.0, 3.0])
        ours = precision_recall_f_beta(pred, ref, beta)
        theirs = (
            precision_score(y_true, y_pred, zero_division=0),
            recall_score(y_true, y_pred, zero_division=0),
            fbeta_score(y_true, y_pred, beta=beta, zero_division=0),
        )
        assert ours == pytest.approx(theirs, abs=1e-9)


# -- what a fact is -------------------------------------------------------------------------

LABELS = {"Cardiomegaly": 1, "Pneumothorax": 0, "Edema": -1, SUPPORT_DEVICES: 1}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {("Cardiomegaly", P), ("Edema", P), (SUPPORT_DEVICES, P)}),
        (
            {"negatives": "strict"},
            {("Cardiomegaly", P), ("Edema", P), (SUPPORT_DEVICES, P), ("Pneumothorax", A)},
        ),
        ({"uncertain": "separate"}, {("Cardiomegaly", P), ("Edema", U), (SUPPORT_DEVICES, P)}),
        ({"uncertain": "ignore"}, {("Cardiomegaly", P), (SUPPORT_DEVICES, P)}),
        ({"uncertain": "negative"}, {("Cardiomegaly", P), (SUPPORT_DEVICES, P)}),
        (
            {"uncertain": "negative", "negatives": "strict"},
            {("Cardiomegaly", P), (SUPPORT_DEVICES, P), ("Pneumothorax", A), ("Edema", A)},
        ),
    ],
)
def test_label_facts_options(options, expected):
    assert label_facts(LABELS, FactOptions(**options)) == expected


def test_no_finding_modes():
    normal = {"Pneumothorax": 0, SUPPORT_DEVICES: 1}
    assert label_facts(normal) == {(NO_FINDING, P), (SUPPORT_DEVICES, P)}  # by CheXpert's rule
    assert label_facts(normal, FactOptions(no_finding="exclude")) == {(SUPPORT_DEVICES, P)}
    assert label_facts(normal, FactOptions(no_finding="labels")) == {(SUPPORT_DEVICES, P)}
    gold = {NO_FINDING: 1, "Cardiomegaly": 1}  # inconsistent gold: the rule overrides it
    assert label_facts(gold) == {("Cardiomegaly", P)}
    assert label_facts(gold, FactOptions(no_finding="labels")) == {
        (NO_FINDING, P),
        ("Cardiomegaly", P),
    }
    with pytest.raises(ValueError, match="valid values are: rule, labels, exclude"):
        FactOptions(no_finding="yes")


def test_negatives_strict_and_lenient():
    pred = {"Cardiomegaly": 1, "Edema": 0, "Pneumothorax": 0}
    ref = {"Cardiomegaly": 1, "Edema": 0}
    # strict: pred {C+, E-, Ptx-}, ref {C+, E-}: P = 2/3, R = 1, F2 = 5 (2/3) / (8/3 + 1) = 10/11
    strict = score_labels(pred, ref, FactOptions(negatives="strict"))
    assert strict.f_beta == pytest.approx(10 / 11) and strict.n_pred == 3 and strict.n_match == 2
    # lenient: Ptx- is about something the reference does not mention: dropped, F = 1
    assert score_labels(pred, ref, FactOptions(negatives="lenient")).f_beta == 1.0
    # ignore (default): {C+} against {C+}
    assert score_labels(pred, ref).f_beta == 1.0
    # a negative that contradicts a reference positive still costs precision under lenient
    contradiction = score_labels({"Edema": 0}, {"Edema": 1}, FactOptions(negatives="lenient"))
    assert contradiction.f_beta == 0.0


def independent_facts_f2(pred: dict, ref: dict) -> float:
    """Defaults transcribed independently: positives and uncertain count as present, negatives
    are not facts, No Finding by CheXpert's rule; F2 by scikit-learn over the 14 names."""
    from sklearn.metrics import fbeta_score

    def present(labels: dict) -> list[bool]:
        flags = {o: labels.get(o) in (1, -1) for o in OBSERVATIONS if o != NO_FINDING}
        abnormal = any(v for o, v in flags.items() if o != SUPPORT_DEVICES)
        return [not abnormal] + [flags[o] for o in OBSERVATIONS[1:]]

    y_pred, y_true = present(pred), present(ref)
    if not any(y_pred) and not any(y_true):
        return 1.0
    return float(fbeta_score(y_true, y_pred, beta=2.0, zero_division=0))


def test_facts_f_beta_matches_independent_check_on_random_labels():
    rng = random.Random(1)
    for _ in range(300):
        pred = {o: rng.choice([1, 0, -1, None, None]) for o in OBSERVATIONS[1:]}
        ref = {o: rng.choice([1, 0, -1, None, None, None]) for o in OBSERVATIONS[1:]}
        assert score_labels(pred, ref).f_beta == pytest.approx(
            independent_facts_f2(pred, ref), abs=1e-9
        )


# -- the FactS reward callable --------------------------------------------------------------

GOLD = {"Cardiomegaly": 1, "Pleural Effusion": 1}


def test_facts_reward_worked_batch():
    labeler = FakeLabeler()
    reward = FactsReward(labeler)
    completions = [
        "Cardiomegaly. No pneumothorax.",  # {C+} vs gold {C+, PE+}: P 1, R 1/2, F2 = 5/9
        "   ",  # empty generation: 0
        "Heart size normal.",  # the fake labeler finds nothing: no facts (orapo's No Finding
        # rule needs a mention), against the reference's No Finding: 0
        [{"role": "assistant", "content": "Cardiomegaly and pleural effusion."}],  # TRL chat form
        "Possible pleural effusion.",  # uncertain counts as present: {PE+}, F2 = 5/9 again
    ]
    scores = reward(
        completions,
        labels=[GOLD, GOLD, None, GOLD, GOLD],
        reference=["x", "x", "No acute disease. No pneumothorax.", "x", "x"],
        prompts=["p"] * 5,  # TRL passes more keywords: accepted, ignored
        trainer_state=None,
    )
    assert scores == pytest.approx([5 / 9, 0.0, 0.0, 1.0, 5 / 9])
    assert reward.failures == {}
    m = reward.metrics()
    assert m["reward/facts_f_beta"] == pytest.approx((5 / 9 * 2 + 1) / 5)
    assert m["reward/facts_precision"] == pytest.approx(3 / 5)  # no predicted facts: P = 0
    assert m["reward/facts_failed"] == 0.0
    # one labelling batch for the reference text, one for the distinct completions
    assert labeler.batches == [
        ["No acute disease. No pneumothorax."],
        [completions[0], completions[2], "Cardiomegaly and pleural effusion.", completions[4]],
    ]


def test_facts_reward_one_bad_sample_gets_none():
    labeler = FakeLabeler()
    reward = FactsReward(labeler)
    scores = reward(
        ["Cardiomegaly.", "CRASH", 42, "Edema.", "Edema.", "Edema."],
        labels=[GOLD, GOLD, GOLD, None, {"Cardio": 1}, {"Edema": 7}],
        reference=["x", "x", "x", None, "x", "x"],
    )
    assert scores == pytest.approx([5 / 9, None, None, None, None, None])
    assert reward.failures == {
        "labeler error": 1,
        "bad completion": 1,
        "no reference": 1,
        "bad gold labels": 2,
    }
    assert reward.metrics()["reward/facts_failed"] == 5.0
    # the failing batch was retried text by text, so the good sample still got its score
    assert labeler.batches == [["Cardiomegaly.", "CRASH"]]


def test_facts_reward_survives_a_failing_label_batch():
    reward = FactsReward(FakeLabeler(batch_fails=True))
    assert reward(["Edema."], labels=[{"Edema": 1}]) == [1.0]


def test_facts_reward_caches_reference_labels():
    labeler = FakeLabeler()
    reward = FactsReward(labeler, cache_size=1)
    ref = "Small pleural effusion."
    reward(["Pleural effusion."] * 4, reference=[ref] * 4)  # K = 4 rollouts, one reference
    reward(["Edema."] * 4, reference=[ref] * 4)
    assert [b for b in labeler.batches if ref in b] == [[ref]]
    reward(["Edema."], reference=["Edema."])  # evicts ref (cache_size=1)
    reward(["Edema."], reference=[ref])
    assert [b for b in labeler.batches if ref in b] == [[ref], [ref]]


def test_facts_reward_rejects_columns_of_the_wrong_length():
    with pytest.raises(ValueError, match="column 'reference' must be a list with one entry"):
        FactsReward(FakeLabeler())(["a", "b"], reference=["only one"])


@pytest.fixture
def labeler_calls(monkeypatch) -> list:
    """``orapo.labeler.get_labeler`` replaced by one that records (name, options) and returns a
    FakeLabeler; the list of calls."""
    calls = []

    def get_labeler(name="rule", **options):
        calls.append((name, options))
        return FakeLabeler()

    monkeypatch.setitem(
        sys.modules, "orapo.labeler", types.SimpleNamespace(get_labeler=get_labeler)
    )
    return calls


def test_facts_reward_loads_the_labeler_lazily(labeler_calls):
    calls = labeler_calls
    reward = make_reward("facts", labeler_name="rule", labeler_options={"strict": True}, beta=1.0)
    assert calls == [("rule", {"strict": True})]
    assert reward(["Edema."], labels=[{"Edema": 1, "Cardiomegaly": 1}]) == pytest.approx([2 / 3])


def test_rewards_package_imports_without_the_labeler():
    code = "import sys, orapo.rewards; assert 'orapo.labeler' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rewards_follow_trl_naming():
    from trl.trainer.utils import get_callable_name

    assert get_callable_name(FactsReward(FakeLabeler())) == "facts"
    assert get_callable_name(make_reward("bleu")) == "bleu"
    assert get_callable_name(make_reward("rouge_l")) == "rouge_l"


# -- text similarity ------------------------------------------------------------------------


def test_bleu_worked():
    bleu = BleuReward()
    # all n-gram precisions 1; hypothesis 4 tokens, reference 5: BP = exp(1 - 5/4)
    hyp, ref = "The heart is normal", "the heart is normal."
    assert bleu([hyp], reference=[ref]) == pytest.approx([math.exp(-0.25)])
    # p1 = 3/4, p2 = 1/3, p3 = 0 -> 0.1/2, p4 = 0 -> 0.1/1 (method1's epsilon); BP = 1
    expected = (0.75 * (1 / 3) * 0.05 * 0.1) ** 0.25
    assert bleu(["a b c d"], reference=["a b x d"]) == pytest.approx([expected])
    assert bleu([ref], reference=[ref]) == pytest.approx([1.0])
    assert bleu([""], reference=[ref]) == [0.0]
    assert bleu(["x"], reference=[None]) == [None] and bleu.failures == {"no reference": 1}
    with pytest.raises(ValueError, match="method0"):
        BleuReward(smoothing="laplace")


def test_rouge_l_worked():
    rouge = RougeLReward()
    # The full stop is a token: LCS 3 of 3 predicted and 5 reference tokens: P 1, R 3/5, F 3/4
    ref = "No acute cardiopulmonary findings."
    assert rouge(["no acute findings"], reference=[ref]) == pytest.approx([3 / 4])
    # reversed order: LCS 1 of 3 and 3 -> F 1/3
    assert rouge(["findings acute no"], reference=["no acute findings"]) == pytest.approx([1 / 3])
    assert rouge(["  "], reference=[ref]) == [0.0]


def test_rouge_l_reward_is_the_rouge_l_metric():
    """One tokenisation: the reward of a report is its ROUGE-L metric, case and punctuation
    read the same way (LCS 3 of 3 and 4 tokens, the full stop being one: F 6/7)."""
    from orapo.metrics.text import rouge_l, tokenize

    hyps = ["no acute findings", "Heart size normal, no effusion.", "x"]
    refs = ["No acute findings.", "heart size is normal. No effusion.", "Mild edema."]
    rewards = RougeLReward()(hyps, reference=refs)
    for hyp, ref, reward in zip(hyps, refs, rewards, strict=True):
        assert reward == pytest.approx(rouge_l([hyp], [ref]), abs=1e-12)
    assert rewards[0] == pytest.approx(6 / 7)
    assert tokenize is orapo.rewards.tokenize  # one tokenizer, one name


def test_registry():
    assert REWARDS.names() == ["bleu", "facts", "rouge_l"]
    with pytest.raises(KeyError, match="valid names are: bleu, facts, rouge_l"):
        make_reward("chexbert")
    reward = make_reward("facts", labeler=FakeLabeler(), negatives="strict")
    assert reward.options == FactOptions(negatives="strict")


@pytest.mark.parametrize("module", ["orapo.rewards", "orapo.rewards.facts"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


# -- FactS with the LLM extractor -----------------------------------------------------------


class FailingLLMLabeler(FakeLabeler):
    """label_batch raises orapo.llm.LLMError, as LLMLabeler(fallback=False) does when the
    model gave up on some report; label() would also work, and is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.single: list[str] = []

    def label(self, text):
        self.single.append(text)
        return super().label(text)

    def label_batch(self, texts):
        from orapo.llm import LLMError

        self.batches.append(list(texts))
        raise LLMError("timeout", "2 of 2 reports could not be labelled; fallback is off")


def test_facts_reward_fails_an_llm_error_batch_without_retrying_one_by_one():
    labeler = FailingLLMLabeler()
    reward = FactsReward(labeler)
    scores = reward(["Edema.", "Cardiomegaly.", "Edema."], labels=[{"Edema": 1}] * 3)
    assert scores == [None, None, None]
    assert reward.failures == {"llm error": 3}
    assert labeler.batches == [["Edema.", "Cardiomegaly."]] and labeler.single == []
    assert reward.metrics()["reward/facts_failed"] == 3.0
    # references labelled through the same path fail the same way, without per-text calls
    assert reward(["Edema."], reference=["Mild edema."]) == [None]
    assert labeler.single == [] and reward.failures == {"llm error": 4}


def test_facts_reward_with_a_failing_llm_server_waits_one_deadline_not_one_per_text():
    import time

    from orapo.llm import LLMLabeler
    from orapo.llm.fake_server import FakeChatServer

    texts = [f"Mild edema, case {i}. [fault:timeout]" for i in range(4)]
    with (
        FakeChatServer(hang_seconds=30.0) as server,
        LLMLabeler(
            "fake-facts", server.base_url, fallback=False, timeout=0.5, deadline=0.8,
            concurrency=4, breaker_threshold=0, trust_env=False,
        ) as labeler,
    ):  # fmt: skip
        reward = FactsReward(labeler)
        start = time.monotonic()
        scores = reward(texts, labels=[{"Edema": 1}] * 4)
        elapsed = time.monotonic() - start
        asked = {r.body["messages"][-1]["content"] for r in server.chat_requests()}
    assert scores == [None] * 4 and reward.failures == {"llm error": 4}
    # one batch: about one deadline (0.8 s); one by one after it would add 4 x 0.8 s
    assert elapsed < 2.0, elapsed
    assert len(asked) == 4


RECIPE_SNIPPET = re.compile(r"```yaml\n(algorithm:\n  reward: facts\n.*?)```", re.S)


def test_recipe_snippet_in_docs_builds_an_llm_facts_reward(tmp_path):
    from pathlib import Path

    from orapo.llm import LLMLabeler
    from orapo.llm.fake_server import FakeChatServer
    from orapo.train.run import load_train_config

    docs = Path(__file__).resolve().parents[1] / "docs" / "llm.md"
    snippet = RECIPE_SNIPPET.search(docs.read_text(encoding="utf-8"))
    assert snippet is not None, "docs/llm.md lost its reward_options YAML example"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(snippet.group(1))
    with FakeChatServer() as server:
        prefix = "algorithm.reward_options.labeler_options"
        cfg, _ = load_train_config(
            recipe,
            [
                f"{prefix}.base_url={server.base_url}",
                f"{prefix}.model=fake-facts",
                f"{prefix}.cache_path={tmp_path / 'c.sqlite'}",
            ],
            tmp_path / "run",
            None,
        )
        a = cfg.algorithm
        assert a.reward_options["labeler_name"] == "llm"
        reward = make_reward(a.reward, **a.reward_options)
        try:
            assert isinstance(reward.labeler, LLMLabeler) and reward.labeler.model == "fake-facts"
            assert reward.labeler.fallback and reward.labeler.concurrency == 16
            scores = reward(
                ["Mild cardiomegaly. No effusion.", "No effusion."],
                reference=["Moderate cardiomegaly. Small left pleural effusion."] * 2,
            )
            # fake model: ref facts {Cardiomegaly, Pleural Effusion}; F_2 = 5PR / (4P + R)
            assert scores == pytest.approx([5 * 1 * 0.5 / (4 * 1 + 0.5), 0.0])
            assert len(server.chat_requests()) == 3
        finally:
            reward.labeler.close()


def test_facts_reward_takes_a_labeler_name_as_labeler(labeler_calls):
    calls = labeler_calls
    make_reward("facts", labeler="hybrid", labeler_options={"model": "m"})
    assert calls == [("hybrid", {"model": "m"})]
    with pytest.raises(ValueError, match="disagree"):
        make_reward("facts", labeler="llm", labeler_name="hybrid")
