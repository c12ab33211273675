"""The paper's ablation on the embedded world: one shared configuration, a row per variant.

    .venv/bin/python benchmarks/ablation.py                        # all rows, seeds 0 1 2
    .venv/bin/python benchmarks/ablation.py --seeds 0 --steps 10   # a quick look
    .venv/bin/python benchmarks/ablation.py --set trainer.threads=1 --rows grpo-facts orapo-1000

Every row starts from the same embedded demo base model, runs the recipe of
``src/orapo/train/demo.yaml`` with the shared overrides below plus its own (and ``--set``), and
is scored on the whole synthetic test split (greedy, clinical P/R/F1 with the ``positive``
protocol, micro, all14; plus F1 with the ``uncertain-positive`` protocol):

==============  ==========================================================================
row             its overrides (all others shared)
==============  ==========================================================================
base            no training: the base model, evaluated once (it does not depend on the seed)
grpo-rouge_l    ``algorithm.mode=grpo algorithm.reward=rouge_l`` (a text-similarity reward)
grpo-facts      ``algorithm.mode=grpo`` (FactS)
orapo-400       ``data.train_size=400`` (OraPO, FactS)
orapo-1000      (OraPO, FactS, 1,000 studies)
sft-1000        ``algorithm.mode=sft`` (the same number of images per step and steps)
dapo-facts      ``algorithm.mode=grpo algorithm.dynamic_sampling=true`` and
                ``trainer.rollout_budget`` = steps x batch x K: DAPO's dynamic sampling stops
                when it has generated as many rollouts as the other rows (refills count)
==============  ==========================================================================

Shared: ``trainer.steps`` (``--steps``, default 40), batch 16, K 8, the demo's learning rate
and lengths, no intermediate validation or checkpoints (``eval_every=0 save_every=0``),
``trainer.seed`` = the row's seed (data order, sampling). Every RL row generates the same
number of rollouts (steps x 16 x 8); SFT sees the same number of images.

Each run is a normal ``orapo train`` run directory under ``--out`` (``<row>/seed<N>``); runs whose
``summary.json`` says ``done`` are reused, so an interrupted ablation continues where it
stopped. The script writes ``--out/ablation.json`` (every run's numbers), plots of the
Zero-Reward Rate and of w over steps, and, with ``--docs``, the generated part of
``docs/results.md`` (between its ``ablation:begin`` / ``ablation:end`` markers; the analysis
around them is written by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROWS: dict[str, dict[str, str]] = {
    "base": {},
    "grpo-rouge_l": {"algorithm.mode": "grpo", "algorithm.reward": "rouge_l"},
    "grpo-facts": {"algorithm.mode": "grpo"},
    "orapo-400": {"data.train_size": "400"},
    "orapo-1000": {},
    "sft-1000": {"algorithm.mode": "sft"},
    "dapo-facts": {"algorithm.mode": "grpo", "algorithm.dynamic_sampling": "true"},
}
LABELS = {
    "base": "Base model (no training)",
    "grpo-rouge_l": "GRPO + ROUGE-L (1,000)",
    "grpo-facts": "GRPO + FactS (1,000)",
    "orapo-400": "OraPO + FactS (400)",
    "orapo-1000": "OraPO + FactS (1,000)",
    "sft-1000": "SFT (1,000)",
    "dapo-facts": "DAPO dynamic sampling + FactS (1,000)",
}
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"


def shared_overrides(steps: int) -> dict[str, str]:
    return {
        "trainer.steps": str(steps),
        "trainer.batch_size": "16",
        "sampling.k": "8",
        "trainer.eval_every": "0",
        "trainer.save_every": "0",
        "eval.before": "false",
        "eval.examples": "4",
        "trainer.report_to": "[]",
    }


def row_overrides(row: str, seed: int, steps: int, extra: list[str]) -> list[str]:
    o = shared_overrides(steps)
    o["trainer.seed"] = str(seed)
    o.update(ROWS[row])
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected section.field=value")
        o[key] = value
    if row == "base":
        o.update({"trainer.steps": "0", "eval.before": "true", "eval.after": "false"})
    if row == "dapo-facts":
        budget = int(o["trainer.steps"]) * int(o["trainer.batch_size"]) * int(o["sampling.k"])
        o["trainer.rollout_budget"] = str(budget)
    return [f"{k}={v}" for k, v in o.items()]


def run_one(row: str, seed: int, steps: int, extra: list[str], out: Path, console) -> dict:
    """One run (or the finished one already in its directory): its numbers and curves."""
    from orapo.train.run import load_train_config, run_training
    from orapo.train.tracking import read_metrics

    run_dir = out / row / f"seed{seed}"
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    cfg, _ = load_train_config(None, row_overrides(row, seed, steps, extra), run_dir, None)
    if summary.get("status") == "done" and not same_settings(summary.get("config", {}), cfg):
        raise SystemExit(
            f"{run_dir} holds a finished run with other settings: remove it or choose another --out"
        )
    if summary.get("status") != "done":
        started = time.perf_counter()
        summary = run_training(cfg, run_dir, console=console)
        console.print(f"{row} seed {seed}: {time.perf_counter() - started:.0f} s")
    result = summary["base"] if row == "base" else summary["final"]
    metrics = read_metrics(run_dir / "metrics.jsonl") if row != "base" else []
    curve = {
        key: [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        for key in ("zrr/raw", "zrr/ema", "mix/w", "reward/mean")
    }
    return {
        "row": row,
        "seed": seed,
        "steps": summary.get("steps", 0),
        "wall_seconds": summary.get("wall_seconds"),
        "precision": result["precision"],
        "recall": result["recall"],
        "f1": result["f1"],
        "f1_uncertain_positive": result["f1_uncertain_positive"],
        "rollouts": max((m.get("rollout/generated_total", 0) for m in metrics), default=0),
        "curves": curve,
    }


def same_settings(saved: dict, cfg) -> bool:
    """Whether a finished run's saved config is ``cfg`` (the model path aside: a run records
    the resolved base model directory in place of ``builtin:demo-base``)."""
    from orapo.config_io import to_dict

    def strip(d: dict) -> dict:
        return {**d, "model": {k: v for k, v in d.get("model", {}).items() if k != "name_or_path"}}

    return strip(json.loads(json.dumps(saved))) == strip(json.loads(json.dumps(to_dict(cfg))))


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def mean_curve(runs: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The step-wise mean of ``key`` over runs (steps all of them reached)."""
    series = [dict(r["curves"][key]) for r in runs if r["curves"].get(key)]
    if not series:
        return [], []
    steps = sorted(set.intersection(*(set(s) for s in series)))
    return steps, [statistics.mean(s[t] for s in series) for t in steps]


def tail_mean(run: dict, key: str, last: int = 10) -> float | None:
    values = [v for _, v in run["curves"].get(key, [])][-last:]
    return statistics.mean(values) if values else None


def table(results: list[dict], rows: list[str]) -> str:
    head = (
        "| row | seeds | precision | recall | **F1** | F1 (uncertain-positive) "
        "| mean ZRR | reward, last 10 steps | rollouts |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue
        zrr = [
            statistics.mean(v for _, v in r["curves"]["zrr/raw"])
            for r in runs
            if r["curves"].get("zrr/raw")
        ]
        tail = [t for r in runs if (t := tail_mean(r, "reward/mean")) is not None]
        rollouts = int(statistics.mean(r["rollouts"] for r in runs))
        lines.append(
            f"| {LABELS[row]} | {len(runs)} | {mean_sd([r['precision'] for r in runs])} "
            f"| {mean_sd([r['recall'] for r in runs])} | **{mean_sd([r['f1'] for r in runs])}** "
            f"| {mean_sd([r['f1_uncertain_positive'] for r in runs])} "
            f"| {mean_sd(zrr) if zrr else '-'} | {mean_sd(tail) if tail else '-'} "
            f"| {rollouts or '-'} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = [
        (
            "zrr",
            "zrr/raw",
            "Zero-Reward Rate (raw, mean over seeds)",
            ["grpo-facts", "orapo-1000", "orapo-400", "dapo-facts", "grpo-rouge_l"],
        ),
        ("w", "mix/w", "OraPO mixing weight w (mean over seeds)", ["orapo-1000", "orapo-400"]),
        (
            "reward",
            "reward/mean",
            "mean reward of the rollouts (mean over seeds)",
            ["grpo-facts", "orapo-1000", "orapo-400", "dapo-facts"],
        ),
    ]
    for name, key, title, rows in panels:
        fig, ax = plt.subplots(figsize=(6.5, 3.5), dpi=100)
        for row in rows:
            steps, values = mean_curve([r for r in results if r["row"] == row], key)
            if steps:
                ax.plot(steps, values, label=LABELS[row])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"ablation-{name}.png"
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, path)
        written.append(path)
    return written


def machine() -> str:
    import torch

    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average at the end {os.getloadavg()[0]:.1f}"
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}{load}"
    )


def write_docs(path: Path, body: str) -> None:
    from orapo.atomic import atomic_write_text

    block = f"{BEGIN}\n{body}\n{END}"
    text = path.read_text(encoding="utf-8") if path.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers to write between")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    atomic_write_text(path, head + block + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"), help="run directories")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per trained row")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument(
        "--set",
        dest="extra",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides applied to every row (e.g. trainer.threads=1)",
    )
    ap.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="write the generated part of this results page (docs/results.md)",
    )
    args = ap.parse_args(argv)

    from rich.console import Console

    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = []
    for row in args.rows:
        for seed in args.seeds if row != "base" else args.seeds[:1]:
            console.rule(f"{row}, seed {seed}")
            results.append(run_one(row, seed, args.steps, args.extra, args.out, console))
    wall = time.perf_counter() - started
    from orapo.atomic import atomic_write_text

    atomic_write_text(args.out / "ablation.json", json.dumps(results, indent=1) + "\n")
    plots = plot(results, args.out)
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = table(results, args.rows)
    console.print(md)
    console.print(
        f"ablation: {wall:.0f} s for the runs not already done; plots: "
        + ", ".join(str(p) for p in plots)
    )
    if args.docs is not None:
        figures = args.docs.parent / "results"
        figures.mkdir(parents=True, exist_ok=True)
        links = []
        for p in plots:
            target = figures / p.name
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(p.read_bytes())
            os.replace(tmp, target)
            links.append(f"![{p.stem}](results/{p.name})")
        body = "\n".join(
            [
                f"Command: `{command.strip()}` ({len(args.seeds)} seed(s), {args.steps} steps per "
                f"trained row; {wall / 60:.1f} min of runs in this invocation).",
                "",
                f"Machine: {machine()}.",
                "",
                "Clinical metrics on the synthetic test split (greedy; positive protocol, micro, "
                "all14 unless named); mean ± standard deviation over seeds. Mean ZRR: the raw "
                "Zero-Reward Rate averaged over steps (for dynamic sampling, of the first draw of "
                "each step).",
                "",
                md,
                "",
                *links,
            ]
        )
        write_docs(args.docs, body)
        console.print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
