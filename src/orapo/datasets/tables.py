"""Reading the CSV tables datasets are distributed with (``.csv`` or ``.csv.gz``).

:func:`read_table` checks the header and yields rows by key with the ``file:line`` of each;
:func:`read_label_csv` reads a CheXpert-style label table (key columns + the 14 observations).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from orapo.datasets.reporting import SkipLog, Tracker
from orapo.datasets.spec import PrepareError
from orapo.observations import OBSERVATIONS, LabelDict, parse_state


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently decompressing ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return path.open(encoding="utf-8", newline="")


def require_file(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        extra = f"; {hint}" if hint else ""
        raise PrepareError(f"{what} {path} does not exist{extra}")
    return path


def read_table(
    path: Path,
    needed: Mapping[str, str],
    *,
    optional: Mapping[str, str] | None = None,
    option: str = "--column",
) -> Iterator[tuple[str, dict[str, str], str | None]]:
    """Read a CSV (``.csv`` or ``.csv.gz``), checking its header has the ``needed`` columns.

    ``needed`` maps keys to column names; ``optional`` columns are read when present (else
    ``""``). Yields ``(where, row, problem)`` per record, where ``where`` is ``file:line`` of
    the record's first line, ``row`` maps each *key* to its value, and ``problem`` is ``None``
    or why the row is malformed (wrong number of fields). A header missing columns raises
    :class:`PrepareError` naming the file, the missing columns and the ones present.
    """
    csv.field_size_limit(1 << 30)
    try:
        with open_text(path) as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise PrepareError(f"{path}: empty file, expected a CSV header") from None
            missing = [f"{name!r} ({key})" for key, name in needed.items() if name not in header]
            if missing:
                raise PrepareError(
                    f"{path}: missing column(s) {', '.join(missing)}; the file has: "
                    f"{', '.join(header)}. Name the right columns with {option} KEY=NAME."
                )
            index = {key: header.index(name) for key, name in needed.items()}
            for key, name in (optional or {}).items():
                index[key] = header.index(name) if name in header else -1
            previous = reader.line_num
            for record in reader:
                where = f"{path}:{previous + 1}"
                previous = reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                problem = None
                if len(record) != len(header):
                    problem = f"{len(record)} fields, the header has {len(header)}"
                row = {key: (record[i] if 0 <= i < len(record) else "") for key, i in index.items()}
                yield where, row, problem
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        if isinstance(err, FileNotFoundError):
            raise PrepareError(f"{path} does not exist") from None
        raise PrepareError(f"{path}: cannot be read as CSV ({err})") from None


def parse_label_row(values: Mapping[str, object]) -> LabelDict:
    """Observation name -> raw value (``"1.0"``, ``""``, ``-1``...) -> a label dict (all 14)."""
    out: LabelDict = {}
    for name in OBSERVATIONS:
        out[name] = parse_state(values.get(name))
    return out


def read_label_csv(
    path: Path,
    keys: Mapping[str, str],
    log: SkipLog,
    track: Tracker,
    *,
    normalize: Callable[[dict[str, str]], tuple[str, ...]] = lambda row: tuple(row.values()),
) -> dict[tuple[str, ...], LabelDict]:
    """Read a CheXpert-style label table: key columns plus the 14 observation columns.

    ``keys`` maps key names to column names (e.g. ``subject_id``, ``study_id``); the result
    maps ``normalize(key values)`` to a label dict (1.0 / 0.0 / -1.0 / blank -> 1 / 0 / -1 /
    None). Malformed rows (wrong field count, bad values) and repeated keys are skipped and
    counted; a header missing the key or observation columns raises :class:`PrepareError`.
    """
    needed = {**{f"key:{k}": v for k, v in keys.items()}, **{n: n for n in OBSERVATIONS}}
    out: dict[tuple[str, ...], LabelDict] = {}
    for where, row, problem in track(read_table(path, needed), f"reading {path.name}"):
        if problem is not None:
            log.skip("malformed row", where, problem)
            continue
        key_values = {k: row[f"key:{k}"].strip() for k in keys}
        if not all(key_values.values()):
            log.skip("malformed row", where, "empty key column")
            continue
        try:
            labels = parse_label_row(row)
        except ValueError as err:
            log.skip("malformed row", where, str(err))
            continue
        key = normalize(key_values)
        if key in out:
            log.skip("duplicate row", where, f"labels for {'/'.join(key)} given twice")
            continue
        out[key] = labels
    return out
