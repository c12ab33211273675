"""The embedded demo base model: its chest question task (worked values and consistency with
the labeler), the build recipe on a tiny budget through the real command, where runs find a
base, and the shipped base against the defaults that claim it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest

from helpers import cli_runner
from orapo.basemodel import build
from orapo.basemodel.chest_vqa import (
    VqaSampler,
    answer,
    draw_pool,
    list_answer,
    load_vocab,
)
from orapo.basemodel.settings import BaseModelSettings
from orapo.labeler import RuleLabeler
from orapo.observations import NO_FINDING, OBSERVATIONS, POSITIVE
from orapo.train.config import SynthSettings


@pytest.fixture(scope="module")
def pool():
    return draw_pool(120, seed=7, profile="salient", size=56)


def test_vocab_covers_every_observation():
    vocab = load_vocab()
    assert set(vocab.questions) == set(OBSERVATIONS)
    assert NO_FINDING not in vocab.names
    assert vocab.prompt("Is there edema?").instruction == "Is there edema?"


def test_pool_states_match_the_reports(pool):
    """What a pool study says it shows is what its report states (read by the labeler)."""
    labeler = RuleLabeler()
    for study in pool:
        labels = labeler.label(study.report)
        stated = {o for o in OBSERVATIONS if labels.get(o) == POSITIVE}
        assert stated == set(study.positive), study.report
        assert not (study.positive & study.absent)


def test_report_answers_state_the_finding_asked_about(pool):
    """A yes answer in report wording states that finding positive; no answers state none."""
    vocab, labeler = load_vocab(), RuleLabeler()
    checked = Counter()
    for study in pool:
        for obs in study.positive:
            text = answer(study, obs, True, vocab, "report")
            assert text.startswith("Yes. ")
            assert labeler.label(text[len("Yes. ") :]).get(obs) == POSITIVE, text
            assert answer(study, obs, True, vocab, "plain") == "Yes."
            checked[obs] += 1
        assert answer(study, OBSERVATIONS[2], False, vocab, "report") == "No."
    assert len(checked) >= 5


def test_list_answer_worked_values(pool):
    vocab = load_vocab()
    normal = next(s for s in pool if NO_FINDING in s.positive)
    assert list_answer(normal, vocab) == "None."
    sick = next(s for s in pool if {"Cardiomegaly", "Pleural Effusion"} <= s.positive)
    text = list_answer(sick, vocab)
    assert text.startswith("Enlarged heart") and "pleural effusion" in text and text.endswith(".")


def test_sampler_is_balanced(pool):
    sampler = VqaSampler(pool, load_vocab(), mode="report", list_share=0.0)
    said = Counter()
    rng = np.random.default_rng(0)
    for _, _, text in sampler.batch(rng, 3000):
        said[text.startswith("Yes")] += 1
    assert abs(said[True] / 3000 - 0.5) < 0.04
    with pytest.raises(ValueError, match="answers: 'lay'"):
        VqaSampler(pool, load_vocab(), mode="lay")


def test_settings_reject_bad_choices():
    with pytest.raises(ValueError, match="base.answers: 'yesno' is not one of report, plain"):
        BaseModelSettings(answers="yesno")
    with pytest.raises(ValueError, match="base.profile"):
        BaseModelSettings(profile="subtle")


def test_the_pool_never_draws_the_demo_world():
    """The chest questions come from a world seed of their own, never the demo's studies."""
    settings = BaseModelSettings()
    assert settings.pool_seed != SynthSettings().seed
    assert settings.pool_seed + 1 != SynthSettings().seed  # the held-out VQA studies


@pytest.mark.slow
def test_build_base_command_on_a_tiny_budget(tmp_path, monkeypatch):
    """The real recipe, tiny: the command writes a complete base with its build record, and a
    run with the same settings finds it (cache first, then the shipped folder)."""
    from orapo.cli import app

    args = [
        "base.preset=tiny",
        "base.steps=4",
        "base.batch_size=4",
        "base.n_captions=20",
        "base.pool_size=40",
    ]
    result = cli_runner().invoke(
        app, ["model", "build-base", "--out", str(tmp_path / "built"), *args]
    )
    assert result.exit_code == 0, result.output
    settings = BaseModelSettings(
        preset="tiny", steps=4, batch_size=4, n_captions=20, pool_size=40, cache_dir="unused"
    )
    folder = tmp_path / "built" / f"base-{build.cache_key(settings)}"
    record = json.loads((folder / build.DONE_FILE).read_text())
    assert record["settings"]["steps"] == 4 and record["key"] == build.cache_key(settings)
    assert record["data"]["chest_pool"] == {
        "studies": 40,
        "seed": 1000,
        "profile": "salient",
        "answers": "report",
        "vocabulary": "chest_vqa_v1",
    }
    assert 0.0 <= record["vqa_balanced_accuracy"]["mean"] <= 1.0
    assert record["command"].startswith("orapo model build-base --out DIR base.preset=tiny")
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "orapo_model.json").read_text())["prompt"]["version"] == "report_v1"

    assert build.find_base_model(settings) is None  # neither cached nor shipped
    monkeypatch.setattr(build, "shipped_dir", lambda: tmp_path / "built")
    assert build.find_base_model(settings) == folder
    cached = BaseModelSettings(**{**asdict(settings), "cache_dir": str(tmp_path / "built")})
    assert build.ensure_base_model(cached, console=_Quiet()) == folder


@pytest.mark.slow
def test_the_build_is_seeded(tmp_path):
    """The same settings give the same weights (how the shipped base is reproduced)."""
    settings = BaseModelSettings(preset="tiny", steps=3, batch_size=4, n_captions=20, pool_size=30)
    from rich.console import Console

    quiet = Console(quiet=True)
    a = build.build_base_model(settings, tmp_path / "a", quiet)
    b = build.build_base_model(settings, tmp_path / "b", quiet)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_bad_override_fails_before_any_work(tmp_path):
    from orapo.cli import app

    result = cli_runner().invoke(
        app, ["model", "build-base", "--out", str(tmp_path), "base.answers=lay"]
    )
    assert result.exit_code == 1
    assert "base.answers: 'lay' is not one of report, plain" in result.output + str(
        getattr(result, "stderr", "")
    )
    assert not any(tmp_path.iterdir())


def test_shipped_base_matches_the_default_settings():
    """The base in the package is the one the defaults describe (rebuild it when they change:
    the command is in its record)."""
    found = build.find_base_model(BaseModelSettings(cache_dir="/nonexistent"))
    assert found is not None and found.parent == build.shipped_dir(), (
        "no shipped base for the default base.* settings; run "
        "`orapo model build-base --out src/orapo/basemodel/shipped`"
    )
    record = json.loads((found / build.DONE_FILE).read_text())
    assert record["key"] == build.cache_key(BaseModelSettings())
    assert record["settings"] == {**asdict(BaseModelSettings()), "cache_dir": "data/base-model"}
    assert record["vqa_balanced_accuracy"]["mean"] > 0.6


class _Quiet:
    def print(self, *args, **kwargs) -> None:
        pass
