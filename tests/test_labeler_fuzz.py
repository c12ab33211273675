"""Rule labeler: never crashes on odd input, and runs in time linear in the text length."""

from __future__ import annotations

import random
import time

import pytest

from orapo.labeler import RuleLabeler, aggregate, get_labeler
from orapo.observations import OBSERVATIONS

WORDS = [
    "no",
    "not",
    "without",
    "possible",
    "versus",
    "or",
    "and",
    ",",
    ".",
    ";",
    ":",
    "-",
    "xxxx",
    "XXXX",
    "heart",
    "size",
    "normal",
    "enlarged",
    "effusion",
    "pleural",
    "pneumothorax",
    "opacity",
    "lungs",
    "clear",
    "cannot",
    "exclude",
    "is",
    "are",
    "seen",
    "may",
    "represent",
    "atelectasis",
    "pneumonia",
    "consolidation",
    "edema",
    "nodule",
    "mass",
    "fracture",
    "tube",
    "line",
    "picc",
    "borderline",
    "blunting",
    "costophrenic",
    "angle",
    "resolved",
    "no",
    "longer",
    "1.",
    "2)",
    "(",
    ")",
    "/",
    "\n",
    "\n\n",
]

SENTENCES = [
    "The heart size is normal.",
    "No pleural effusion or pneumothorax.",
    "There is mild cardiomegaly.",
    "Left basilar opacity may represent atelectasis versus pneumonia.",
    "Cannot exclude a small right pleural effusion.",
    "Lungs are clear.",
    "Right PICC line with tip in the SVC.",
    "Healed left rib fractures.",
    "Blunting of the costophrenic angles.",
    "No acute cardiopulmonary abnormality.",
]


@pytest.fixture(scope="module")
def lab() -> RuleLabeler:
    return get_labeler("rule")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def uncached() -> RuleLabeler:
    """No sentence cache: every timing below is a cold, worst-case one."""
    return RuleLabeler(cache_size=0)


def check(out: dict) -> None:
    assert list(out) == list(OBSERVATIONS)
    assert set(out.values()) <= {1, 0, -1, None}


def test_random_unicode_never_crashes(lab):
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(0, 400)
        text = "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(n))
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        check(lab.label(text))
        lab.classify(text)


def test_random_vocabulary_soup_never_crashes(lab):
    rng = random.Random(1)
    for _ in range(500):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 60)))
        labels = lab.label(text)
        check(labels)
        # The three stages run one by one (extract, classify, aggregate) agree with label(),
        # which runs them per sentence through its cache.
        mentions = lab.extract_mentions(text)
        assert aggregate(lab.classify(text, mentions)) == labels, text
        assert aggregate(lab.classify(text)) == labels, text


@pytest.mark.parametrize(
    "text",
    [
        "\n",
        "\n\n\n",
        " . . . ",
        ";;;",
        "1.\n2.\n3.",
        "\x00\x01\x02",
        "\u200b\u2028\u2029",
        "-" * 50,
        "xxxx " * 20,
        "effusion" * 100,
        "no " * 200,
        ", " * 200,
    ],
)
def test_odd_texts(lab, text):
    check(lab.label(text))


def _best_time(fn, text: str, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return best


def _report_text(n_chars: int, seed: int) -> str:
    """Realistic report sentences in random order and combinations, ``n_chars`` long."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < n_chars:
        s = " ".join(rng.sample(SENTENCES, 3)) + f" Finding {rng.randint(0, 10**9)}."
        parts.append(s)
        size += len(s) + 1
    return " ".join(parts)[:n_chars]


def test_one_megabyte_report_well_under_a_second(uncached):
    text = _report_text(1_000_000, seed=2)
    elapsed = _best_time(uncached.label, text)
    assert elapsed < 1.0, f"1 MB report took {elapsed:.2f} s"


def test_time_is_linear_in_text_length(uncached):
    small = _best_time(uncached.label, _report_text(100_000, seed=3))
    large = _best_time(uncached.label, _report_text(800_000, seed=4))
    assert large / small < 16, f"8x the text took {large / small:.1f}x the time"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000,  # one huge word
        "no effusion pneumothorax or consolidation the heart is enlarged " * 15_600,
        "no " + "effusion, " * 100_000,  # one long list
        "possible " + "effusion, " * 100_000,  # one long hedged list
        "effusion, pneumothorax and nodule are not seen, " * 20_800,
        "pleural" + " " * 1_000_000 + "effusion",  # long separator inside a phrase
        ", " * 500_000 + "possible effusion",
        ". " * 500_000,
    ],
    ids=[
        "word",
        "no-punctuation",
        "list",
        "hedged-list",
        "post-cues",
        "spaces",
        "commas",
        "full-stops",
    ],
)
def test_pathological_megabyte_inputs_stay_fast(uncached, text):
    elapsed = _best_time(uncached.label, text, repeat=1)
    assert elapsed < 2.0, f"{len(text) / 1e6:.1f} MB took {elapsed:.2f} s"
