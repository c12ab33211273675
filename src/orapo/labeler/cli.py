"""`orapo label`: label report texts with the 14 CheXpert observations.

    orapo label reports.jsonl -o labels.jsonl       # {"id": ..., "text": ...} a line
    orapo label reports.csv --field report           # CSV with columns id, report
    orapo label data/manifest.jsonl                  # a manifest: text = FINDINGS + IMPRESSION
    cat reports.jsonl | orapo label -                # stdin
    orapo label --text "Mild cardiomegaly. No effusion."

Output: JSONL, one line per input record in input order,
``{"id": ..., "labels": {"No Finding": 1 | 0 | -1 | null, ...}}`` with all 14 names.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


class BadRecord(ValueError):
    """An input record that cannot be labeled; the message names the line."""


@dataclass(frozen=True)
class Record:
    line: int
    id: Any
    text: str


def _text_of(obj: dict, field: str, where: str) -> str:
    """The text of one record: ``field``, or for a manifest line FINDINGS + IMPRESSION."""
    from orapo.manifest import format_report

    if field in obj:
        value = obj[field]
        if value is None:
            return ""
        if not isinstance(value, str):
            raise BadRecord(
                f"{where}: field {field!r} must be a string, got {type(value).__name__}"
            )
        return value
    if "findings" in obj or "impression" in obj:
        parts = []
        for name in ("findings", "impression"):
            value = obj.get(name, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise BadRecord(
                    f"{where}: field {name!r} must be a string, got {type(value).__name__}"
                )
            parts.append(value)
        return format_report(parts[0], parts[1])
    raise BadRecord(
        f"{where}: missing field {field!r} (or manifest fields 'findings'/'impression')"
    )


def _id_of(obj: dict, where: str) -> Any:
    if "id" not in obj:
        raise BadRecord(f"{where}: missing field 'id'")
    value = obj["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRecord(f"{where}: field 'id' must be a string or an integer")
    if isinstance(value, str) and not value.strip():
        raise BadRecord(f"{where}: field 'id' is empty")
    return value


def read_jsonl(fh: io.TextIOBase, name: str, field: str) -> Iterator[Record | BadRecord]:
    """Records of a JSONL stream (blank lines are skipped); bad lines come as BadRecord."""
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise BadRecord(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise BadRecord(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield Record(lineno, _id_of(obj, where), _text_of(obj, field, where))
        except BadRecord as err:
            yield err


def read_csv(fh: io.TextIOBase, name: str, field: str) -> Iterator[Record | BadRecord]:
    """Records of a CSV stream with a header row holding ``id`` and ``field`` (or
    ``findings``/``impression``). A header without them is an error for the whole file."""
    reader = csv.DictReader(fh)
    header = reader.fieldnames or []
    if "id" not in header:
        raise typer.BadParameter(f"{name}:1: CSV header has no 'id' column (columns: {header})")
    if field not in header and "findings" not in header and "impression" not in header:
        raise typer.BadParameter(
            f"{name}:1: CSV header has no {field!r} column (nor 'findings'/'impression'); "
            f"columns: {header}"
        )
    for row in reader:
        where = f"{name}:{reader.line_num}"
        try:
            if None in row or any(v is None for v in row.values()):
                raise BadRecord(
                    f"{where}: row has {len(header)} columns expected, got another count"
                )
            yield Record(reader.line_num, _id_of(row, where), _text_of(row, field, where))
        except BadRecord as err:
            yield err


def _format_of(path: Path | None, head: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path is not None and path.suffix.lower() == ".csv":
        return "csv"
    if path is not None and path.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl"
    return "jsonl" if head.lstrip().startswith(("{", "[")) or not head.strip() else "csv"


def _open_input(source: str) -> tuple[io.TextIOBase, str, Path | None]:
    if source == "-":
        return sys.stdin, "<stdin>", None  # type: ignore[return-value]
    path = Path(source)
    if not path.is_file():
        raise typer.BadParameter(f"input file {path} does not exist")
    return path.open(encoding="utf-8", newline=""), str(path), path


def _print_table(text: str, labels: dict, classified: list, labeler_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from orapo.observations import OBSERVATIONS

    names = {1: "positive", 0: "negative", -1: "uncertain", None: ""}
    style = {1: "bold red", 0: "green", -1: "yellow", None: "dim"}
    evidence: dict[str, list[str]] = {}
    for c in classified:
        if c.mention.observation is not None and c.state is not None:
            evidence.setdefault(c.mention.observation, []).append(
                f"{c.mention.text!r} -> {names[c.state]} ({c.reason})"
            )
    table = Table(title=f"{labeler_name} labeler", show_lines=False)
    table.add_column("observation")
    table.add_column("label", justify="right")
    table.add_column("state")
    table.add_column("evidence", overflow="fold")
    for name in OBSERVATIONS:
        state = labels[name]
        table.add_row(
            name,
            "null" if state is None else str(state),
            f"[{style[state]}]{names[state] or 'not mentioned'}[/]",
            "; ".join(evidence.get(name, [])),
        )
    Console().print(table)


def label(
    input: str | None = typer.Argument(
        None,
        help="JSONL or CSV file with an 'id' and a text field per record, or a manifest "
        "(text = FINDINGS + IMPRESSION); '-' reads stdin.",
        show_default=False,
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="JSONL file to write (atomically); default: stdout."
    ),
    field: str = typer.Option("text", "--field", help="Name of the text field or column."),
    text: str | None = typer.Option(
        None, "--text", help="Label this one text and print a readable table instead."
    ),
    labeler_name: str = typer.Option(
        "rule", "--labeler", help="Labeler to use (registered names; see orapo.labeler.LABELERS)."
    ),
    skip_bad: bool = typer.Option(
        False,
        "--skip-bad",
        help="Skip bad records (bad JSON, missing id or text, wrong type) and count them on "
        "stderr instead of stopping with an error.",
    ),
    fmt: str = typer.Option(
        "auto",
        "--format",
        help="Input format: auto (by file suffix, else by the first character), jsonl or csv.",
    ),
) -> None:
    """Label reports with the 14 CheXpert observations (1 / 0 / -1 / null)."""
    from orapo.labeler import LABELERS, get_labeler
    from orapo.manifest import atomic_write_text

    if labeler_name not in LABELERS:
        valid = ", ".join(LABELERS.names())
        raise typer.BadParameter(f"unknown labeler {labeler_name!r}; valid: {valid}")
    if fmt not in ("auto", "jsonl", "csv"):
        raise typer.BadParameter(f"--format must be auto, jsonl or csv, got {fmt!r}")
    if (text is None) == (input is None):
        raise typer.BadParameter("give either INPUT or --text (exactly one)")
    labeler = get_labeler(labeler_name)

    if text is not None:
        labels = labeler.label(text)
        classified = labeler.classify(text) if hasattr(labeler, "classify") else []
        _print_table(text, labels, classified, labeler_name)
        return

    assert input is not None
    fh, name, path = _open_input(input)
    try:
        content = fh.read()
    finally:
        if fh is not sys.stdin:
            fh.close()
    kind = _format_of(path, content[:200], fmt)
    stream = io.StringIO(content, newline=None if kind == "jsonl" else "")
    reader = read_jsonl(stream, name, field) if kind == "jsonl" else read_csv(stream, name, field)
    records: list[Record] = []
    skipped: Counter = Counter()
    for item in reader:
        if isinstance(item, BadRecord):
            if not skip_bad:
                typer.echo(f"error: {item}", err=True)
                raise typer.Exit(1)
            skipped[str(item).split(": ", 1)[-1]] += 1
            continue
        records.append(item)

    lines = _label_records(labeler, records, show_progress=output is not None)
    out_text = "".join(lines)
    if output is not None:
        atomic_write_text(output, out_text)
    else:
        sys.stdout.write(out_text)
        sys.stdout.flush()
    if skipped:
        total = sum(skipped.values())
        typer.echo(f"skipped {total} bad record{'s' if total != 1 else ''}:", err=True)
        for reason, count in skipped.most_common():
            typer.echo(f"  {count} x {reason}", err=True)
    if output is not None:
        typer.echo(f"labeled {len(records)} records -> {output}", err=True)


def _label_records(labeler, records: list[Record], show_progress: bool) -> list[str]:
    def one(r: Record) -> str:
        return json.dumps({"id": r.id, "labels": labeler.label(r.text)}, ensure_ascii=False) + "\n"

    if not show_progress or len(records) < 2000:
        return [one(r) for r in records]
    from rich.progress import Progress

    out = []
    with Progress(transient=True) as bar:
        task = bar.add_task("labeling", total=len(records))
        for i, r in enumerate(records):
            out.append(one(r))
            if i % 500 == 499:
                bar.advance(task, 500)
    return out


def register(app: typer.Typer) -> None:
    """Add ``label`` to ``app`` (the top-level ``orapo`` app)."""
    app.command("label")(label)
