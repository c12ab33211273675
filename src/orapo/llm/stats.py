"""What the LLM labeler did and what it cost: one summary object to print or log.

:class:`LLMStats` is a plain record of counters (thread-safe updates go through
:class:`StatsRecorder`); ``LLMLabeler.summary()`` returns a snapshot. Field glossary:

=====================  ===================================================================
field                  meaning
=====================  ===================================================================
``reports``            texts passed to ``label`` / ``label_batch`` (with repeats)
``empty``              of those, empty or whitespace-only texts (all None, no request)
``batch_duplicates``   repeats of a text already in the same batch (labelled once)
``rule_decided``       hybrid mode: texts the rule labeler settled (no LLM needed)
``cache_hits``         distinct texts answered from the SQLite cache
``cache_misses``       distinct texts that needed the model
``llm_ok``             of the misses, answered by the model (then cached)
``fallbacks``          of the misses, labelled by the rule labeler instead, by reason
``failures``           of the misses, failed with fallback off (an error was raised), by reason
``requests``           HTTP requests sent (every attempt)
``retries``            attempts that failed and were retried, by reason
``repairs``            answers whose JSON needed a repair, by repair (``parse.py``)
``unmapped``           facts whose observation matched no name (kept with observation None)
``cache_errors``       cache reads or writes that failed (labelling went on without it)
``prompt_tokens``      ``usage.prompt_tokens`` summed over all answered requests
``completion_tokens``  ``usage.completion_tokens`` summed likewise
``cost``               tokens x the configured prices per 1,000 tokens
``saved_tokens``       prompt + completion tokens the cache hits did not spend again
``request_seconds``    wall time spent in HTTP requests, summed over threads
``formats``            of ``llm_ok``, answers by the response format they were got with
``concurrency``        requests allowed in flight now (adapted to the server, at most the
                       configured ``concurrency``)
``concurrency_peak``   the highest that limit went
=====================  ===================================================================

Reasons (``fallbacks``, ``failures``, ``retries``): ``timeout``, ``rate_limited`` (429),
``server_error`` (5xx), ``connection`` (refused, reset, closed early), ``bad_response``
(an HTTP 200 that is not a chat completion), ``bad_json``, ``bad_schema``, ``client_error``
(another 4xx; not retried), ``circuit_open`` (the server failed repeatedly; requests paused).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, fields, replace


@dataclass
class LLMStats:
    """Counters of one labeler (glossary in the module docstring)."""

    reports: int = 0
    empty: int = 0
    batch_duplicates: int = 0
    rule_decided: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    llm_ok: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)
    unmapped: int = 0
    cache_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    saved_tokens: int = 0
    request_seconds: float = 0.0
    formats: Counter[str] = field(default_factory=Counter)
    concurrency: int = 0
    concurrency_peak: int = 0

    @property
    def cache_hit_rate(self) -> float:
        """Cache hits / (hits + misses); NaN before any lookup."""
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else float("nan")

    @property
    def fallback_rate(self) -> float:
        """Fallbacks / cache misses; NaN before any miss."""
        return (
            sum(self.fallbacks.values()) / self.cache_misses if self.cache_misses else float("nan")
        )

    def copy(self) -> LLMStats:
        return replace(
            self,
            **{
                f.name: Counter(getattr(self, f.name))
                for f in fields(self)
                if isinstance(getattr(self, f.name), Counter)
            },
        )

    def as_metrics(self, prefix: str = "llm/") -> dict[str, float]:
        """Flat, namespaced numbers for a tracker: every field (counters as their total:
        ``llm/fallbacks``), each reason (``llm/fallback/timeout``, ``llm/retry/rate_limited``,
        ``llm/repair/truncated``, ``llm/failure/bad_json``) and ``llm/cache_hit_rate``."""
        out: dict[str, float] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Counter):
                out[f"{prefix}{f.name}"] = float(sum(value.values()))
                singular = _SINGULAR[f.name]
                for reason, count in sorted(value.items()):
                    out[f"{prefix}{singular}/{reason}"] = float(count)
            else:
                out[f"{prefix}{f.name}"] = float(value)
        out[f"{prefix}cache_hit_rate"] = self.cache_hit_rate
        return out

    def format(self) -> str:
        """A few human-readable lines for the end of training or labelling."""

        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in c.most_common()) or "none"

        hit = self.cache_hit_rate
        lines = [
            f"LLM labeler: {self.reports} reports ({self.empty} empty, {self.batch_duplicates} "
            f"repeated in a batch, {self.rule_decided} settled by the rule labeler)",
            f"  cache: {self.cache_hits} hits, {self.cache_misses} misses"
            + (f" (hit rate {hit:.1%})" if hit == hit else "")
            + (f", {self.cache_errors} cache errors" if self.cache_errors else ""),
            f"  model: {self.llm_ok} answered, {self.requests} requests, "
            f"{self.request_seconds:.1f} s in requests"
            + (f"; response_format: {counts(self.formats)}" if self.formats else "")
            + (
                f"; concurrency {self.concurrency} (peak {self.concurrency_peak})"
                if self.concurrency
                else ""
            ),
            f"  retries: {counts(self.retries)}",
            f"  fallbacks to the rule labeler: {counts(self.fallbacks)}",
        ]
        if self.failures:
            lines.append(f"  failures (fallback off): {counts(self.failures)}")
        if self.repairs or self.unmapped:
            lines.append(
                f"  JSON repairs: {counts(self.repairs)}; unmapped observations: {self.unmapped}"
            )
        lines.append(
            f"  tokens: {self.prompt_tokens} in, {self.completion_tokens} out, cost "
            f"{self.cost:.4f}; cache saved {self.saved_tokens} tokens"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


_SINGULAR = {
    "fallbacks": "fallback",
    "failures": "failure",
    "retries": "retry",
    "repairs": "repair",
    "formats": "format",
}


class StatsRecorder:
    """A lock around an :class:`LLMStats`: ``with recorder as s: s.requests += 1``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stats = LLMStats()

    def __enter__(self) -> LLMStats:
        self._lock.acquire()
        return self.stats

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def snapshot(self) -> LLMStats:
        with self as s:
            return s.copy()

    def reset(self) -> None:
        with self:
            self.stats = LLMStats()
