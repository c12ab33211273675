"""Throughput of the synthetic world: whole datasets written to disk, and each stage alone.

    .venv/bin/python benchmarks/synth_speed.py                      # n=1000, 112 px
    .venv/bin/python benchmarks/synth_speed.py --n 2000 --size 224 --workers 1 2 --repeat 3

For each ``--workers`` value, times :func:`orapo.synth.generate` writing ``--n`` studies with
PNG images (manifest, images, contact sheet; the same work as ``orapo data synth``) into a
temporary folder, and prints studies/s (best of ``--repeat`` runs; the machine may be shared,
so the load average is printed beside it). Then times each stage of one study on one core:
drawing the spec, writing the report, rendering the image, encoding the PNG. The target of
the issue is >= 200 studies/s with images at 112 px on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from orapo.synth import generate, render_image, sample_spec, study_rngs, write_report
from orapo.synth.generate import png_bytes


def time_generate(n: int, size: int, workers: int, repeat: int) -> float:
    """Best wall-clock seconds of ``repeat`` runs of generate(n) with images."""
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate(Path(tmp) / "ds", n, seed=0, size=size, progress=False, workers=workers)
            best = min(best, time.perf_counter() - start)
    return best


def time_stages(n: int, size: int) -> dict[str, float]:
    """Mean milliseconds per study of each stage, one core."""
    totals = dict.fromkeys(("spec", "report", "render", "png"), 0.0)
    for i in range(n):
        spec_rng, image_rng, report_rng = study_rngs(0, i)
        t0 = time.perf_counter()
        spec = sample_spec(spec_rng)
        t1 = time.perf_counter()
        write_report(spec, report_rng)
        t2 = time.perf_counter()
        image = render_image(spec, size, image_rng)
        t3 = time.perf_counter()
        png_bytes(image)
        t4 = time.perf_counter()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            totals[key] += dt
    return {key: 1000.0 * value / n for key, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="Studies per dataset.")
    parser.add_argument("--size", type=int, default=112, help="Image side in pixels.")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="Worker counts to time."
    )
    parser.add_argument("--repeat", type=int, default=2, help="Runs per setting (best is kept).")
    parser.add_argument("--stage-n", type=int, default=300, help="Studies for the stage timing.")
    args = parser.parse_args()

    np.random.default_rng(0)  # import numpy's generator machinery before timing
    print(f"orapo.synth: n={args.n}, {args.size} px, {os.cpu_count()} CPUs")
    for workers in args.workers:
        seconds = time_generate(args.n, args.size, workers, args.repeat)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"  workers={workers}: {args.n / seconds:7.1f} studies/s "
            f"({seconds:.2f} s, best of {args.repeat}; load average {load:.2f})"
        )
    stages = time_stages(args.stage_n, args.size)
    total = sum(stages.values())
    parts = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
    print(f"  one core, ms per study: {parts} (sum {total:.2f} = {1000 / total:.0f} studies/s)")


if __name__ == "__main__":
    main()
