"""FactS: the fact-level reward of OraPO, ``F_beta`` of the generated report's clinical facts
against the reference's.

The paper extracts atomic facts with GPT-4 and checks them against the 14 CheXpert
observations. We go straight to the observations: a labeler (``orapo.labeler``, injected)
reads a report into a label dict (observation -> 1 / 0 / -1 / None), and the facts are read off
that dict.

What a fact is (our definition; the paper leaves it open):

* A fact is a pair ``(observation, state)``, e.g. ``("Cardiomegaly", "present")``. Two facts
  match when both parts are equal.
* Positive finding (1): the fact ``(obs, "present")``. Always counted.
* Negated finding (0), option ``negatives``:
  ``"ignore"`` (default) - "No pneumothorax" is not a fact; only what is present is scored,
  as in the usual clinical-efficacy metrics, and so the policy cannot farm reward by listing
  negatives. ``"strict"`` - ``(obs, "absent")`` is a fact; it matches only a reference negative.
  ``"lenient"`` - as strict, but a predicted negative about an observation the reference does
  not mention is neither rewarded nor penalised (dropped before scoring): it may well be true.
* Uncertain finding (-1), option ``uncertain``: ``"positive"`` (default) - a hedged finding
  counts as present (CheXbert's "rrg" convention; fits the recall-first design: a hedge on a
  real finding is not a miss). ``"separate"`` - its own state ``(obs, "uncertain")``, matching
  only an uncertain reference. ``"negative"`` - read as 0 (R2Gen CE's convention), then the
  ``negatives`` rule applies. ``"ignore"`` - no fact.
* No Finding, option ``no_finding``: ``"rule"`` (default) - recomputed on both sides by
  CheXpert's rule (:func:`orapo.observations.apply_no_finding_rule`: positive when nothing but
  Support Devices is positive or uncertain), so gold labels and labeler output agree on it; a
  normal report then has the one fact ``("No Finding", "present")``. ``"labels"`` - taken as
  labelled. ``"exclude"`` - never a fact.

Scores (:func:`precision_recall_f_beta`): ``P = |pred & ref| / |pred|``,
``R = |pred & ref| / |ref|``, ``F_beta = (1 + beta^2) P R / (beta^2 P + R)`` (0 when P = R = 0).
``beta = 2`` by default (our choice: the paper says only ``beta > 1``, recall-weighted; 2 is the
customary recall-weighted F). Edge cases: both sets empty -> P = R = F = 1 (nothing to say,
nothing said); exactly one empty -> P = R = F = 0. An empty (whitespace-only) completion scores
0 before any labelling (under ``no_finding="rule"`` an empty text would otherwise read as
"No Finding").

Reference facts per sample: the ``labels`` column (a label dict) when it is present and not
None for that sample, else the labeler on the ``reference`` column (the report text).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from orapo.observations import (
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    UNCERTAIN,
    LabelDict,
    apply_no_finding_rule,
    empty_labels,
    labels_to_dict_checked,
)
from orapo.rewards.common import FailureLog, SampleError, column, completion_text, logger

if TYPE_CHECKING:
    from orapo.labeler import Labeler

PRESENT, ABSENT, UNCERTAIN_STATE = "present", "absent", "uncertain"
NEGATIVE_MODES: tuple[str, ...] = ("ignore", "strict", "lenient")
UNCERTAIN_MODES: tuple[str, ...] = ("positive", "separate", "negative", "ignore")
NO_FINDING_MODES: tuple[str, ...] = ("rule", "labels", "exclude")


class Fact(NamedTuple):
    """One clinical fact: an observation (one of the 14 names) and its state."""

    observation: str
    state: str  # "present", "absent" or "uncertain"


@dataclass(frozen=True)
class FactOptions:
    """How label dicts become facts (module docstring: what a fact is)."""

    negatives: str = "ignore"
    uncertain: str = "positive"
    no_finding: str = "rule"

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("negatives", self.negatives, NEGATIVE_MODES),
            ("uncertain", self.uncertain, UNCERTAIN_MODES),
            ("no_finding", self.no_finding, NO_FINDING_MODES),
        ):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid values are: {', '.join(valid)}")


def precision_recall_f_beta(
    pred_facts: set, ref_facts: set, beta: float = 2.0
) -> tuple[float, float, float]:
    """``(P, R, F_beta)`` of predicted against reference facts (sets of hashables).

    Both empty -> ``(1, 1, 1)``; exactly one empty -> ``(0, 0, 0)``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not pred_facts and not ref_facts:
        return 1.0, 1.0, 1.0
    if not pred_facts or not ref_facts:
        return 0.0, 0.0, 0.0
    hits = len(set(pred_facts) & set(ref_facts))
    p, r = hits / len(pred_facts), hits / len(ref_facts)
    b2 = beta * beta
    f = (1 + b2) * p * r / (b2 * p + r) if p + r > 0 else 0.0
    return p, r, f


def f_beta(pred_facts: set, ref_facts: set, beta: float = 2.0) -> float:
    """``F_beta`` of two fact sets (:func:`precision_recall_f_beta`'s third value)."""
    return precision_recall_f_beta(pred_facts, ref_facts, beta)[2]


def _normalise(labels: Mapping[str, Any], options: FactOptions) -> LabelDict:
    """All 14 names, validated states, No Finding per ``options.no_finding``."""
    out = empty_labels()
    out.update(labels_to_dict_checked(labels))
    if options.no_finding == "rule":
        out = apply_no_finding_rule(out)
    elif options.no_finding == "exclude":
        out[NO_FINDING] = None
    return out


def label_facts(labels: Mapping[str, Any], options: FactOptions = FactOptions()) -> set[Fact]:
    """The facts of one label dict (missing names are not mentioned).

    >>> sorted(label_facts({"Cardiomegaly": 1, "Pneumothorax": 0, "Edema": -1}))
    [Fact(observation='Cardiomegaly', state='present'), Fact(observation='Edema', state='present')]
    """
    facts: set[Fact] = set()
    for name, state in _normalise(labels, options).items():
        if state == UNCERTAIN:
            if options.uncertain == "positive":
                state = POSITIVE
            elif options.uncertain == "separate":
                facts.add(Fact(name, UNCERTAIN_STATE))
                continue
            elif options.uncertain == "negative":
                state = NEGATIVE
            else:
                continue
        if state == POSITIVE:
            facts.add(Fact(name, PRESENT))
        elif state == NEGATIVE and options.negatives != "ignore":
            facts.add(Fact(name, ABSENT))
    return facts


class FactScore(NamedTuple):
    """The score of one completion: P, R, F_beta and the fact counts behind them."""

    precision: float
    recall: float
    f_beta: float
    n_pred: int
    n_ref: int
    n_match: int


def score_labels(
    pred_labels: Mapping[str, Any],
    ref_labels: Mapping[str, Any],
    options: FactOptions = FactOptions(),
    beta: float = 2.0,
) -> FactScore:
    """FactS of a predicted label dict against a reference label dict."""
    pred = label_facts(pred_labels, options)
    ref = label_facts(ref_labels, options)
    if options.negatives == "lenient":
        ref_states = _normalise(ref_labels, options)
        pred = {f for f in pred if f.state != ABSENT or ref_states[f.observation] is not None}
    p, r, f = precision_recall_f_beta(pred, ref, beta)
    return FactScore(p, r, f, len(pred), len(ref), len(pred & ref))


class FactsReward:
    """The FactS reward, ``f(completions, reference=..., labels=..., **kw) -> list[float|None]``.

    Args:
        labeler: an object with ``label(text)`` and ``label_batch(texts)`` returning label dicts
            (``orapo.labeler.Labeler``). None: ``orapo.labeler.get_labeler(labeler_name,
            **labeler_options)``, imported here, lazily (a recipe's ``reward_options:
            {labeler_name: llm, labeler_options: {model: ..., base_url: ...}}``); a string is
            taken as ``labeler_name``.
        beta: the F_beta weight (> 1 favours recall).
        negatives, uncertain, no_finding: :class:`FactOptions` (module docstring).
        cache_size: reference texts whose labels are kept (each is seen K times per step).

    After each call, ``last_scores`` holds a :class:`FactScore` (or None) per completion,
    :meth:`metrics` their means, and ``failures`` counts unscored samples by reason.
    """

    __name__ = "facts"

    def __init__(
        self,
        labeler: Labeler | str | None = None,
        *,
        labeler_name: str = "rule",
        labeler_options: Mapping[str, Any] | None = None,
        beta: float = 2.0,
        negatives: str = "ignore",
        uncertain: str = "positive",
        no_finding: str = "rule",
        cache_size: int = 10_000,
    ) -> None:
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if isinstance(labeler, str):  # a name, as YAML recipes write it ({labeler: rule})
            if labeler_name not in ("rule", labeler):
                raise ValueError(
                    f"labeler={labeler!r} and labeler_name={labeler_name!r} disagree; give one"
                )
            labeler, labeler_name = None, labeler
        if labeler is None:
            from orapo.labeler import get_labeler

            labeler = get_labeler(labeler_name, **dict(labeler_options or {}))
        self.labeler = labeler
        self.beta = beta
        self.options = FactOptions(negatives, uncertain, no_finding)
        self.cache_size = cache_size
        self._reference_cache: OrderedDict[str, LabelDict] = OrderedDict()
        self._log = FailureLog(self.__name__)
        self.last_scores: list[FactScore | None] = []
        self._llm_last: tuple[int, int] | None = None  # (fallbacks, misses) of the last call

    @property
    def failures(self) -> Counter[str]:
        return self._log.failures

    # -- labelling -------------------------------------------------------------------------

    def _check_labels(self, labels: Any, what: str) -> LabelDict:
        if not isinstance(labels, Mapping):
            raise SampleError(f"bad {what}", f"expected a label dict, got {type(labels).__name__}")
        try:
            return labels_to_dict_checked(labels)
        except (KeyError, ValueError) as error:
            raise SampleError(f"bad {what}", str(error)) from None

    def _label_texts(self, texts: Sequence[str]) -> list[LabelDict | Exception]:
        """Label distinct texts in one batch; on a batch failure, one by one (isolating it).

        Except when the batch failed with ``orapo.llm.LLMError`` (an LLM labeler with fallback
        off gave up after its retries and deadline): every text of the batch is then failed
        (reason ``"llm error"``) at once, since asking again one by one would wait up to one
        deadline per text within a training step.
        """
        if not texts:
            return []
        try:
            batch = list(self.labeler.label_batch(list(texts)))
            if len(batch) != len(texts):
                raise ValueError(f"label_batch returned {len(batch)} results for {len(texts)}")
        except Exception as error:
            if _is_llm_error(error):
                if getattr(error, "reason", None) == "fallback_rate":
                    raise  # on_fallback="stop": too many reports fell back; stop training
                logger.warning(
                    "labeler %r: label_batch failed (%s); %d texts not scored",
                    getattr(self.labeler, "name", "?"),
                    error,
                    len(texts),
                )
                failed = SampleError("llm error", f"{getattr(error, 'reason', '?')}: {error}")
                return [failed] * len(texts)
            logger.warning(
                "labeler %r: label_batch failed (%r); labelling one by one",
                getattr(self.labeler, "name", "?"),
                error,
            )
            batch = []
            for text in texts:
                try:
                    batch.append(self.labeler.label(text))
                except Exception as error:
                    batch.append(SampleError("labeler error", repr(error)))
        out: list[LabelDict | Exception] = []
        for labels in batch:
            try:
                out.append(
                    labels
                    if isinstance(labels, Exception)
                    else self._check_labels(labels, "labeler output")
                )
            except SampleError as error:
                out.append(error)
        return out

    def _reference_labels(self, texts: Sequence[str]) -> dict[str, LabelDict | Exception]:
        todo = [t for t in dict.fromkeys(texts) if t not in self._reference_cache]
        found: dict[str, LabelDict | Exception] = dict(
            zip(todo, self._label_texts(todo), strict=True)
        )
        for text in dict.fromkeys(texts):
            if text in self._reference_cache:
                self._reference_cache.move_to_end(text)
                found[text] = self._reference_cache[text]
            elif not isinstance(found[text], Exception):
                self._reference_cache[text] = found[text]
                while len(self._reference_cache) > self.cache_size:
                    self._reference_cache.popitem(last=False)
        return found

    # -- scoring ---------------------------------------------------------------------------

    def score(self, pred_labels: Mapping[str, Any], ref_labels: Mapping[str, Any]) -> FactScore:
        """FactS of two label dicts with this reward's options and beta."""
        return score_labels(pred_labels, ref_labels, self.options, self.beta)

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        before = _llm_counts(self.labeler)
        try:
            return self._score_all(completions, **columns)
        finally:
            after = _llm_counts(self.labeler)
            self._llm_last = (
                None
                if before is None or after is None
                else (after[0] - before[0], after[1] - before[1])
            )

    def _score_all(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        n = len(completions)
        texts = [_or_error(completion_text, c) for c in completions]  # str | SampleError
        refs = self._references(column(columns, "labels", n), column(columns, "reference", n), n)
        # Label the distinct non-empty completions whose reference is usable.
        wanted = [
            t
            for t, ref in zip(texts, refs, strict=True)
            if isinstance(t, str) and t.strip() and not isinstance(ref, Exception)
        ]
        distinct = list(dict.fromkeys(wanted))
        preds = dict(zip(distinct, self._label_texts(distinct), strict=True))

        self.last_scores = []
        out: list[float | None] = []
        for i, (text, ref) in enumerate(zip(texts, refs, strict=True)):
            error = next((x for x in (text, ref) if isinstance(x, Exception)), None)
            if error is None and text.strip():
                error = preds[text] if isinstance(preds[text], Exception) else None
            if error is not None:  # one bad sample gets None, never stops the batch
                self._log.record(i, error)
                self.last_scores.append(None)
                out.append(None)
                continue
            if not text.strip():  # empty generation: 0, before any labelling
                score = FactScore(0.0, 0.0, 0.0, 0, len(label_facts(ref, self.options)), 0)
            else:
                score = self.score(preds[text], ref)
            self.last_scores.append(score)
            out.append(score.f_beta)
        return out

    def _references(
        self, gold: Sequence[Any] | None, reports: Sequence[Any] | None, n: int
    ) -> list[LabelDict | Exception]:
        """Per sample: the gold label dict when given, else the labeler on the reference text."""
        refs: list[LabelDict | Exception] = []
        to_label: dict[int, str] = {}
        for i in range(n):
            if gold is not None and gold[i] is not None:
                refs.append(_or_error(self._check_labels, gold[i], "gold labels"))
                continue
            report = None if reports is None else reports[i]
            if isinstance(report, str) and report.strip():
                to_label[i] = report
            refs.append(SampleError("no reference", "neither gold labels nor a reference text"))
        found = self._reference_labels(list(to_label.values()))
        for i, report in to_label.items():
            refs[i] = found[report]
        return refs

    def metrics(self) -> dict[str, float]:
        """Means over the last call's scored samples: ``reward/facts_precision``,
        ``reward/facts_recall``, ``reward/facts_f_beta``; ``reward/facts_failed`` counts the
        unscored ones. With an LLM labeler also ``reward/facts_llm_fallback_rate``: the share
        of the reports asked of the model in that call that fell back to the rule labeler
        (NaN when none was asked), and ``reward/facts_llm_fallbacks``."""
        valid = [s for s in self.last_scores if s is not None]

        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else float("nan")

        out = {
            "reward/facts_precision": mean([s.precision for s in valid]),
            "reward/facts_recall": mean([s.recall for s in valid]),
            "reward/facts_f_beta": mean([s.f_beta for s in valid]),
            "reward/facts_failed": float(len(self.last_scores) - len(valid)),
        }
        if self._llm_last is not None:
            fell, asked = self._llm_last
            out["reward/facts_llm_fallback_rate"] = fell / asked if asked else float("nan")
            out["reward/facts_llm_fallbacks"] = float(fell)
        return out


def _llm_counts(labeler: Any) -> tuple[int, int] | None:
    """``(fallbacks, cache misses)`` so far of an LLM labeler (its ``summary()``), else None."""
    summary = getattr(labeler, "summary", None)
    if not callable(summary):
        return None
    stats = summary()
    fallbacks, misses = getattr(stats, "fallbacks", None), getattr(stats, "cache_misses", None)
    if fallbacks is None or not isinstance(misses, int):
        return None
    return sum(fallbacks.values()), misses


def _is_llm_error(error: Exception) -> bool:
    """Whether ``error`` is an ``orapo.llm.LLMError`` (imported only when a batch failed, so
    ``orapo.rewards`` stays free of the labeler packages)."""
    if not any(c.__module__.startswith("orapo.llm") for c in type(error).__mro__):
        return False
    from orapo.llm import LLMError

    return isinstance(error, LLMError)


def _or_error(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or the :class:`SampleError` it raised."""
    try:
        return fn(*args)
    except SampleError as error:
        return error


__all__ = [
    "ABSENT",
    "Fact",
    "FactOptions",
    "FactScore",
    "FactsReward",
    "NEGATIVE_MODES",
    "NO_FINDING_MODES",
    "PRESENT",
    "UNCERTAIN_MODES",
    "UNCERTAIN_STATE",
    "f_beta",
    "label_facts",
    "precision_recall_f_beta",
    "score_labels",
]
