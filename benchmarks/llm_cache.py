"""How much the answer cache and in-batch dedupe save on a training-like LLM labelling workload.

    .venv/bin/python benchmarks/llm_cache.py                      # defaults below
    .venv/bin/python benchmarks/llm_cache.py --latency 0.2 --concurrency 16 --json out.json

Workload (a GRPO run's reward calls): ``--studies`` studies, visited for ``--epochs`` epochs in
steps of ``--batch-studies`` studies; each visit samples K = ``--k`` rollouts. A study's
rollouts are drawn from ``--variants`` distinct reports of its own (weighted 0.5, 0.25, ...:
a policy repeats its favourite report) or, with probability ``--p-normal``, the one normal
report every study shares. One ``label_batch`` call per step, as the FactS reward makes.

The model is orapo's loopback fake server (``orapo.llm.fake_server``) with a fixed
``--latency`` per request, on 127.0.0.1; nothing else is contacted. Three runs, side by side:

* ``no cache``: ``cache_path=None``; only the in-batch dedupe saves requests.
* ``cold cache``: a fresh SQLite cache; repeats across steps and epochs hit.
* ``warm cache``: the same workload again on the filled cache (a rerun or a second process).

Columns: texts labelled, requests sent, cache hit rate (hits / distinct texts looked up), wall
seconds, reports (texts) per second.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from orapo.llm import LLMLabeler
from orapo.llm.fake_server import FakeChatServer

FINDINGS = [
    "Mild cardiomegaly.",
    "The heart size is normal.",
    "Small left pleural effusion.",
    "No pleural effusion.",
    "No pneumothorax.",
    "Possible right lower lobe consolidation.",
    "Mild pulmonary edema.",
    "Bibasilar atelectasis.",
    "Right IJ catheter tip in the SVC.",
    "Endotracheal tube 4 cm above the carina.",
    "A 1 cm nodule in the left upper lobe.",
    "The lungs are clear.",
    "Healed right rib fracture.",
    "Patchy opacity at the left base.",
]
NORMAL = "The lungs are clear. The heart size is normal. No acute cardiopulmonary process."


def workload(args: argparse.Namespace) -> list[list[str]]:
    """Steps of texts: ``epochs * ceil(studies / batch_studies)`` lists of ``batch * K``."""
    rng = random.Random(args.seed)
    variants = [
        [" ".join(rng.sample(FINDINGS, rng.randint(2, 4))) for _ in range(args.variants)]
        for _ in range(args.studies)
    ]
    weights = [0.5 ** (v + 1) for v in range(args.variants)]
    steps = []
    for _ in range(args.epochs):
        order = list(range(args.studies))
        rng.shuffle(order)
        for i in range(0, args.studies, args.batch_studies):
            texts = []
            for study in order[i : i + args.batch_studies]:
                for _ in range(args.k):
                    if rng.random() < args.p_normal:
                        texts.append(NORMAL)
                    else:
                        texts.append(rng.choices(variants[study], weights)[0])
            steps.append(texts)
    return steps


def run(
    name: str, steps: list[list[str]], server: FakeChatServer, cache: Path | None, concurrency: int
) -> dict:
    before = len(server.chat_requests())
    with LLMLabeler(
        "fake-facts", server.base_url, cache_path=cache, concurrency=concurrency, trust_env=False
    ) as labeler:
        start = time.perf_counter()
        for texts in steps:
            labeler.label_batch(texts)
        seconds = time.perf_counter() - start
        s = labeler.summary()
    texts = sum(map(len, steps))
    assert not s.fallbacks, f"{name}: unexpected fallbacks {dict(s.fallbacks)}"
    return {
        "run": name,
        "texts": texts,
        "distinct_per_batch": s.cache_hits + s.cache_misses,
        "requests": len(server.chat_requests()) - before,
        "cache_hit_rate": s.cache_hit_rate if cache is not None else 0.0,
        "seconds": round(seconds, 3),
        "reports_per_s": round(texts / seconds, 1),
        "tokens": s.prompt_tokens + s.completion_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=64, help="studies in the training set")
    parser.add_argument("--k", type=int, default=8, help="rollouts per study per step")
    parser.add_argument("--batch-studies", type=int, default=8, help="studies per step")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the studies")
    parser.add_argument("--variants", type=int, default=3, help="distinct reports per study")
    parser.add_argument(
        "--p-normal", type=float, default=0.2, help="chance a rollout is the shared normal report"
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--seed", type=int, default=0, help="workload seed")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    steps = workload(args)
    rows = []
    with FakeChatServer(latency=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "llm-cache.sqlite"
        rows.append(run("no cache", steps, server, None, args.concurrency))
        rows.append(run("cold cache", steps, server, cache, args.concurrency))
        rows.append(run("warm cache", steps, server, cache, args.concurrency))
        max_in_flight = server.max_in_flight
    distinct = len({t for texts in steps for t in texts})
    print(
        f"workload: {len(steps)} steps x {len(steps[0])} texts ({args.studies} studies, "
        f"K={args.k}, {args.epochs} epochs), {distinct} distinct texts; latency "
        f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency} (max in flight seen "
        f"{max_in_flight})"
    )
    header = [
        "run",
        "texts",
        "distinct_per_batch",
        "requests",
        "cache_hit_rate",
        "seconds",
        "reports_per_s",
    ]
    widths = [10] + [len(h) for h in header[1:]]
    print(" | ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True)))
    for row in rows:
        cells = [f"{row[h]:.1%}" if h == "cache_hit_rate" else str(row[h]) for h in header]
        print(
            " | ".join(
                f"{c:<{w}}" if h == "run" else f"{c:>{w}}"
                for c, h, w in zip(cells, header, widths, strict=True)
            )
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
