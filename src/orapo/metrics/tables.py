"""Human-readable views of clinical results: a rich table for the terminal, markdown for docs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from orapo.metrics.clinical import AVERAGES, ClinicalResult

if TYPE_CHECKING:
    from rich.table import Table


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def format_clinical_table(results: Mapping[str, ClinicalResult]) -> Table:
    """One row per result (e.g. the output of :func:`clinical_report`), one "P / R / F1"
    column per average; the first column is the result's ``protocol/observation_set``, so no
    number appears without its protocol. Print with ``rich.console.Console().print(table)``."""
    from rich.table import Table

    table = Table(title="Clinical efficacy (P / R / F1; zero denominators count as 0)")
    table.add_column("protocol / observations", style="bold")
    table.add_column("reports", justify="right")
    for avg in AVERAGES:
        table.add_column(f"{avg} P / R / F1", justify="right")
    for result in results.values():
        cells = [result.name, str(result.n_reports)]
        for avg in AVERAGES:
            prf = result.average(avg)
            cells.append(f"{_fmt(prf.precision)} / {_fmt(prf.recall)} / {_fmt(prf.f1)}")
        table.add_row(*cells)
    return table


def per_observation_markdown(result: ClinicalResult) -> str:
    """A markdown table: one row per observation (P, R, F1, support = reference positives),
    then one row per average, under a caption naming the protocol and observation set."""
    lines = [
        f"Protocol `{result.protocol}`, observations `{result.observation_set}`, "
        f"{result.n_reports} reports.",
        "",
        "| observation | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = list(result.per_observation.items())
    rows += [(f"**{avg}**", result.average(avg)) for avg in AVERAGES]
    for name, prf in rows:
        lines.append(
            f"| {name} | {_fmt(prf.precision)} | {_fmt(prf.recall)} | {_fmt(prf.f1)} "
            f"| {prf.support} |"
        )
    return "\n".join(lines) + "\n"
