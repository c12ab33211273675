"""Throughput of the rule labeler on real reports, one core, beside a plain regex baseline.

    .venv/bin/python benchmarks/labeler_speed.py            # Open-i development reports
    .venv/bin/python benchmarks/labeler_speed.py --repeat 5 --big-mb 1

Prints reports/s of ``RuleLabeler.label`` and, measured in the same run over the same texts,
of one ``re.findall(r"\\w+", text)`` pass (a floor: tokenising the text once). The machine is
shared, so the ratio between the two is the figure to compare across runs; each timing is the
best of ``--repeat`` passes. Then times one synthetic report of ``--big-mb`` MB (the run time
must stay linear in the text length).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from labeler_openi import DEFAULT_TGZ, load_reports  # noqa: E402

_WORD = re.compile(r"\w+")


def best_pass(
    fn: Callable[[str], object],
    texts: Sequence[str],
    repeat: int,
    before: Callable[[], None] | None = None,
) -> float:
    """Best wall time (s) of ``repeat`` passes of ``fn`` over ``texts``; ``before`` runs
    (untimed) before each pass."""
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - t0)
    return best


def big_report(texts: Sequence[str], n_chars: int) -> str:
    """Real reports joined until the text has ``n_chars`` characters."""
    parts: list[str] = []
    size = 0
    i = 0
    while size < n_chars:
        parts.append(texts[i % len(texts)])
        size += len(parts[-1]) + 1
        i += 1
    return "\n".join(parts)[:n_chars]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tgz", type=Path, default=DEFAULT_TGZ, help="the Open-i reports archive")
    ap.add_argument("--repeat", type=int, default=3, help="passes per timing (best is kept)")
    ap.add_argument("--big-mb", type=float, default=1.0, help="size of the one big report")
    args = ap.parse_args(argv)

    from orapo.labeler import RuleLabeler

    texts = [r.text for r in load_reports(args.tgz) if r.text.strip()]
    t0 = time.perf_counter()
    labeler = RuleLabeler()
    build = time.perf_counter() - t0
    labeler.label(texts[0])  # warm caches

    chars = sum(map(len, texts))
    n = len(texts)
    uncached = RuleLabeler(cache_size=0)
    t_cold = best_pass(labeler.label, texts, args.repeat, before=labeler.clear_cache)
    t_none = best_pass(uncached.label, texts, args.repeat)
    t_base = best_pass(_WORD.findall, texts, args.repeat)
    print(f"{n} reports, mean {chars / n:.0f} characters; labeler built in {build * 1000:.0f} ms")
    rows = [
        ("rule labeler (sentence cache, cold)", t_cold),
        ("rule labeler (no cache)", t_none),
        ("re.findall(r'\\w+') over the same texts", t_base),
    ]
    for name, t in rows:
        print(
            f"{name:42s} {n / t:9.0f} reports/s  {t / n * 1e6:7.1f} us/report "
            f"{t / t_base:6.1f} x findall"
        )

    # One big report (real reports joined, so its sentences repeat: the no-cache row is the
    # worst case for a text of that size).
    big = big_report(texts, int(args.big_mb * 1_000_000))
    for name, lab in (("cache", labeler), ("no cache", uncached)):
        lab.clear_cache()
        t0 = time.perf_counter()
        labels = lab.label(big)
        t_big = time.perf_counter() - t0
        print(
            f"one {len(big) / 1e6:.1f} MB report ({name}): {t_big:.3f} s, "
            f"{t_big / len(big) / (t_none / chars):.2f} x the per-character time of the "
            f"uncached typical reports; {sum(v is not None for v in labels.values())} labeled"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
