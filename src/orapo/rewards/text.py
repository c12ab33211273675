"""Text-similarity rewards for the ablation rows: sentence BLEU and ROUGE-L F1.

Both compare a completion with the ``reference`` column (the ground-truth report text). An
empty (or whitespace-only) completion scores 0.0; a missing or empty reference gives None.

* ``bleu``: ``nltk.translate.bleu_score.sentence_bleu`` with uniform weights up to
  ``max_n``-grams (default 4) and Chen & Cherry's smoothing ``method1`` by default (zero n-gram
  counts get epsilon 0.1), so short reports with no 4-gram match do not score exactly 0.
* ``rouge_l``: the F-measure of ``rouge_score``'s ``rougeL`` (longest common subsequence over
  the whole text); Porter stemming off by default (the library's default), ``use_stemmer=True``
  to turn it on.

Both read the tokens of the text metrics (:func:`orapo.metrics.text.tokenize`: lower-cased
words and single punctuation marks), so the ``rouge_l`` reward of a report equals its
``text/rouge_l`` metric: ``"no acute findings"`` against ``"No acute findings."`` scores
0.857 in both (the full stop is a token).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from orapo.metrics.text import rouge_l_scorer, tokenize
from orapo.rewards.common import FailureLog, SampleError, column, completion_text

SMOOTHING_METHODS: tuple[str, ...] = tuple(f"method{i}" for i in range(8))


class _ReferenceTextReward:
    """Shared loop: one score per (completion, reference text) pair, None on failure."""

    __name__ = "text"

    def __init__(self) -> None:
        self._log = FailureLog(self.__name__)

    @property
    def failures(self) -> Counter[str]:
        return self._log.failures

    def score(self, completion: str, reference: str) -> float:
        raise NotImplementedError

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        references = column(columns, "reference", len(completions))
        out: list[float | None] = []
        for i, completion in enumerate(completions):
            try:
                text = completion_text(completion)
                ref = None if references is None else references[i]
                if not isinstance(ref, str) or not ref.strip():
                    raise SampleError("no reference", f"reference text is {ref!r:.40}")
                out.append(0.0 if not text.strip() else self.score(text, ref))
            except Exception as error:  # one bad sample must not stop the batch
                self._log.record(i, error)
                out.append(None)
        return out


class BleuReward(_ReferenceTextReward):
    """Sentence BLEU of each completion against its reference (module docstring)."""

    __name__ = "bleu"

    def __init__(self, max_n: int = 4, smoothing: str = "method1") -> None:
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        if smoothing not in SMOOTHING_METHODS:
            raise ValueError(
                f"unknown smoothing {smoothing!r}; valid values are: {', '.join(SMOOTHING_METHODS)}"
            )
        from nltk.translate.bleu_score import SmoothingFunction

        super().__init__()
        self.max_n = max_n
        self.weights = tuple(1.0 / max_n for _ in range(max_n))
        self.smoothing = smoothing
        self._smoothing_fn = getattr(SmoothingFunction(), smoothing)

    def score(self, completion: str, reference: str) -> float:
        from nltk.translate.bleu_score import sentence_bleu

        return float(
            sentence_bleu(
                [tokenize(reference)],
                tokenize(completion),
                weights=self.weights,
                smoothing_function=self._smoothing_fn,
            )
        )


class RougeLReward(_ReferenceTextReward):
    """ROUGE-L F-measure of each completion against its reference (module docstring)."""

    __name__ = "rouge_l"

    def __init__(self, use_stemmer: bool = False) -> None:
        super().__init__()
        self.use_stemmer = use_stemmer
        self._scorer = rouge_l_scorer(use_stemmer)

    def score(self, completion: str, reference: str) -> float:
        return float(self._scorer.score(reference, completion)["rougeL"].fmeasure)
