"""The summary of a conversion: ``prepare_summary.json`` and the table ``orapo data prepare``
prints (kept per split, skipped per reason with an example, label sources, notes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from orapo.datasets.reporting import SkipLog
from orapo.datasets.spec import Collected, DatasetSpec, PrepareOptions
from orapo.manifest import Study


def build_summary(
    spec: DatasetSpec,
    options: PrepareOptions,
    collected: Collected,
    log: SkipLog,
    studies: list[Study],
    label_sources: Counter,
) -> dict[str, Any]:
    from orapo import __version__

    by_split = Counter(s.split for s in studies)
    return {
        "orapo_version": __version__,
        "dataset": spec.name,
        "format": options.format,
        "manifest": options.manifest_name,
        "inputs": collected.inputs,
        "options": options.to_json(),
        "kept": {
            "total": len(studies),
            **{name: by_split.get(name, 0) for name in ("train", "val", "test")},
        },
        "skipped": {
            "total": log.total,
            "by_reason": {
                reason: {"count": count, "examples": log.examples.get(reason, [])}
                for reason, count in sorted(log.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            },
        },
        "labels": {"requested": options.labels, "by_source": dict(sorted(label_sources.items()))},
        "notes": dict(sorted(log.notes.items())),
    }


def render_summary(summary: Mapping[str, Any], console: Any) -> None:
    """Print the kept / skipped tables of a prepare summary with rich."""
    from rich.table import Table

    kept = summary["kept"]
    table = Table(title=f"orapo data prepare {summary['dataset']}: kept and skipped")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_column("first example")
    for name in ("train", "val", "test"):
        table.add_row(f"kept: {name}", str(kept[name]), "")
    table.add_row("kept: total", str(kept["total"]), "", end_section=True)
    for reason, info in summary["skipped"]["by_reason"].items():
        table.add_row(f"skipped: {reason}", str(info["count"]), (info["examples"] or [""])[0])
    table.add_row("skipped: total", str(summary["skipped"]["total"]), "", end_section=True)
    for source, count in summary["labels"]["by_source"].items():
        table.add_row(f"labels: {source}", str(count), "")
    for note, count in summary["notes"].items():
        table.add_row(f"note: {note}", str(count), "")
    console.print(table)
