"""Natural-language metrics: BLEU-1..4, ROUGE-L and CIDEr-D between reports and references.

All three read the same tokens (:func:`tokenize`: lower-case; runs of letters/digits are words
and every other non-space character is a token of its own, so ``"Heart size, normal."``
becomes ``heart size , normal .``). One reference per report.

* BLEU-n (:func:`bleu`): NLTK's ``corpus_bleu`` with uniform weights 1/n over orders 1..n,
  no smoothing (NLTK's ``method0``), corpus-level brevity penalty. This is the corpus BLEU of
  pycocoevalcap's ``Bleu`` scorer that R2Gen and its successors report (which adds 1e-15 /
  1e-9 to counts; the two agree to about 1e-9 when every order has a match). An order k with
  no matching k-gram in the whole corpus makes BLEU-n exactly 0 for every n >= k (the
  geometric mean has a zero factor; pycocoevalcap's epsilons leave a small positive number).
* ROUGE-L (:func:`rouge_l`): Google's ``rouge-score`` package (``rougeL``, LCS over the whole
  report, no stemming, our tokenizer), F-measure with beta = 1 per report, then the mean over
  reports. pycocoevalcap's ``Rouge`` (R2Gen) uses beta = 1.2 instead.
* CIDEr-D (:func:`cider_d`): our ~40-line implementation of pycocoevalcap's ``Cider`` scorer
  (which is CIDEr-D: n = 1..4, tf-idf with document frequencies over the evaluated references,
  clipped hypothesis weights, Gaussian length penalty sigma = 6, times 10), checked equal to it
  in the tests. The idf comes from the evaluated corpus, so the score of a report depends on
  the others scored with it, and a corpus of one report always scores 0 (idf = log 1 = 0).

METEOR is not offered: NLTK's ``meteor_score`` needs the WordNet corpus (a separate download)
and pycocoevalcap's needs Java; neither works in a plain offline install.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]")

#: The keys :func:`text_metrics` returns, in order.
TEXT_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")


def tokenize(text: str) -> list[str]:
    """Lower-case; words (runs of letters, digits, ``_``) and single punctuation marks.

    >>> tokenize("No pleural effusion. Heart-size normal!")
    ['no', 'pleural', 'effusion', '.', 'heart', '-', 'size', 'normal', '!']
    """
    return _TOKEN.findall(text.lower())


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(
            f"hyps and refs must have one reference per report; got {len(hyps)} hyps and "
            f"{len(refs)} refs"
        )
    if len(hyps) == 0:
        raise ValueError("no reports to score: hyps and refs are empty")
    for side, texts in (("hyps", hyps), ("refs", refs)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{side}[{i}] must be a string, got {type(text).__name__}")


# --- BLEU -----------------------------------------------------------------------------------


def bleu(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], max_n: int = 4
) -> list[float]:
    """Corpus BLEU-1..``max_n`` of token lists against one reference token list each.

    Returns ``[BLEU-1, ..., BLEU-max_n]``; BLEU-n has weights ``(1/n,) * n``, no smoothing.
    """
    from nltk.translate.bleu_score import corpus_bleu, modified_precision

    references = [[list(r)] for r in refs]
    hypotheses = [list(h) for h in hyps]
    weights = [tuple([1.0 / n] * n) for n in range(1, max_n + 1)]
    with warnings.catch_warnings():
        # method0 warns when an order has no match; we state the rule in the docstring instead.
        warnings.filterwarnings("ignore", message=r"(?s).*contains 0 counts of")
        scores = corpus_bleu(references, hypotheses, weights=weights)
    # method0 stands in float_info.min for a zero precision, leaving ~1e-77 instead of 0.
    matches = [
        sum(
            modified_precision(r, h, k).numerator
            for r, h in zip(references, hypotheses, strict=True)
        )
        for k in range(1, max_n + 1)
    ]
    return [0.0 if 0 in matches[:n] else float(s) for n, s in enumerate(scores, start=1)]


# --- ROUGE-L --------------------------------------------------------------------------------


class RougeTokenizer:
    """rouge-score's tokenizer interface (``.tokenize(text)``) over :func:`tokenize`, so the
    ROUGE-L metric and the ROUGE-L reward read the same tokens as BLEU and CIDEr. With
    ``use_stemmer``, words longer than 3 characters are Porter-stemmed (rouge-score's rule)."""

    def __init__(self, use_stemmer: bool = False) -> None:
        if use_stemmer:
            from nltk.stem import porter

            self._stem = porter.PorterStemmer().stem
        self.use_stemmer = use_stemmer

    def tokenize(self, text: str) -> list[str]:
        tokens = tokenize(text)
        if self.use_stemmer:
            tokens = [self._stem(t) if len(t) > 3 else t for t in tokens]
        return tokens


def rouge_l_scorer(use_stemmer: bool = False) -> Any:
    """rouge-score's ``RougeScorer(["rougeL"])`` on our tokens: ``.score(ref, hyp)["rougeL"]``."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=RougeTokenizer(use_stemmer))


def rouge_l_per_report(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """(N,) ROUGE-L F-measures (beta = 1) of each report against its reference."""
    scorer = rouge_l_scorer()
    return np.array(
        [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)]
    )


def rouge_l(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean over reports of the ROUGE-L F-measure; an empty side scores 0."""
    return float(rouge_l_per_report(hyps, refs).mean())


# --- CIDEr-D --------------------------------------------------------------------------------


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of every 1..n-gram of ``tokens`` (tuples as keys)."""
    return Counter(
        tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1)
    )


def cider_d(
    hyps: Sequence[Sequence[str]],
    refs: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
) -> np.ndarray:
    """(N,) CIDEr-D of each hypothesis token list against its one reference token list.

    As pycocoevalcap's ``CiderScorer`` (Vedantam et al. 2015, the ``-D`` variant): for each
    order k = 1..n, the tf-idf vectors ``g = tf * (log N - log max(1, df))`` of hypothesis and
    reference (df = number of the N references containing the n-gram) give
    ``s_k = sum_g min(g_hyp, g_ref) * g_ref / (|g_hyp| |g_ref|) * exp(-(l_hyp - l_ref)^2 /
    (2 sigma^2))``, 0 when a norm is 0, with l the length in tokens (pycocoevalcap counts
    bigrams, l - 1, which gives the same difference whenever both sides have n-grams, for
    n >= 2); the score is ``10 * mean_k s_k``. The corpus score is the mean of the result.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses and {len(refs)} references")
    hyp_counts = [_ngrams(h, n) for h in hyps]
    ref_counts = [_ngrams(r, n) for r in refs]
    df: Counter = Counter()
    for counts in ref_counts:
        df.update(counts.keys())
    log_n = math.log(len(refs)) if refs else 0.0

    def tfidf(counts: Counter) -> tuple[list[dict], list[float]]:
        vec: list[dict] = [{} for _ in range(n)]
        sq = [0.0] * n
        for gram, tf in counts.items():
            weight = tf * (log_n - math.log(max(1.0, df[gram])))
            vec[len(gram) - 1][gram] = weight
            sq[len(gram) - 1] += weight * weight
        return vec, [math.sqrt(x) for x in sq]

    scores = np.zeros(len(hyps))
    for i, (hyp, ref) in enumerate(zip(hyps, refs, strict=True)):
        vec_h, norm_h = tfidf(hyp_counts[i])
        vec_r, norm_r = tfidf(ref_counts[i])
        penalty = math.exp(-((len(hyp) - len(ref)) ** 2) / (2 * sigma**2))
        per_order = []
        for k in range(n):
            if norm_h[k] == 0 or norm_r[k] == 0:
                per_order.append(0.0)
                continue
            ref_k = vec_r[k]
            dot = sum(min(w, ref_k.get(g, 0.0)) * ref_k.get(g, 0.0) for g, w in vec_h[k].items())
            per_order.append(dot / (norm_h[k] * norm_r[k]) * penalty)
        scores[i] = 10.0 * float(np.mean(per_order))
    return scores


# --- all together ---------------------------------------------------------------------------


def text_metrics(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of generated reports ``hyps`` against ``refs``.

    Keys: ``bleu_1`` .. ``bleu_4``, ``rouge_l``, ``cider`` (see the module docstring for the
    settings). Raises ``ValueError`` for different lengths or no reports, ``TypeError`` for a
    non-string entry (naming its index).
    """
    _check_pairs(hyps, refs)
    hyp_tokens = [tokenize(h) for h in hyps]
    ref_tokens = [tokenize(r) for r in refs]
    out = {f"bleu_{n}": s for n, s in enumerate(bleu(hyp_tokens, ref_tokens), start=1)}
    out["rouge_l"] = rouge_l(hyps, refs)
    out["cider"] = float(cider_d(hyp_tokens, ref_tokens).mean())
    return out
