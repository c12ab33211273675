"""`orapo label`: label report texts with the 14 CheXpert observations.

    orapo label reports.jsonl -o labels.jsonl       # {"id": ..., "text": ...} a line
    orapo label reports.csv --field report           # CSV with columns id, report
    orapo label data/manifest.jsonl                  # a manifest: text = FINDINGS + IMPRESSION
    cat reports.jsonl | orapo label -                # stdin
    orapo label --text "Mild cardiomegaly. No effusion."
    orapo label reports.jsonl --extractor llm --model gpt-4o-mini \
        --base-url https://api.openai.com/v1           # the LLM fact extractor (docs/llm.md)

Output: JSONL, one line per input record in input order,
``{"id": ..., "labels": {"No Finding": 1 | 0 | -1 | null, ...}}`` with all 14 names.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

# Help texts quote LLMLabeler's own defaults, so they cannot drift from the code.
from orapo.llm.labeler import default_option as _llm_default

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")

#: Extractors that take the LLM options (``orapo.llm`` registers them into ``LABELERS``).
LLM_EXTRACTORS: tuple[str, ...] = ("llm", "hybrid")

#: Records per ``label_batch`` call of an LLM extractor (deduped and cached per call).
LLM_CHUNK = 256


def default_llm_cache() -> Path:
    """The per-user LLM answer cache: ``$XDG_CACHE_HOME/orapo/llm-cache.sqlite``, by default
    ``~/.cache/orapo/llm-cache.sqlite`` (a relative ``XDG_CACHE_HOME`` is ignored, as the XDG
    spec says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "orapo" / "llm-cache.sqlite"


def llm_options(
    extractor: str,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    cache: Path | None = None,
    no_cache: bool = False,
    concurrency: int | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    no_fallback: bool = False,
    price_in: float | None = None,
    price_out: float | None = None,
    response_format: str | None = None,
    max_fallback_rate: float | None = None,
) -> dict[str, Any]:
    """The ``LLMLabeler`` keyword options the CLI flags ask for (unset flags keep its defaults).

    For an extractor outside :data:`LLM_EXTRACTORS` any LLM flag is an error
    (``typer.BadParameter`` naming the flags); for an LLM extractor the cache defaults to
    :func:`default_llm_cache` unless ``no_cache``. ``max_fallback_rate`` is the command's
    own rule over the whole run (:func:`fallback_failure`), so the labeler's per-batch check
    is turned off (``max_fallback_rate=None`` in the options).
    """
    given = {
        "--base-url": base_url,
        "--model": model,
        "--api-key-env": api_key_env,
        "--cache": cache,
        "--no-cache": True if no_cache else None,
        "--concurrency": concurrency,
        "--timeout": timeout,
        "--deadline": deadline,
        "--no-fallback": True if no_fallback else None,
        "--price-in": price_in,
        "--price-out": price_out,
        "--response-format": response_format,
        "--max-fallback-rate": max_fallback_rate,
    }
    named = [flag for flag, value in given.items() if value is not None]
    if extractor not in LLM_EXTRACTORS:
        if named:
            raise typer.BadParameter(
                f"{', '.join(named)} only apply to the LLM extractors "
                f"({', '.join(LLM_EXTRACTORS)}), not to {extractor!r}"
            )
        return {}
    if cache is not None and no_cache:
        raise typer.BadParameter("give --cache PATH or --no-cache, not both")
    keys = {
        "--base-url": "base_url",
        "--model": "model",
        "--api-key-env": "api_key_env",
        "--concurrency": "concurrency",
        "--timeout": "timeout",
        "--deadline": "deadline",
        "--price-in": "price_per_1k_input",
        "--price-out": "price_per_1k_output",
        "--response-format": "response_format",
    }
    options: dict[str, Any] = {
        key: given[flag] for flag, key in keys.items() if given[flag] is not None
    }
    if "model" not in options:
        raise typer.BadParameter(
            f"the {extractor!r} extractor needs --model (the model name the server serves)"
        )
    options["cache_path"] = None if no_cache else (cache or default_llm_cache())
    options["fallback"] = not no_fallback
    options["max_fallback_rate"] = None
    return options


#: ``--max-fallback-rate`` when not given: no report may fall back (a run that used the rule
#: labeler instead of the model fails loudly rather than passing for a model's labels).
DEFAULT_MAX_FALLBACK_RATE = 0.0


def fallback_failure(labeler: Any, limit: float) -> str | None:
    """The one-line reason why the run fails the loud-failure rule (more than ``limit`` of the
    reports asked of the model fell back to the rule labeler), or None when it passes."""
    summary = getattr(labeler, "summary", None)
    if summary is None:
        return None
    from orapo.llm.labeler import fallback_message

    stats = summary()
    fell, asked = sum(stats.fallbacks.values()), stats.cache_misses
    if not asked or fell / asked <= limit:
        return None
    return (
        fallback_message(
            fell, asked, stats.fallbacks, limit, labeler.model, labeler.client.base_url
        )
        + "; see the summary above, or accept it with --max-fallback-rate"
    )


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
    from orapo.manifest import read_jsonl as json_lines

    for line in json_lines(fh, name):
        try:
            if line.problem is not None:
                raise BadRecord(f"{line.where}: {line.problem}")
            obj = line.value
            if not isinstance(obj, dict):
                raise BadRecord(f"{line.where}: expected a JSON object, got {type(obj).__name__}")
            yield Record(line.line, _id_of(obj, line.where), _text_of(obj, field, line.where))
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


STATE_WORDS = {1: "positive", 0: "negative", -1: "uncertain", None: ""}


def _rule_evidence(classified: list) -> dict[str, list[str]]:
    """Per observation, the rule labeler's mentions with their states and reasons."""
    evidence: dict[str, list[str]] = {}
    for c in classified:
        if c.mention.observation is not None and c.state is not None:
            evidence.setdefault(c.mention.observation, []).append(
                f"{c.mention.text!r} -> {STATE_WORDS[c.state]} ({c.reason})"
            )
    return evidence


def _fact_evidence(facts: Sequence[Any], source: str, reason: str | None) -> dict[str, list[str]]:
    """Per observation, an LLM extraction's facts (``source``: llm, cache, rule, fallback)."""
    where = f"{source}: {reason}" if reason else source
    evidence: dict[str, list[str]] = {}
    for fact in facts:
        if fact.observation is not None:
            evidence.setdefault(fact.observation, []).append(
                f"{fact.text!r} -> {STATE_WORDS[fact.state]} ({where})"
            )
    return evidence


def _print_table(labels: dict, evidence: dict[str, list[str]], labeler_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from orapo.observations import OBSERVATIONS

    names = STATE_WORDS
    style = {1: "bold red", 0: "green", -1: "yellow", None: "dim"}
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
    extractor: str = typer.Option(
        "rule",
        "--extractor",
        "--labeler",
        help="Extractor (labeler) by registered name: rule, llm (a chat model through any "
        "OpenAI-compatible server), hybrid (the model only where the rule labeler is uncertain "
        "or finds nothing). --labeler is an alias.",
    ),
    differential: str = typer.Option(
        "positive",
        "--differential",
        help="Rule labeler: how a finding named in a differential ('atelectasis versus "
        "infiltrate') is read: positive (as NLM's MeSH coders read it) or uncertain "
        "(CheXpert's convention).",
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
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="LLM: API root of the OpenAI-compatible server, ending in /v1 "
        f"(default: {_llm_default('base_url')}).",
        show_default=False,
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="LLM: the model name the server serves (required).",
        show_default=False,
    ),
    api_key_env: str | None = typer.Option(
        None,
        "--api-key-env",
        help="LLM: environment variable holding the API key; unset or empty: no auth header "
        f"(default: {_llm_default('api_key_env')}).",
        show_default=False,
    ),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="LLM: SQLite answer cache, shared across runs and processes "
        "(default: $XDG_CACHE_HOME/orapo/llm-cache.sqlite, else "
        "~/.cache/orapo/llm-cache.sqlite).",
        show_default=False,
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="LLM: no persistent answer cache (batches still dedupe)."
    ),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        help=f"LLM: requests in flight at most (default: {_llm_default('concurrency')}).",
        show_default=False,
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        help=f"LLM: seconds for one request (default: {_llm_default('timeout'):g}).",
        show_default=False,
    ),
    deadline: float | None = typer.Option(
        None,
        "--deadline",
        help="LLM: seconds per report, all retries and waits together "
        f"(default: {_llm_default('deadline'):g}).",
        show_default=False,
    ),
    no_fallback: bool = typer.Option(
        False,
        "--no-fallback",
        help="LLM: a report the model cannot label fails the command (exit 1; the answers "
        "that arrived stay cached) instead of being labelled by the rule labeler.",
    ),
    price_in: float | None = typer.Option(
        None,
        "--price-in",
        min=0.0,
        help="LLM: price per 1,000 prompt tokens, for the cost in the summary "
        f"(default: {_llm_default('price_per_1k_input'):g}).",
        show_default=False,
    ),
    price_out: float | None = typer.Option(
        None,
        "--price-out",
        min=0.0,
        help="LLM: price per 1,000 completion tokens, for the cost in the summary "
        f"(default: {_llm_default('price_per_1k_output'):g}).",
        show_default=False,
    ),
    response_format: str | None = typer.Option(
        None,
        "--response-format",
        help="LLM: how the answer's JSON shape is asked for: auto (try json_schema, then step "
        "down on a refusal: json_object_schema, guided_json, json_object, none), or one of "
        f"those (default: {_llm_default('response_format')}).",
        show_default=False,
    ),
    max_fallback_rate: float | None = typer.Option(
        None,
        "--max-fallback-rate",
        min=0.0,
        max=1.0,
        help="LLM: the share of the reports asked of the model that may fall back to the rule "
        "labeler; more, and the command fails (exit 1, nothing written) "
        f"(default: {DEFAULT_MAX_FALLBACK_RATE:g}: none may).",
        show_default=False,
    ),
) -> None:
    """Label reports with the 14 CheXpert observations (1 / 0 / -1 / null).

    With --extractor llm or hybrid, a token/cost/cache/fallback summary goes to stderr.
    """
    from orapo.atomic import atomic_write_text
    from orapo.labeler import LABELERS, get_labeler
    from orapo.labeler.rule import DIFFERENTIAL_MODES

    if extractor not in LABELERS:
        valid = ", ".join(LABELERS.names())
        raise typer.BadParameter(f"unknown extractor {extractor!r}; valid: {valid}")
    if differential not in DIFFERENTIAL_MODES:
        raise typer.BadParameter(
            f"--differential must be one of {', '.join(DIFFERENTIAL_MODES)}, got {differential!r}"
        )
    if differential != DIFFERENTIAL_MODES[0] and extractor != "rule":
        raise typer.BadParameter("--differential applies to the rule extractor only")
    if fmt not in ("auto", "jsonl", "csv"):
        raise typer.BadParameter(f"--format must be auto, jsonl or csv, got {fmt!r}")
    if (text is None) == (input is None):
        raise typer.BadParameter("give either INPUT or --text (exactly one)")
    options = llm_options(
        extractor,
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        cache=cache,
        no_cache=no_cache,
        concurrency=concurrency,
        timeout=timeout,
        deadline=deadline,
        no_fallback=no_fallback,
        price_in=price_in,
        price_out=price_out,
        response_format=response_format,
        max_fallback_rate=max_fallback_rate,
    )
    limit = DEFAULT_MAX_FALLBACK_RATE if max_fallback_rate is None else max_fallback_rate
    records: list[Record] = []
    skipped: Counter = Counter()
    if input is not None:  # read (and reject bad input) before any server is asked
        records, skipped = _read_records(input, field, fmt, skip_bad)
    if differential != DIFFERENTIAL_MODES[0]:
        options = {"differential": differential}
    labeler = _build(extractor, options, get_labeler)
    try:
        if text is not None:
            _label_one(labeler, text, extractor)
            _fail_on_fallbacks(labeler, limit)
            return
        lines = _label_records(labeler, records, show_progress=output is not None)
    except typer.Exit:
        raise
    except Exception as error:
        from orapo.llm import LLMError

        if not isinstance(error, LLMError):
            raise
        _llm_summary(labeler)
        typer.echo(f"error: {error} [{error.reason}]", err=True)
        raise typer.Exit(1) from None
    finally:
        close = getattr(labeler, "close", None)
        if close is not None:
            close()
    if fallback_failure(labeler, limit) is not None:
        _llm_summary(labeler)
        _fail_on_fallbacks(labeler, limit)
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
    _llm_summary(labeler)
    if output is not None:
        typer.echo(f"labeled {len(records)} records -> {output}", err=True)


def _read_records(
    source: str, field: str, fmt: str, skip_bad: bool
) -> tuple[list[Record], Counter]:
    """The good records of ``source`` and the skipped ones by reason; a bad record without
    ``skip_bad`` stops the command (exit 1) naming ``file:line``."""
    fh, name, path = _open_input(source)
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
    return records, skipped


def _build(extractor: str, options: dict[str, Any], get_labeler: Any) -> Any:
    """The labeler; a bad LLM option (or a missing model) is a usage error naming it."""
    if extractor not in LLM_EXTRACTORS:
        return get_labeler(extractor, **options)
    from orapo.llm import LLMError

    try:
        return get_labeler(extractor, **options)
    except (LLMError, ValueError, OSError) as error:  # OSError: a cache folder not writable
        raise typer.BadParameter(str(error)) from None


def _label_one(labeler: Any, text: str, extractor: str) -> None:
    """``--text``: the labels as a table, with the evidence the extractor can show."""
    if hasattr(labeler, "extract_batch"):
        result = labeler.extract_batch([text])[0]
        labels, evidence = result.labels, _fact_evidence(result.facts, result.source, result.reason)
    else:
        labels = labeler.label(text)
        classified = labeler.classify(text) if hasattr(labeler, "classify") else []
        evidence = _rule_evidence(classified)
    _print_table(labels, evidence, extractor)
    _llm_summary(labeler)


def _fail_on_fallbacks(labeler: Any, limit: float) -> None:
    """Exit 1 with the one-line reason when the run broke the loud-failure rule."""
    reason = fallback_failure(labeler, limit)
    if reason is not None:
        typer.echo(f"error: {reason}", err=True)
        raise typer.Exit(1)


def _llm_summary(labeler: Any) -> None:
    """An LLM extractor's token / cost / cache / fallback summary, on stderr."""
    summary = getattr(labeler, "summary", None)
    if summary is not None:
        typer.echo(summary().format(), err=True)


def _label_records(labeler: Any, records: list[Record], show_progress: bool) -> list[str]:
    """One JSONL line per record, in order. The rule labeler goes record by record; an LLM
    extractor gets chunks of :data:`LLM_CHUNK` records (each deduped, cached and asked
    ``concurrency`` at a time)."""

    def line(r: Record, labels: dict) -> str:
        return json.dumps({"id": r.id, "labels": labels}, ensure_ascii=False) + "\n"

    llm = hasattr(labeler, "extract_batch")
    chunk = LLM_CHUNK if llm else 500
    show = show_progress and len(records) >= (chunk if llm else 2000)
    out: list[str] = []

    def run(advance: Any) -> None:
        for start in range(0, len(records), chunk):
            part = records[start : start + chunk]
            if llm:
                labels = labeler.label_batch([r.text for r in part])
            else:
                labels = [labeler.label(r.text) for r in part]
            out.extend(line(r, lab) for r, lab in zip(part, labels, strict=True))
            advance(len(part))

    if not show:
        run(lambda n: None)
        return out
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("labeling", total=len(records))
        run(lambda n: bar.advance(task, n))
    return out


def register(app: typer.Typer) -> None:
    """Add ``label`` to ``app`` (the top-level ``orapo`` app)."""
    app.command("label")(label)
