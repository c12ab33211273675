"""Text metrics: worked values, and agreement with NLTK, rouge-score and pycocoevalcap."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from orapo.metrics import TEXT_METRICS, bleu, cider_d, rouge_l, text_metrics, tokenize

VOCAB = ["the", "heart", "is", "normal", "size", "no", "pleural", "effusion", "lungs", "clear"]
SMALL_VOCAB = ["the", "heart", "is", "normal", "."]  # small enough for 4-gram matches


def random_reports(
    seed: int, n: int, min_len: int, max_len: int, words: list[str] | None = None
) -> list[str]:
    """Random word strings; the default vocabulary includes "." and ","."""
    rng = random.Random(seed)
    words = words or VOCAB + [".", ","]
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)
    ]


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Heart size, NORMAL.  No effusion!") == [
        "heart", "size", ",", "normal", ".", "no", "effusion", "!",
    ]  # fmt: skip
    assert tokenize("") == []


def test_identical_text_scores_one_and_disjoint_zero():
    same = text_metrics(["The heart is normal in size."], ["the heart is normal in size ."])
    assert list(same) == list(TEXT_METRICS)
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert same[key] == pytest.approx(1.0)
    assert same["cider"] == 0.0  # one report: idf = log(1) = 0
    disjoint = text_metrics(["lungs are clear"], ["no pleural effusion"])
    assert all(v == 0.0 for v in disjoint.values())


def test_bleu_worked_values():
    # p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1; equal lengths, so no brevity penalty
    scores = bleu([tokenize("the heart is normal")], [tokenize("the heart is enlarged")])
    assert scores == pytest.approx([0.75, math.sqrt(0.5), 0.25 ** (1 / 3), 0.0])
    # hypothesis of 2 against 4 tokens: p1 = p2 = 1, BP = exp(1 - 4/2); no trigram at all -> 0
    scores = bleu([tokenize("the heart")], [tokenize("the heart is normal")])
    assert scores == pytest.approx([math.exp(-1), math.exp(-1), 0.0, 0.0])


def test_rouge_l_worked_values():
    # LCS("a b c d", "a c b d") = 3 -> P = R = F = 3/4; punctuation is a token: 2/3 vs 1 -> 0.8
    assert rouge_l(["a b c d"], ["a c b d"]) == pytest.approx(0.75)
    assert rouge_l(["Heart normal."], ["heart normal"]) == pytest.approx(0.8)
    assert rouge_l(["a b c d", "x"], ["a c b d", "y"]) == pytest.approx(0.375)  # mean
    assert rouge_l([""], [""]) == 0.0


def test_cider_worked_values():
    # each hypothesis equals its reference and the two share no n-gram: every cosine is 1
    hyps = [tokenize("heart is normal in size"), tokenize("small left pleural effusion seen")]
    assert cider_d(hyps, hyps).tolist() == pytest.approx([10.0, 10.0])
    assert cider_d([[]], [["a"]]).tolist() == [0.0]
    assert cider_d(hyps[:1], hyps[:1]).tolist() == [0.0]  # a corpus of one has idf 0
    # By hand, n = 2, N = 2 (idf weight L = log 2 for n-grams of one reference, also for "b a"
    # of none): unigrams hyp (2L, 2L) . ref (L, L) -> cosine 2L^2 / (2 sqrt2 L * sqrt2 L) = 1/2;
    # bigrams hyp {ab: 2L, ba: L} . ref {ab: L}: clipped min(2L, L) * L / (sqrt5 L * L) =
    # 1/sqrt5; length gap 4 - 2 -> exp(-2^2 / (2 * 6^2)); score 10 * mean of the two orders.
    got = cider_d([["a", "b", "a", "b"], ["c", "d"]], [["a", "b"], ["c", "d"]], n=2)
    want = 10 * (0.5 + 1 / math.sqrt(5)) / 2 * math.exp(-4 / 72)
    assert got.tolist() == pytest.approx([want, 10.0])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 hyps and 1 refs"):
        text_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reports"):
        text_metrics([], [])
    with pytest.raises(TypeError, match=r"refs\[1\] must be a string"):
        text_metrics(["a", "b"], ["a", None])


# --- agreement with the libraries -----------------------------------------------------------


def test_bleu_is_nltk_corpus_bleu():
    from nltk.translate.bleu_score import corpus_bleu

    hyps = [tokenize(t) for t in random_reports(0, 30, 4, 30, SMALL_VOCAB)]
    refs = [tokenize(t) for t in random_reports(1, 30, 4, 30, SMALL_VOCAB)]
    for n, ours in enumerate(bleu(hyps, refs), start=1):
        theirs = corpus_bleu([[r] for r in refs], hyps, weights=(1 / n,) * n)
        assert ours == pytest.approx(theirs, rel=1e-12)
        assert ours > 0


def test_rouge_l_is_rouge_score():
    from rouge_score.rouge_scorer import RougeScorer

    # lower-case, no punctuation: our tokenizer and rouge-score's default agree
    hyps = random_reports(2, 30, 0, 30, VOCAB)
    refs = random_reports(3, 30, 0, 30, VOCAB)
    scorer = RougeScorer(["rougeL"])
    want = np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)])
    assert rouge_l(hyps, refs) == pytest.approx(want, abs=1e-12)


def test_bleu_and_cider_agree_with_pycocoevalcap():
    """pycocoevalcap (the coco-caption scorers R2Gen reports) on our tokens, joined by spaces."""
    pytest.importorskip("pycocoevalcap", reason="pycocoevalcap is the reference peer (dev extra)")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    # CIDEr-D on any text, empty reports included
    hyps = [tokenize(t) for t in random_reports(4, 60, 0, 30)]
    refs = [tokenize(t) for t in random_reports(5, 60, 0, 30)]
    gts = {i: [" ".join(r)] for i, r in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    mean, per_report = Cider().compute_score(gts, res)
    assert cider_d(hyps, refs) == pytest.approx(per_report, abs=1e-9)
    assert cider_d(hyps, refs).mean() > 0.1

    # BLEU: equal where every hypothesis has at least 4 tokens (NLTK counts an empty order as
    # one unmatched n-gram, pycocoevalcap as none; see docs/metrics.md)
    hyps = [tokenize(t) for t in random_reports(6, 60, 4, 30, SMALL_VOCAB)]
    refs = [tokenize(t) for t in random_reports(7, 60, 4, 30, SMALL_VOCAB)]
    gts = {i: [" ".join(r)] for i, r in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    theirs, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ours = bleu(hyps, refs)
    assert min(ours) > 0
    assert ours == pytest.approx(theirs, rel=1e-6)
