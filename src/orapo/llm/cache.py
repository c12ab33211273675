"""A persistent cache of model answers: SQLite, WAL mode, safe under concurrent writers.

Rollouts repeat a lot (K samples of one image often write the same report, and epochs repeat
the references), so every answer is kept and an identical report is never asked twice, across
runs and processes.

* **Key**: SHA-256 of ``[model, prompt id, response format, normalised text]``
  (:func:`cache_key`). The prompt id is the prompt's version plus a digest of its file, so
  editing a prompt never reuses an old answer; the response format is the one the answer was
  got with (``json_schema``, ``json_object_schema``, ...), so a run configured for one format
  never gets answers got with another (``auto`` accepts any of them). Nothing else enters
  the key: no API key, no base URL (two servers that serve the
  same model name share answers; use another ``cache_path`` when they should not).
* **Value**: the parsed (repaired) JSON answer, not the labels, so a change of the mapping
  rules (``aliases.yaml``) applies to cached answers too; plus the tokens it cost (for the
  "saved tokens" count). Report texts themselves are not stored, only their hash.
* **Concurrency**: one connection per thread and process (re-opened after ``fork``); WAL lets
  readers run beside one writer; each write is its own short transaction and waits up to
  ``busy_timeout`` seconds for the lock. Two processes writing the same key store the same
  answer (``INSERT OR REPLACE``), so the race is harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_CHUNK = 500  # keys per SELECT (SQLite's default limit on bound parameters is 999+)

_CREATE = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
)
"""


def normalize_report(text: str) -> str:
    """The text the model sees and the cache keys on: Unicode NFC, every run of whitespace one
    space, trimmed. Case is kept (the model may read it).

    >>> normalize_report("  No  effusion.\\n\\nMild   cardiomegaly. ")
    'No effusion. Mild cardiomegaly.'
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(
    model: str, prompt_id: str, normalised_text: str, response_format: str | None = None
) -> str:
    """Hex SHA-256 of the JSON list ``[model, prompt_id, response_format, normalised_text]``
    (``[model, prompt_id, normalised_text]`` when ``response_format`` is None)."""
    parts = [model, prompt_id, normalised_text]
    if response_format is not None:
        parts.insert(2, response_format)
    payload = json.dumps(parts, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """One cache entry: the parsed JSON answer and the tokens it cost."""

    answer: Any
    prompt_tokens: int
    completion_tokens: int


class AnswerCache:
    """The SQLite answer cache at ``path`` (created with its folder when missing).

    Methods raise ``sqlite3.Error`` on failure; the labeler counts those and goes on without
    the cache. ``get_many`` skips entries whose stored JSON does not parse and returns their
    keys in ``bad`` (they are then asked again and overwritten).
    """

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            conn, version = self._open_schema()
        except sqlite3.DatabaseError as error:
            self.close()
            raise ValueError(
                f"{self.path}: not an orapo LLM answer cache (SQLite): {error}; "
                "use another cache_path or delete this file"
            ) from None
        if version == 0:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            self.close()
            raise ValueError(
                f"{self.path}: cache schema version {version}, this orapo reads "
                f"{SCHEMA_VERSION}; use another cache_path or delete this file"
            )

    def _open_schema(self) -> tuple[sqlite3.Connection, int]:
        """Connect and create the table. Switching a new file to WAL while another process
        does the same can fail at once with "database is locked" (SQLite's busy timeout does
        not cover it), so that one error is retried until ``busy_timeout``."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn = self._conn()
                conn.execute(_CREATE)
                return conn, conn.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                self._drop_thread_connection()
                time.sleep(0.02)

    def _drop_thread_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            conn.close()
            self._local.conn = None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._all.append(conn)
        return conn

    def get_many(self, keys: Iterable[str]) -> tuple[dict[str, CachedAnswer], list[str]]:
        """``(found, bad)``: entries by key for the keys present; keys of unreadable entries."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, CachedAnswer] = {}
        bad: list[str] = []
        conn = self._conn()
        for chunk in _chunks(keys, _CHUNK):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, answer, prompt_tokens, completion_tokens FROM answers "
                f"WHERE key IN ({marks})",
                chunk,
            ).fetchall()
            for key, answer, pt, ct in rows:
                try:
                    found[key] = CachedAnswer(json.loads(answer), int(pt), int(ct))
                except (ValueError, TypeError):
                    bad.append(key)
        return found, bad

    def put(
        self,
        key: str,
        model: str,
        prompt_id: str,
        answer: Any,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """Store one answer (replacing any entry under ``key``)."""
        self._conn().execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                model,
                prompt_id,
                json.dumps(answer, ensure_ascii=False),
                int(prompt_tokens),
                int(completion_tokens),
                time.time(),
            ),
        )

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def counts(self) -> list[tuple[str, str, int]]:
        """``(model, prompt id, entries)`` per model and prompt, most entries first."""
        return [
            (m, p, int(n))
            for m, p, n in self._conn().execute(
                "SELECT model, prompt, COUNT(*) FROM answers GROUP BY model, prompt "
                "ORDER BY COUNT(*) DESC"
            )
        ]

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.path)!r})"


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
