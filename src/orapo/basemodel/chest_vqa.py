"""Chest visual question answering: the demo base model's chest task, with no report in it.

The paper's base (Qwen2.5-VL-3B) has seen many images, some medical, but was never tuned to
write these reports; RL on 1,000 studies *elicits* what it latently knows. The embedded base
gets that latent knowledge here: it is asked questions about chest radiographs of a pool of
synthetic studies drawn with a seed of their own (never the demo's studies), one question per
image, and never shown a report for an image.

* Per observation (``chest_vqa_v1.yaml``): "Is there a pleural effusion?", answered yes when
  the pool study states the finding positive and no when it is absent (hedged studies are not
  asked), balanced yes/no, the observation drawn uniformly.
* The list question ("Which abnormalities does this radiograph show?"), answered with the
  vocabulary's names of the positive findings, or "None.".

Answer wordings (``answers``):

* ``report``: "Yes." followed by the study's own report sentence(s) for the finding ("Yes.
  There is a large left pleural effusion."; for a normal study its impression), "No." for no.
  The base then knows the report's words for what it sees, one finding at a time.
* ``plain``: "Yes." / "No." and nothing else: what it sees is tied only to the question.

>>> vocab = load_vocab()
>>> vocab.questions["Pleural Effusion"]
'Is there a pleural effusion?'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from orapo.basemodel.settings import ANSWER_MODES
from orapo.config_io import check_choice
from orapo.model.prompt import ReportPrompt
from orapo.observations import NO_FINDING, OBSERVATIONS, POSITIVE


class VocabError(ValueError):
    """A chest VQA vocabulary file that cannot be used (the message names the field)."""


@dataclass(frozen=True)
class VqaVocab:
    """Validated contents of ``chest_vqa_v1.yaml``."""

    version: str
    questions: dict[str, str]
    list_question: str
    list_none: str
    names: dict[str, str]
    plain_yes: str
    plain_no: str

    def prompt(self, question: str) -> ReportPrompt:
        """The chat prompt that asks ``question`` about the image."""
        return ReportPrompt(version=self.version, instruction=question)


@lru_cache(maxsize=4)
def load_vocab(path: str | None = None) -> VqaVocab:
    """The packaged vocabulary, or a YAML file of the same shape."""
    if path is None:
        text = (resources.files("orapo.basemodel") / "chest_vqa_v1.yaml").read_text("utf-8")
        where = "orapo/basemodel/chest_vqa_v1.yaml"
    else:
        with open(path, encoding="utf-8") as fh:
            text, where = fh.read(), path
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise VocabError(f"{where}: expected a mapping")
    try:
        questions, names = dict(raw["questions"]), dict(raw["names"])
        vocab = VqaVocab(
            version=str(raw["version"]),
            questions=questions,
            list_question=str(raw["list_question"]),
            list_none=str(raw["list_none"]),
            names=names,
            plain_yes=str(raw["plain_yes"]),
            plain_no=str(raw["plain_no"]),
        )
    except KeyError as err:
        raise VocabError(f"{where}: missing field {err.args[0]!r}") from None
    if set(questions) != set(OBSERVATIONS):
        raise VocabError(f"{where}: questions must name exactly the 14 observations")
    if set(names) != set(OBSERVATIONS) - {NO_FINDING}:
        raise VocabError(f"{where}: names must cover the 13 findings (not {NO_FINDING!r})")
    return vocab


@dataclass(frozen=True)
class PoolStudy:
    """One pool study as the chest task sees it: the image and what its report states."""

    image: Any  # PIL image
    positive: frozenset[str]  # observations stated positive (No Finding included)
    absent: frozenset[str]  # observations neither positive nor hedged
    sentences: dict[str, str]  # observation -> its report sentence(s) stating it positive
    report: str  # the whole report: only the tokenizer reads it, never paired with the image


def draw_pool(n: int, seed: int, profile: str, size: int) -> list[PoolStudy]:
    """``n`` synthetic studies of world ``profile`` drawn with ``seed``, in memory."""
    from PIL import Image

    from orapo.synth.generate import make_study, study_rngs
    from orapo.synth.report import write_report_sentences

    pool = []
    for i in range(n):
        s = make_study(seed, i, size, profile=profile)
        # The report rng drawn afresh gives the very sentences of the study's report.
        findings, impression = write_report_sentences(s.spec, study_rngs(seed, i)[2])
        sentences: dict[str, list[str]] = {}
        for part in (findings, impression):  # the FINDINGS sentence, else the IMPRESSION's
            stated_here: dict[str, list[str]] = {}
            for written in part:
                for name, state in written.labels.items():
                    if state == POSITIVE and name not in sentences:
                        stated_here.setdefault(name, []).append(written.text)
            sentences.update(stated_here)
        if s.labels.get(NO_FINDING) == POSITIVE:
            sentences[NO_FINDING] = [" ".join(w.text for w in impression)]
        positive = {o for o in OBSERVATIONS if s.labels.get(o) == POSITIVE}
        hedged = {o for o in OBSERVATIONS if s.labels.get(o) == -1} | {
            f.name for f in s.spec.findings if f.hedged
        }
        pool.append(
            PoolStudy(
                image=Image.fromarray(s.image).convert("RGB"),
                positive=frozenset(positive),
                absent=frozenset(set(OBSERVATIONS) - positive - hedged),
                sentences={k: " ".join(dict.fromkeys(v)) for k, v in sentences.items()},
                report=f"{s.findings} {s.impression}".strip(),
            )
        )
    return pool


def answer(study: PoolStudy, observation: str, yes: bool, vocab: VqaVocab, mode: str) -> str:
    """The answer to ``observation``'s question about ``study`` in wording ``mode``."""
    if not yes:
        return vocab.plain_no
    if mode == "plain" or observation not in study.sentences:
        return vocab.plain_yes
    return f"{vocab.plain_yes} {study.sentences[observation]}"


def list_answer(study: PoolStudy, vocab: VqaVocab) -> str:
    """The list question's answer: the positive findings' names, in the canonical order."""
    found = [vocab.names[o] for o in OBSERVATIONS if o in study.positive and o != NO_FINDING]
    if not found:
        return vocab.list_none
    text = ", ".join(found)
    return text[:1].upper() + text[1:] + "."


@dataclass
class VqaSampler:
    """Draws balanced chest VQA examples from a pool: (image, prompt, answer) triples."""

    pool: Sequence[PoolStudy]
    vocab: VqaVocab
    mode: str = "report"
    list_share: float = 0.15

    def __post_init__(self) -> None:
        check_choice("answers", self.mode, ANSWER_MODES)
        self.yes = {
            o: [i for i, s in enumerate(self.pool) if o in s.positive] for o in OBSERVATIONS
        }
        self.no = {o: [i for i, s in enumerate(self.pool) if o in s.absent] for o in OBSERVATIONS}
        #: observations that can be asked both ways in this pool
        self.asked = [o for o in OBSERVATIONS if self.yes[o] and self.no[o]]
        if not self.asked:
            raise ValueError("the chest VQA pool is too small: no observation has yes and no")

    def example(self, rng: np.random.Generator) -> tuple[Any, ReportPrompt, str]:
        if rng.random() < self.list_share:
            study = self.pool[int(rng.integers(len(self.pool)))]
            return (
                study.image,
                self.vocab.prompt(self.vocab.list_question),
                list_answer(study, self.vocab),
            )
        observation = self.asked[int(rng.integers(len(self.asked)))]
        yes = bool(rng.random() < 0.5)
        index = self.yes[observation] if yes else self.no[observation]
        study = self.pool[index[int(rng.integers(len(index)))]]
        question = self.vocab.prompt(self.vocab.questions[observation])
        return study.image, question, answer(study, observation, yes, self.vocab, self.mode)

    def batch(self, rng: np.random.Generator, size: int) -> list[tuple[Any, ReportPrompt, str]]:
        return [self.example(rng) for _ in range(size)]


def vqa_accuracy(
    policy, pool: Sequence[PoolStudy], vocab: VqaVocab, per_class: int = 40, batch_size: int = 64
) -> dict[str, float]:
    """Held-out balanced accuracy per observation: greedy answers read as yes or no.

    Up to ``per_class`` yes-studies and ``per_class`` no-studies per observation (those the
    pool has both of); an answer counts as yes when it starts with the vocabulary's yes word.
    Returns ``{observation: balanced accuracy}`` and ``"mean"`` over them.
    """
    yes_word = vocab.plain_yes.rstrip(".").lower()
    out: dict[str, float] = {}
    saved = policy.prompt
    try:
        for obs in OBSERVATIONS:
            yes = [s for s in pool if obs in s.positive][:per_class]
            no = [s for s in pool if obs in s.absent][:per_class]
            if not yes or not no:
                continue
            policy.set_prompt(vocab.prompt(vocab.questions[obs]))
            said = policy.generate_reports(
                [s.image for s in yes + no], max_new_tokens=4, batch_size=batch_size
            )
            said_yes = [a.strip().lower().startswith(yes_word) for a in said]
            tpr = sum(said_yes[: len(yes)]) / len(yes)
            tnr = sum(not a for a in said_yes[len(yes) :]) / len(no)
            out[obs] = (tpr + tnr) / 2
    finally:
        policy.set_prompt(saved)
    if out:
        out["mean"] = float(np.mean(list(out.values())))
    return out
