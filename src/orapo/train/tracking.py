"""Where metrics go: a JSONL file per run, accelerate's trackers, and PNG plots at the end.

Metric names are namespaced (``reward/mean``, ``zrr/raw``, ``zrr/ema``, ``mix/w``,
``loss/grpo``, ``loss/dpo``, ``val/...``) and defined once, in the metric glossary of
docs/algorithms.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from orapo.atomic import atomic_path, atomic_write_text

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"

#: (file name, title, [metric keys]) of the plots written at the end of a run.
PLOTS: list[tuple[str, str, list[str]]] = [
    ("reward.png", "Reward (mean over rollouts)", ["reward/mean"]),
    ("zrr.png", "Zero-Reward Rate", ["zrr/raw", "zrr/ema"]),
    ("w.png", "Mixing weight w", ["mix/w"]),
    ("losses.png", "Losses", ["loss/grpo", "loss/dpo", "loss/sft"]),
    ("val_f1.png", "Validation clinical F1 (positive, micro, all14)", ["val/f1"]),
]


class MetricsLog:
    """Append-only JSONL of ``{"step": s, ...metrics}`` rows (main process only)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows written after the checkpoint's step, so the log stays exact."""
        if not self.enabled or not self.path.is_file():
            return
        rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """The run's ``summary.json``, written atomically (readers never see half a file)."""
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's ``summary.json``, or ``{}`` when it has none yet."""
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_plots(run_dir: Path) -> list[Path]:
    """One PNG per entry of :data:`PLOTS` that has data; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = read_metrics(path)
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, keys in PLOTS:
        series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for key, points in series.items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=key, marker="o" if len(xs) < 20 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        target = out_dir / name
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(target)
    return written
