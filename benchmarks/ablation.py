"""The paper's ablation on the embedded world: one shared configuration, a row per variant.

    .venv/bin/python benchmarks/ablation.py --docs docs/results.md     # all rows, seeds 0 1 2
    .venv/bin/python benchmarks/ablation.py --seeds 0 --steps 10       # a quick look
    .venv/bin/python benchmarks/ablation.py --rows grpo-facts orapo-1000 --jobs 1 --test-size 100

Every row starts from the same embedded demo base model, runs the recipe of
``src/orapo/train/demo.yaml`` with the shared overrides below plus its own (and ``--set``), and
is scored on the synthetic test split (greedy; clinical P/R/F1 with the ``positive`` protocol,
micro, all14; macro F1; F1 with the test images shuffled among the studies):

================  ========================================================  =================
row               its overrides (all others shared)                         what it tests
================  ========================================================  =================
base              none; no training: the base model, evaluated once         the starting
                  (seed 0; it does not depend on the seed)                  point
sft-1000          ``algorithm.mode=sft`` (as many images per step, steps)   RL vs SFT
grpo-rouge_l      ``algorithm.mode=grpo algorithm.reward=rouge_l``          a text reward
grpo-bleu4        ``algorithm.mode=grpo algorithm.reward=bleu`` (BLEU-4:    a text reward
                  the bleu reward's default ``max_n=4``)
grpo-facts        ``algorithm.mode=grpo`` (FactS, no DPO)                   the DPO term
orapo-400         ``data.train_size=400``                                   data efficiency
orapo-1000        none: OraPO + FactS (beta 2), 1,000 studies               the method
orapo-w-min       ``algorithm.constant_w=0.05`` (w fixed at w_min)          w from the ZRR
orapo-w-max       ``algorithm.constant_w=0.15`` (w fixed at w_max)          w from the ZRR
orapo-beta1       ``algorithm.reward_options={beta: 1.0}`` (the demo's 2)   FactS' beta
dapo-facts        ``algorithm.mode=grpo algorithm.dynamic_sampling=true``,  DAPO's answer to
                  ``trainer.rollout_budget`` = steps x batch x K            zero-reward groups
grpo-facts-hizrr  grpo-facts' overrides plus :data:`HIGH_ZRR`               GRPO, high ZRR
orapo-1000-hizrr  orapo-1000's overrides plus :data:`HIGH_ZRR`              OraPO, high ZRR
================  ========================================================  =================

Shared: ``trainer.steps`` (``--steps``, default 70), batch 16, K 8, rollouts of at most 64
new tokens (the demo's 100 mostly repeat sentences; 64 measured as good at 240 steps,
docs/demo.md), the demo's learning rate; validation every ``max(1, steps // 4)`` steps (the
``val/f1`` curve; the loop skips the last step, which the test evaluation follows), no
intermediate checkpoints (``save_every=0``), no evaluation before training
(``eval.before=false``) but the grounding check after it (``eval.shuffled=true``);
``trainer.seed`` = the row's seed (data order, sampling);
``data.test_size`` = ``--test-size`` (default: the whole test split; a size picks a seeded
subset, so each seed then evaluates its own subset). Every RL row generates the same number of
rollouts (steps x 16 x 8: DAPO's dynamic sampling stops once it has generated that many,
refills counted, checked after each step); SFT sees the same number of images. The image-blind
references (best fixed report, all positive, majority) are not runs: they come from the
``references`` of the runs' ``summary.json``. Each run chooses them on its own training subset
and scores them on its own test subset, so they can differ across runs (``orapo-400``, or seeds
with ``--test-size``): the script checks, and then shows their mean ± sd and a warning.

Runs: each is a normal ``orapo train`` run directory under ``--out`` (``<row>/seed<N>``), run as
a subprocess (``python -m orapo train --out DIR ...``, its output in ``<row>/seed<N>.log``),
``--jobs`` at a time (default 2) with ``trainer.threads`` = cpu_count // jobs (``--set
trainer.threads=N`` wins). When the synthetic world or the base model is not there yet, the
first run goes alone (it makes them; the others read them). Runs whose ``summary.json`` says
``done`` with the same settings (``trainer.threads`` aside) are reused, so an interrupted
ablation continues where it stopped; an unfinished run directory is removed and run again. A
run that fails is named with its log, the others go on, and the script then exits with status 1
(without writing ``--docs``).

Output: ``--out/ablation.json`` (every run's numbers and curves, 3 example reports per run),
plots of the Zero-Reward Rate, w, the reward and the validation F1 over steps
(``--out/ablation-*.png``), and with ``--docs`` the generated part of ``docs/results.md``
(between its ``ablation:begin`` / ``ablation:end`` markers; the analysis around them is written
by hand). Time: measured wall time: see docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orapo.train.tracking import METRICS_FILE, read_summary

#: What the two high-ZRR rows add to their own overrides: a setting where most rollout groups
#: score all zero. The one place to change it.
HIGH_ZRR: dict[str, str] = {"sampling.temperature": "0.3"}


@dataclass(frozen=True)
class Row:
    overrides: dict[str, str]
    label: str
    tests: str  #: what the row tests, in one line
    extends: str | None = None  #: the row a high-ZRR row adds HIGH_ZRR to (drawn dashed)


def _high_zrr(name: str, rows: dict[str, Row], tests: str) -> Row:
    row = rows[name]
    return Row({**row.overrides, **HIGH_ZRR}, f"{row.label}, high ZRR", tests, extends=name)


ROWS: dict[str, Row] = {
    "base": Row({}, "Base model (no training)", "the starting point"),
    "sft-1000": Row(
        {"algorithm.mode": "sft"}, "SFT (1,000)", "RL against supervised learning on the reports"
    ),
    "grpo-rouge_l": Row(
        {"algorithm.mode": "grpo", "algorithm.reward": "rouge_l"},
        "GRPO + ROUGE-L (1,000)",
        "a text-similarity reward instead of FactS",
    ),
    "grpo-bleu4": Row(
        {"algorithm.mode": "grpo", "algorithm.reward": "bleu"},  # BleuReward: max_n=4
        "GRPO + BLEU-4 (1,000)",
        "a text-similarity reward instead of FactS",
    ),
    "grpo-facts": Row({"algorithm.mode": "grpo"}, "GRPO + FactS (1,000)", "FactS without DPO"),
    "orapo-400": Row({"data.train_size": "400"}, "OraPO + FactS (400)", "data efficiency"),
    "orapo-1000": Row({}, "OraPO + FactS (1,000)", "the method"),
    "orapo-w-min": Row(
        {"algorithm.constant_w": "0.05"},
        "OraPO, w fixed at w_min = 0.05 (1,000)",
        "whether w needs to follow the ZRR",
    ),
    "orapo-w-max": Row(
        {"algorithm.constant_w": "0.15"},
        "OraPO, w fixed at w_max = 0.15 (1,000)",
        "whether w needs to follow the ZRR",
    ),
    "orapo-beta1": Row(
        {"algorithm.reward_options": "{beta: 1.0}"},
        "OraPO + FactS beta 1 (1,000)",
        "FactS' recall weight (the demo's beta is 2)",
    ),
    "dapo-facts": Row(
        {"algorithm.mode": "grpo", "algorithm.dynamic_sampling": "true"},
        "DAPO dynamic sampling + FactS (1,000)",
        "DAPO's answer to zero-reward groups, at the same rollout budget",
    ),
}
ROWS["grpo-facts-hizrr"] = _high_zrr("grpo-facts", ROWS, "GRPO when most groups score zero")
ROWS["orapo-1000-hizrr"] = _high_zrr("orapo-1000", ROWS, "OraPO when most groups score zero")

REFERENCE_LABELS = {
    "best_fixed_report": "image-blind: best fixed report",
    "all_positive": "image-blind: all positive",
    "majority": "image-blind: majority",
}
CURVES = ("zrr/raw", "zrr/ema", "mix/w", "reward/mean", "val/f1")
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"


# ---------------------------------------------------------------- settings of a run
def shared_overrides(
    steps: int, test_size: int | None = None, threads: int | None = None
) -> dict[str, str]:
    o = {
        "trainer.steps": str(steps),
        "trainer.batch_size": "16",
        "sampling.k": "8",
        "sampling.max_new_tokens": "64",
        "trainer.eval_every": str(max(1, steps // 4)),
        "trainer.save_every": "0",
        "eval.before": "false",
        "eval.after": "true",
        "eval.shuffled": "true",
        "eval.examples": "4",
        "trainer.report_to": "[]",
    }
    if threads is not None:
        o["trainer.threads"] = str(threads)
    if test_size is not None:
        o["data.test_size"] = str(test_size)
    return o


def row_overrides(
    row: str,
    seed: int,
    steps: int,
    extra: list[str],
    *,
    test_size: int | None = None,
    threads: int | None = None,
) -> list[str]:
    """Shared settings, the seed, the row's own, then ``extra`` (``--set``): a run's overrides."""
    o = shared_overrides(steps, test_size, threads)
    o["trainer.seed"] = str(seed)
    o.update(ROWS[row].overrides)
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected section.field=value")
        o[key] = value
    if row == "base":
        o.update({"trainer.steps": "0", "eval.before": "true", "eval.after": "false"})
    if o.get("algorithm.dynamic_sampling") == "true":  # as many rollouts as the other RL rows
        budget = int(o["trainer.steps"]) * int(o["trainer.batch_size"]) * int(o["sampling.k"])
        o["trainer.rollout_budget"] = str(budget)
    return [f"{k}={v}" for k, v in o.items()]


def same_settings(saved: dict, cfg) -> bool:
    """Whether a finished run's saved config is ``cfg``, the model path aside (a run records
    the resolved base model directory in place of ``builtin:demo-base``) and the thread count
    (``--jobs`` changes it; the numbers do not depend on it)."""
    from orapo.config_io import to_dict

    def strip(d: dict) -> dict:
        model = {k: v for k, v in d.get("model", {}).items() if k != "name_or_path"}
        trainer = {k: v for k, v in d.get("trainer", {}).items() if k != "threads"}
        return {**d, "model": model, "trainer": trainer}

    return strip(json.loads(json.dumps(saved))) == strip(json.loads(json.dumps(to_dict(cfg))))


@dataclass
class Run:
    row: str
    seed: int
    dir: Path
    overrides: list[str]
    reuse: bool = False
    wall: float | None = None  #: seconds this invocation spent on it
    status: str = "pending"  #: pending, reused, done, failed

    @property
    def log(self) -> Path:
        return self.dir.with_name(self.dir.name + ".log")

    @property
    def name(self) -> str:
        return f"{self.row} seed {self.seed}"


def plan(args, threads: int) -> list[Run]:
    """Every run of the ablation, the finished ones marked for reuse (base first)."""
    from orapo.train.run import load_train_config

    rows = sorted(dict.fromkeys(args.rows), key=lambda r: r != "base")
    runs = []
    for row in rows:
        for seed in args.seeds if row != "base" else args.seeds[:1]:
            overrides = row_overrides(
                row, seed, args.steps, args.extra, test_size=args.test_size, threads=threads
            )
            run = Run(row, seed, args.out / row / f"seed{seed}", overrides)
            summary = read_summary(run.dir)
            if summary.get("status") == "done":
                try:
                    cfg, _ = load_train_config(None, overrides, run.dir, None)
                except Exception as err:  # noqa: BLE001 - a bad --set; nothing ran yet
                    raise SystemExit(f"{run.name}: {err}") from None
                if not same_settings(summary.get("config", {}), cfg):
                    raise SystemExit(
                        f"{run.dir} holds a finished run with other settings: remove it or "
                        "choose another --out"
                    )
                run.reuse, run.status = True, "reused"
            runs.append(run)
    return runs


def needs_setup(run: Run) -> bool:
    """Whether this run would generate the synthetic world or build the base model (then it
    goes alone: parallel runs would make them twice, into the same place)."""
    try:
        from orapo.basemodel.build import find_base_model
        from orapo.train.config import DEMO_BASE
        from orapo.train.run import load_train_config
        from orapo.train.setup import manifest_path

        cfg, _ = load_train_config(None, run.overrides, run.dir, None)
    except Exception:  # noqa: BLE001 - the run itself will report it
        return False
    no_base = cfg.model.name_or_path == DEMO_BASE and find_base_model(cfg.base) is None
    return not manifest_path(cfg).is_file() or no_base


# ---------------------------------------------------------------- running them
def start(run: Run) -> tuple[subprocess.Popen, object, float]:
    if run.dir.exists():  # an unfinished run: start it over (metrics.jsonl is append-only)
        print(f"  removing the unfinished run in {run.dir}", flush=True)
        shutil.rmtree(run.dir)
    run.dir.parent.mkdir(parents=True, exist_ok=True)
    log = run.log.open("w", encoding="utf-8")
    cmd = [sys.executable, "-m", "orapo", "train", "--out", str(run.dir), *run.overrides]
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, log, time.perf_counter()


def run_all(runs: list[Run], jobs: int) -> None:
    """Run the runs not reused, ``jobs`` at a time; print a line as each starts and ends."""
    pending = [r for r in runs if not r.reuse]
    total = len(pending)
    print(f"ablation: {total} run(s) to run, {len(runs) - total} reused, {jobs} at a time")
    alone = bool(pending) and needs_setup(pending[0])
    running: dict[subprocess.Popen, tuple[Run, object, float]] = {}
    ended = 0
    try:
        while pending or running:
            while pending and len(running) < (1 if alone else jobs):
                run = pending.pop(0)
                proc, log, t0 = start(run)
                running[proc] = (run, log, t0)
                note = " (alone: it makes the world / base model)" if alone else ""
                print(f"start {run.name}{note}; log {run.log}", flush=True)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                run, log, t0 = running.pop(proc)
                log.close()
                run.wall = time.perf_counter() - t0
                alone, ended = False, ended + 1
                left = f"{ended}/{total} ended, {len(pending)} waiting, {len(running)} running"
                s = read_summary(run.dir)
                if proc.returncode != 0 or s.get("status") != "done":
                    run.status = "failed"
                    print(
                        f"FAILED {run.name} (exit {proc.returncode}) after {run.wall:.0f} s; "
                        f"log {run.log}; {left}",
                        flush=True,
                    )
                    continue
                run.status = "done"
                f1 = (s.get("base") if run.row == "base" else s.get("final")) or {}
                shuffled = s.get("final_shuffled_images") or {}
                print(
                    f"done {run.name}: {run.wall:.0f} s, F1 {_num(f1.get('f1'))}, shuffled F1 "
                    f"{_num(shuffled.get('f1'))}; {left}",
                    flush=True,
                )
    finally:
        for proc, (_, log, _) in running.items():  # interrupted: stop the runs this started
            proc.terminate()
            proc.wait()
            log.close()


# ---------------------------------------------------------------- what a run measured
def collect(run: Run) -> dict:
    """A finished run's numbers, curves and first example reports."""
    from orapo.train.tracking import read_metrics

    summary = read_summary(run.dir)
    result = summary["base"] if run.row == "base" else summary["final"]
    shuffled = summary.get("final_shuffled_images")
    metrics_path = run.dir / METRICS_FILE
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
    curves = {
        key: [(m["step"], m[key]) for m in metrics if m.get(key) is not None] for key in CURVES
    }
    evaluation = run.dir / ("eval-base" if run.row == "base" else "eval-final")
    predictions = [
        json.loads(line)
        for line in (evaluation / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return {
        "row": run.row,
        "seed": run.seed,
        "mode": summary.get("mode"),
        "steps": summary.get("steps", 0),
        "wall_seconds": summary.get("wall_seconds"),
        "precision": result["precision"],
        "recall": result["recall"],
        "f1": result["f1"],
        "f1_macro": result.get("f1_macro"),
        "f1_uncertain_positive": result.get("f1_uncertain_positive"),
        "f1_shuffled": shuffled["f1"] if shuffled else None,
        "grounding_gap": result["f1"] - shuffled["f1"] if shuffled else None,
        "rollouts": int(max((m.get("rollout/generated_total", 0) for m in metrics), default=0)),
        "distinct_reports": len({p["generated"] for p in predictions}),
        "n": len(predictions),
        "examples": [
            {"id": p["id"], "reference": p["reference"], "generated": p["generated"]}
            for p in predictions[:3]
        ],
        "references": summary.get("references", {}),
        "curves": curves,
    }


def references(results: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    """Each image-blind reference as every run reports it, and a line per reference that not
    all runs agree on (each run chooses them on its training subset, scores them on its test
    subset)."""
    out: dict[str, list[dict]] = {}
    groups: dict[str, dict[tuple, list[str]]] = {}
    for r in results:
        for name, ref in r["references"].items():
            out.setdefault(name, []).append(ref)
            groups.setdefault(name, {}).setdefault(_ref_key(ref), []).append(
                f"{r['row']} seed {r['seed']}"
            )
    differ = []
    for name, by_value in groups.items():
        if len(by_value) > 1 or len(out[name]) < len(results):
            versions = [
                f"F1 {key[2]:.3f} ({', '.join(key[3]) or 'nothing positive'}) in "
                + (", ".join(runs) if len(runs) <= 4 else f"{len(runs)} runs")
                for key, runs in sorted(by_value.items(), key=lambda kv: -len(kv[1]))
            ]
            differ.append(f"{REFERENCE_LABELS.get(name, name)}: " + "; ".join(versions))
    return out, differ


def _ref_key(ref: dict) -> tuple:
    return (
        round(ref["precision"], 9),
        round(ref["recall"], 9),
        round(ref["f1"], 9),
        tuple(sorted(ref.get("labels", {}))),
    )


# ---------------------------------------------------------------- tables and plots
def mean_sd(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def curve_mean(run: dict, key: str, last: int | None = None) -> float | None:
    values = [v for _, v in run["curves"].get(key, [])]
    values = values[-last:] if last else values
    return statistics.mean(values) if values else None


def mean_curve(runs: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The step-wise mean of ``key`` over runs (steps all of them reached)."""
    series = [dict(r["curves"][key]) for r in runs if r["curves"].get(key)]
    if not series:
        return [], []
    steps = sorted(set.intersection(*(set(s) for s in series)))
    return steps, [statistics.mean(s[t] for s in series) for t in steps]


def table(results: list[dict], rows: list[str], refs: dict[str, list[dict]]) -> str:
    """Mean ± sd over seeds per row, the image-blind references first."""
    head = (
        "| row | seeds | precision | recall | **F1** | macro F1 | F1, images shuffled "
        "| grounding gap | mean ZRR | mean w | reward, last 10 steps | rollouts "
        "| distinct reports |\n" + "|---" * 13 + "|"
    )
    lines = [head]
    for name, values in refs.items():
        if len({_ref_key(v) for v in values}) == 1:
            values = values[:1]  # the same in every run: one number, no ± 0
        cells = [mean_sd([v[k] for v in values]) for k in ("precision", "recall", "f1")]
        lines.append(
            f"| {REFERENCE_LABELS.get(name, name)} | - | {cells[0]} | {cells[1]} | {cells[2]} "
            + "| - " * 8
            + "|"
        )
    for row in rows:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue

        def col(key: str, runs=runs) -> str:
            return mean_sd([r[key] for r in runs if r[key] is not None])

        zrr = [m for r in runs if (m := curve_mean(r, "zrr/raw")) is not None]
        w = [m for r in runs if r["mode"] == "orapo" and (m := curve_mean(r, "mix/w")) is not None]
        tail = [m for r in runs if (m := curve_mean(r, "reward/mean", last=10)) is not None]
        rollouts = int(statistics.mean(r["rollouts"] for r in runs))
        distinct = f"{mean_sd([r['distinct_reports'] for r in runs], 0)} of {runs[0]['n']}"
        lines.append(
            f"| {ROWS[row].label} | {len(runs)} | {col('precision')} | {col('recall')} "
            f"| **{col('f1')}** | {col('f1_macro')} | {col('f1_shuffled')} "
            f"| {col('grounding_gap')} | {mean_sd(zrr)} | {mean_sd(w)} | {mean_sd(tail)} "
            f"| {rollouts or '-'} | {distinct} |"
        )
    return "\n".join(lines)


def per_seed_table(results: list[dict], rows: list[str], seeds: list[int]) -> str:
    """Each seed's F1 and F1 with the images shuffled."""
    head = "| row | " + " | ".join(f"F1 seed {s} | shuffled seed {s}" for s in seeds) + " |"
    lines = [head, "|---" * (1 + 2 * len(seeds)) + "|"]
    for row in rows:
        by_seed = {r["seed"]: r for r in results if r["row"] == row}
        if not by_seed:
            continue
        cells = []
        for s in seeds:
            r = by_seed.get(s, {})
            cells += [_num(r.get("f1")), _num(r.get("f1_shuffled"))]
        lines.append(f"| {ROWS[row].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], rows: list[str], out: Path) -> list[Path]:
    """One PNG per curve, mean over seeds, every RL row (high-ZRR rows dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orapo.atomic import atomic_path

    panels = [
        ("zrr", "zrr/raw", "Zero-Reward Rate (raw, mean over seeds)"),
        ("w", "mix/w", "OraPO mixing weight w (mean over seeds)"),
        ("reward", "reward/mean", "mean reward of the rollouts (mean over seeds)"),
        ("val_f1", "val/f1", "validation F1 (positive, micro, all14; mean over seeds)"),
    ]
    families = [r for r in ROWS if ROWS[r].extends is None]
    colors = plt.get_cmap("tab10").colors
    written = []
    for name, key, title in panels:
        fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
        for row in rows:
            runs = [r for r in results if r["row"] == row and r["mode"] in ("orapo", "grpo")]
            if key == "mix/w":
                runs = [r for r in runs if r["mode"] == "orapo"]
            steps, values = mean_curve(runs, key)
            if not steps:
                continue
            family = ROWS[row].extends or row
            ax.plot(
                steps,
                values,
                label=ROWS[row].label,
                color=colors[families.index(family) % len(colors)],
                linestyle="--" if ROWS[row].extends else "-",
                marker="o" if key == "val/f1" else None,
                markersize=3,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        path = out / f"ablation-{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------- the page
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


def page(
    args,
    command: str,
    threads: str,
    wall: float,
    runs: list[Run],
    results: list[dict],
    tables: list[str],
    differ,
) -> list[str]:
    ran = sum(r.status == "done" for r in runs)
    run_minutes = sum(r["wall_seconds"] or 0 for r in results) / 60
    size = "the whole test split" if args.test_size is None else f"{args.test_size} studies"
    legend = [
        f"- {row.label}: {row.tests}" + (f" (`{_overrides(row)}`)" if row.overrides else "")
        for name, row in ROWS.items()
        if name in args.rows
    ]
    return [
        f"Command: `{command.strip()}`.",
        "",
        f"{len(args.seeds)} seed(s), {args.steps} steps per trained row, test size: {size}; "
        f"{args.jobs} run(s) at a time (trainer.threads {threads}); {wall / 60:.1f} min wall "
        f"time for this invocation ({ran} run(s) run, {len(runs) - ran} reused; the runs' own wall "
        f"times add up to {run_minutes:.1f} min).",
        "",
        f"Machine: {machine()}.",
        "",
        "Rows:",
        "",
        *legend,
        "",
        "Clinical metrics on the synthetic test split (greedy; positive protocol, micro, all14 "
        "unless named); mean ± standard deviation over seeds. F1, images shuffled: each test "
        "report scored against what the model writes for another study's image (the grounding "
        "check); grounding gap: F1 minus that (about 0 for a model that does not read the "
        "image). Mean ZRR: the raw Zero-Reward Rate averaged over steps (for dynamic sampling, "
        "of the first draw of each step); mean w: the mixing weight averaged over steps (OraPO "
        "rows only); reward: the row's own reward over its last 10 steps (not comparable across "
        "rewards); rollouts: generated over the run; distinct reports: different greedy test "
        "reports. The image-blind references write the same labels for every study"
        + (
            " (identical in every run)."
            if not differ
            else "; they differ across runs (each run chooses them on its training subset and "
            "scores them on its test subset), so the table shows their mean ± sd over runs: "
            + " / ".join(differ)
            + "."
        ),
        "",
        tables[0],
        "",
        "Per seed:",
        "",
        tables[1],
        "",
    ]


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"), help="run directories")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=70, help="optimizer steps per trained row")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    ap.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="test studies per run (data.test_size; default: the whole test split)",
    )
    ap.add_argument(
        "--set",
        dest="extra",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides applied to every row, last (e.g. trainer.threads=1)",
    )
    ap.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="write the generated part of this results page (docs/results.md)",
    )
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")

    from orapo.atomic import atomic_path, atomic_write_text

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    runs = plan(args, threads)
    run_all(runs, args.jobs)
    failed = [r for r in runs if r.status == "failed"]
    results = [collect(r) for r in runs if r.status in ("done", "reused")]
    rows = list(dict.fromkeys(r.row for r in runs))
    refs, differ = references(results)
    for line in differ:
        print(f"WARNING: the image-blind references differ across runs: {line}")
    wall = time.perf_counter() - started
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    effective = dict(o.split("=", 1) for o in runs[0].overrides) if runs else {}
    record = {
        "command": command.strip(),
        "seeds": args.seeds,
        "steps": args.steps,
        "jobs": args.jobs,
        "test_size": args.test_size,
        "wall_seconds": round(wall, 1),
        "references": {name: values[0] if not differ else values for name, values in refs.items()},
        "references_agree": not differ,
        "references_differ": differ,
        "failed": [{"row": r.row, "seed": r.seed, "log": str(r.log)} for r in failed],
        "runs": results,
    }
    atomic_write_text(args.out / "ablation.json", json.dumps(record, indent=1) + "\n")
    plots = plot(results, rows, args.out)
    tables = [table(results, rows, refs), per_seed_table(results, rows, args.seeds)]
    print(tables[0], tables[1], sep="\n\n")
    print("plots: " + ", ".join(str(p) for p in plots))
    if failed:
        print(f"{len(failed)} run(s) FAILED:")
        for r in failed:
            print(f"  {r.name}: log {r.log}")
    elif args.docs is not None:
        figures = args.docs.parent / "results"
        links = []
        for p in plots:
            with atomic_path(figures / p.name) as tmp:
                tmp.write_bytes(p.read_bytes())
            links.append(f"![{p.stem}](results/{p.name})")
        threads_used = effective.get("trainer.threads", "-")
        body = page(args, command, threads_used, wall, runs, results, tables, differ)
        write_docs(args.docs, "\n".join([*body, *links]))
        print(f"wrote {args.docs}")
    print(f"ablation: {time.perf_counter() - started:.0f} s wall in all")
    if failed and args.docs is not None:
        print(f"{args.docs} not written: the ablation is incomplete")
    return 1 if failed else 0


def _overrides(row: Row) -> str:
    return " ".join(f"{k}={v}" for k, v in row.overrides.items())


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
