"""The LLM labeler: a chat model lists a report's atomic facts; the facts become the 14 labels.

Pipeline of :meth:`LLMLabeler.extract_batch` (``label_batch`` and ``label_with_facts`` read
its result):

1. **Normalise** each text (:func:`~orapo.llm.cache.normalize_report`); empty texts get all
   None without a request.
2. **Hybrid mode** only: the rule labeler labels every text; texts it settles (no uncertain
   label and at least one mention, :func:`needs_llm`) keep its labels.
3. **Dedupe** the rest within the batch, then look them up in the SQLite cache.
4. **Ask** the model for each miss, ``concurrency`` at a time (a thread pool sharing one
   HTTP connection pool), each under the retry policy (:mod:`orapo.llm.client`); parse and
   validate the answer (:mod:`orapo.llm.parse`); cache it.
5. **Map** facts to labels (:mod:`orapo.llm.facts`).
6. A miss that failed within its deadline is labelled by the rule labeler (``fallback=True``,
   counted by reason) or, with ``fallback=False``, makes the call raise :class:`LLMError`
   once the whole batch is done (the answers that did arrive are cached).

Bounded time: one report takes at most about ``deadline`` seconds (plus the rule labeler),
so a batch takes at most ``ceil(misses / concurrency) * deadline``; when the server is down the
circuit breaker cuts that to about ``breaker_threshold`` reports' worth.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orapo.labeler import get_labeler
from orapo.llm.cache import AnswerCache, cache_key, normalize_report
from orapo.llm.client import (
    AdaptiveLimit,
    AttemptError,
    ChatClient,
    ChatReply,
    CircuitBreaker,
    LLMConfigError,
    LLMError,
    LLMFallbackError,
    RetryPolicy,
    call_with_retries,
)
from orapo.llm.facts import AtomicFact, facts_from_labels, facts_to_labels
from orapo.llm.parse import ParsedAnswer, ParseError, parse_answer, validate_facts
from orapo.llm.prompt import DEFAULT_PROMPT, RESPONSE_FORMATS, load_prompt
from orapo.llm.stats import LLMStats, StatsRecorder
from orapo.observations import NO_FINDING, UNCERTAIN, LabelDict, empty_labels

logger = logging.getLogger("orapo.llm")

#: Words in an error answer (any 4xx or 5xx: llama-cpp-python refuses ``json_schema`` with a
#: 500) that say the server does not take the format we asked for.
_FORMAT_WORDS = (
    "response_format",
    "json_schema",
    "json_object",
    "structured",
    "guided",
    "schema",
    "'text'",
)
#: ``auto`` steps down this ladder, one rung per refusal that names the format.
_NEXT_FORMAT = dict(zip(RESPONSE_FORMATS, RESPONSE_FORMATS[1:], strict=False))
FALLBACK_ACTIONS: tuple[str, ...] = ("warn", "stop")


@dataclass(frozen=True)
class Extraction:
    """The result for one text.

    ``source``: ``"llm"`` (asked now), ``"cache"`` (answered before), ``"rule"`` (hybrid mode:
    the rule labeler settled it), ``"fallback"`` (the model failed; rule labels; ``reason``
    says why) or ``"empty"`` (nothing to label). ``repairs``: JSON repairs the answer needed.
    """

    labels: LabelDict
    facts: tuple[AtomicFact, ...]
    source: str
    reason: str | None = None
    repairs: tuple[str, ...] = ()


def needs_llm(rule_labels: LabelDict) -> bool:
    """Hybrid mode: ask the model when the rule labeler is uncertain (any -1) or finds nothing.

    >>> needs_llm({"Cardiomegaly": 1, "Edema": None}), needs_llm({"Edema": -1})
    (False, True)
    >>> needs_llm({"Edema": None})
    True
    """
    values = [v for name, v in rule_labels.items() if name != NO_FINDING]
    return any(v == UNCERTAIN for v in values) or all(v is None for v in values)


class LLMLabeler:
    """Label reports with a chat model behind any OpenAI-compatible ``/v1/chat/completions``.

    Implements ``orapo.labeler.Labeler`` (``name``, ``label``, ``label_batch``) and adds
    :meth:`label_with_facts`, :meth:`extract_batch`, :meth:`summary`.

    Args:
        model: the model name the server knows (``gpt-4o-mini``, ``Qwen/Qwen2.5-7B-Instruct``,
            ``llama3.1:8b``).
        base_url: API root; requests go to ``{base_url}/chat/completions``. The default is a
            local vLLM server (reports never leave the machine unless you say so).
        api_key_env: environment variable holding the API key (read per request; never
            logged, stored, or put in a repr or cache key). Unset: no auth header.
        auth_header: ``"authorization"`` (Bearer) or ``"api-key"`` (Azure OpenAI).
        timeout: seconds for one request (cut to what is left of ``deadline``).
        max_retries: retries per report after the first attempt.
        deadline: seconds per report, all attempts and waits together.
        backoff, backoff_max: exponential backoff base and cap, seconds.
        concurrency: requests in flight at most (threads).
        cache_path: SQLite answer cache; None: no persistent cache (batches still dedupe).
        fallback: label a failed report with the rule labeler (counted) instead of raising.
        hybrid: ask the model only where the rule labeler is uncertain or finds nothing.
        price_per_1k_input, price_per_1k_output: prices per 1,000 prompt / completion tokens,
            for the cost in :meth:`summary` (any currency; 0: not counted).
        prompt: prompt name (a file in ``orapo/llm/prompts/``) or path of a prompt file.
        response_format: ``"auto"`` (start with ``json_schema``; on an error answer that
            names the format, a 400 or a 500 alike, step down to ``json_object_schema``,
            ``guided_json``, ``json_object``, ``none`` in turn, and remember) or one of
            :data:`~orapo.llm.prompt.RESPONSE_FORMATS`. Answers are cached per format.
        max_tokens: the answer's token limit (a cut answer is repaired, see ``parse.py``).
        seed: sent as ``seed`` when not None (servers that honour it answer reproducibly).
        extra_body: more request fields, e.g. ``{"top_p": 1}`` or server-specific options.
        breaker_threshold, breaker_cooldown: circuit breaker (:class:`CircuitBreaker`).
        trust_env: let httpx read proxy settings from the environment.
        progress: show a progress bar when a batch has many misses.
        adaptive_concurrency: adapt the requests in flight to the server
            (:class:`~orapo.llm.client.AdaptiveLimit`: halve on a timeout, lower when answers
            queue, up again to ``concurrency``); a retry after a timeout gets twice the
            timeout (within the deadline). False: always ``concurrency``.
        check_model: at the first request, ask ``GET {base_url}/models`` and raise
            :class:`LLMConfigError` when the server lists models and ``model`` is not one of
            them (some servers, llama.cpp's, answer any model name).
        max_fallback_rate: the share of a batch's asked reports that may fall back to the rule
            labeler (0: none may; None: no check). Over it, ``on_fallback`` says what happens.
        on_fallback: ``"warn"`` (log one warning line) or ``"stop"`` (raise
            :class:`LLMFallbackError` after the batch, which stops training).
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key_env: str = "OPENAI_API_KEY",
        auth_header: str = "authorization",
        timeout: float = 30.0,
        max_retries: int = 4,
        deadline: float = 60.0,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        concurrency: int = 8,
        cache_path: str | Path | None = None,
        fallback: bool = True,
        hybrid: bool = False,
        price_per_1k_input: float = 0.0,
        price_per_1k_output: float = 0.0,
        prompt: str | Path = DEFAULT_PROMPT,
        response_format: str = "auto",
        max_tokens: int = 1024,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        trust_env: bool = True,
        progress: bool = False,
        adaptive_concurrency: bool = True,
        check_model: bool = True,
        max_fallback_rate: float | None = 0.0,
        on_fallback: str = "warn",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise LLMConfigError(
                "config",
                "model is required: the model name your server serves (e.g. model='gpt-4o-mini')",
            )
        if concurrency < 1:
            raise LLMConfigError("config", f"concurrency must be >= 1, got {concurrency}")
        if not timeout > 0:
            raise LLMConfigError("config", f"timeout must be > 0 seconds, got {timeout}")
        if response_format != "auto" and response_format not in RESPONSE_FORMATS:
            raise LLMConfigError(
                "config",
                f"unknown response_format {response_format!r}; "
                f"valid: auto, {', '.join(RESPONSE_FORMATS)}",
            )
        if price_per_1k_input < 0 or price_per_1k_output < 0:
            raise LLMConfigError("config", "prices must be >= 0")
        if max_tokens < 1:
            raise LLMConfigError("config", f"max_tokens must be >= 1, got {max_tokens}")
        if max_fallback_rate is not None and not 0 <= max_fallback_rate <= 1:
            raise LLMConfigError(
                "config", f"max_fallback_rate must be in [0, 1] or None, got {max_fallback_rate}"
            )
        if on_fallback not in FALLBACK_ACTIONS:
            raise LLMConfigError(
                "config",
                f"on_fallback must be one of {', '.join(FALLBACK_ACTIONS)}, got {on_fallback!r}",
            )
        self.name = "hybrid" if hybrid else "llm"
        self.model = model
        self.hybrid = hybrid
        self.fallback = fallback
        self.timeout = float(timeout)
        self.concurrency = concurrency
        self.price_per_1k_input = float(price_per_1k_input)
        self.price_per_1k_output = float(price_per_1k_output)
        self.max_tokens = max_tokens
        self.seed = seed
        self.extra_body = dict(extra_body or {})
        self.progress = progress
        self.check_model = check_model
        self.max_fallback_rate = max_fallback_rate
        self.on_fallback = on_fallback
        self.limiter = AdaptiveLimit(concurrency, adaptive_concurrency)
        self._server_checked = False
        self._server_lock = threading.Lock()
        try:
            self.policy = RetryPolicy(max_retries, float(deadline), backoff, backoff_max)
        except ValueError as error:
            raise LLMConfigError("config", str(error)) from None
        self.prompt = load_prompt(prompt)
        self.response_format = response_format
        self._format = "json_schema" if response_format == "auto" else response_format
        self._format_lock = threading.Lock()
        self.cache = AnswerCache(cache_path) if cache_path is not None else None
        self.client = ChatClient(
            base_url,
            api_key_env=api_key_env,
            auth_header=auth_header,
            connections=concurrency,
            trust_env=trust_env,
        )
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        self._stats = StatsRecorder()
        self._rng = random.Random()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._rule: Any = None

    def __repr__(self) -> str:
        return (
            f"LLMLabeler(model={self.model!r}, base_url={self.client.base_url!r}, "
            f"prompt={self.prompt.id!r}, hybrid={self.hybrid}, fallback={self.fallback}, "
            f"cache_path={str(self.cache.path) if self.cache else None!r})"
        )

    # -- the Labeler interface -------------------------------------------------------------

    def label(self, text: str) -> LabelDict:
        """All 14 observations for one report."""
        return self.extract_batch([text])[0].labels

    def label_batch(self, texts: Sequence[str]) -> list[LabelDict]:
        """All 14 observations per report, in order."""
        return [e.labels for e in self.extract_batch(texts)]

    def label_with_facts(self, text: str) -> tuple[LabelDict, list[AtomicFact]]:
        """``(labels, facts)`` for one report."""
        result = self.extract_batch([text])[0]
        return result.labels, list(result.facts)

    def summary(self) -> LLMStats:
        """A snapshot of the counters, tokens and cost so far (print it, or ``as_metrics()``)."""
        stats = self._stats.snapshot()
        stats.concurrency = self.limiter.limit
        stats.concurrency_peak = self.limiter.highest
        return stats

    def reset_stats(self) -> None:
        self._stats.reset()

    @property
    def format_in_use(self) -> str:
        """The response_format mode requests use now (``auto`` may have stepped down)."""
        return self._format

    def _lookup_formats(self) -> tuple[str, ...]:
        """The formats whose cached answers this run takes: ``auto`` any (the one in use
        first), a fixed format only its own."""
        if self.response_format != "auto":
            return (self.response_format,)
        now = self._format
        return (now, *(f for f in RESPONSE_FORMATS if f != now))

    def check_server(self) -> None:
        """Once per labeler, before its first request: when the server lists its models
        (``GET /models``), ``model`` must be one of them (:class:`LLMConfigError`)."""
        with self._server_lock:
            if self._server_checked:
                return
            self._server_checked = True
            if not self.check_model:
                return
            served = self.client.list_models()
        if served and not model_listed(self.model, served):
            shown = ", ".join(repr(m) for m in served[:8]) + (" ..." if len(served) > 8 else "")
            raise LLMConfigError(
                "config",
                f"model {self.model!r} is not served by {self.client.base_url}: its /models "
                f"lists {shown}; pass one of those as the model name (or check_model=False)",
            )

    # -- the pipeline ----------------------------------------------------------------------

    def extract_batch(self, texts: Sequence[str]) -> list[Extraction]:
        """One :class:`Extraction` per text, in order (pipeline in the module docstring)."""
        if isinstance(texts, str):
            raise TypeError("extract_batch takes a sequence of texts, not one string")
        normal = [normalize_report(t) if isinstance(t, str) else _bad_text(t) for t in texts]
        results: dict[str, Extraction] = {}
        with self._stats as s:
            s.reports += len(normal)
            s.empty += sum(1 for t in normal if not t)
        for t in normal:
            if not t:
                results[t] = Extraction(empty_labels(), (), "empty")
        distinct = [t for t in dict.fromkeys(normal) if t]
        with self._stats as s:
            s.batch_duplicates += sum(1 for t in normal if t) - len(distinct)
        if self.hybrid:
            distinct = self._settle_by_rule(distinct, results)
        misses = self._from_cache(distinct, results)
        errors = self._ask_all(misses, results)
        self._check_fallbacks(misses, results)
        if errors:
            first = errors[0]
            raise LLMError(
                first.reason,
                f"{len(errors)} of {len(misses)} reports could not be labelled by "
                f"{self.model!r} at {self.client.base_url} and fallback is off; first: {first} "
                f"(reasons: {', '.join(sorted({e.reason for e in errors}))})",
                attempts=first.attempts,
                elapsed=first.elapsed,
            )
        return [results[t] for t in normal]

    def _settle_by_rule(self, texts: list[str], results: dict[str, Extraction]) -> list[str]:
        rule = self._rule_labeler()
        rest = []
        for text, labels in zip(texts, rule.label_batch(texts), strict=True):
            if needs_llm(labels):
                rest.append(text)
            else:
                results[text] = Extraction(labels, tuple(facts_from_labels(labels)), "rule")
        with self._stats as s:
            s.rule_decided += len(texts) - len(rest)
        return rest

    def _check_fallbacks(self, asked: list[str], results: dict[str, Extraction]) -> None:
        """The loud-failure rule: more than ``max_fallback_rate`` of the asked reports fell
        back -> one warning line, or :class:`LLMFallbackError` (``on_fallback="stop"``)."""
        if self.max_fallback_rate is None or not asked:
            return
        reasons = Counter(
            results[t].reason for t in asked if t in results and results[t].source == "fallback"
        )
        fell = sum(reasons.values())
        if fell / len(asked) <= self.max_fallback_rate:
            return
        message = fallback_message(
            fell, len(asked), reasons, self.max_fallback_rate, self.model, self.client.base_url
        )
        if self.on_fallback == "stop":
            raise LLMFallbackError(message)
        logger.warning("%s", message)

    def _from_cache(self, texts: list[str], results: dict[str, Extraction]) -> list[str]:
        """Fill ``results`` from the cache; return the texts still to ask."""
        if self.cache is None or not texts:
            with self._stats as s:
                s.cache_misses += len(texts)
            return list(texts)
        formats = self._lookup_formats()
        keys = {(t, f): cache_key(self.model, self.prompt.id, t, f) for t in texts for f in formats}
        try:
            found, bad = self.cache.get_many(keys.values())
        except Exception as error:  # a broken cache must not stop labelling
            logger.warning("LLM answer cache %s: read failed: %r", self.cache.path, error)
            found, bad = {}, []
            with self._stats as s:
                s.cache_errors += 1
        misses: list[str] = []
        hits = unreadable = saved = 0
        for text in texts:
            parsed = entry = None
            for fmt in formats:
                entry = found.get(keys[text, fmt])
                if entry is not None:
                    try:
                        parsed = validate_facts(entry.answer)
                        break
                    except ParseError:
                        unreadable += 1
            if parsed is None or entry is None:
                misses.append(text)
                continue
            hits += 1
            saved += entry.prompt_tokens + entry.completion_tokens
            results[text] = Extraction(facts_to_labels(parsed.facts), parsed.facts, "cache")
        with self._stats as s:
            s.cache_hits += hits
            s.cache_misses += len(misses)
            s.cache_errors += unreadable + len(bad)
            s.saved_tokens += saved
        return misses

    def _ask_all(self, texts: list[str], results: dict[str, Extraction]) -> list[LLMError]:
        """Ask the model for every text (``concurrency`` at a time); fill ``results``."""
        if not texts:
            return []
        self.check_server()
        pool = self._executor()
        futures = [pool.submit(self._ask_one, t) for t in texts]
        errors: list[LLMError] = []
        track = _progress(futures, self.progress and len(futures) >= 32, f"asking {self.model}")
        for text, future in zip(texts, track, strict=True):
            outcome = future.result()
            if isinstance(outcome, Extraction):
                results[text] = outcome
            elif isinstance(outcome, LLMConfigError):
                raise outcome
            elif self.fallback:
                labels = self._rule_labeler().label(text)
                results[text] = Extraction(
                    labels, tuple(facts_from_labels(labels)), "fallback", outcome.reason
                )
                with self._stats as s:
                    s.fallbacks[outcome.reason] += 1
            else:
                errors.append(outcome)
                with self._stats as s:
                    s.failures[outcome.reason] += 1
        return errors

    def _ask_one(self, text: str) -> Extraction | LLMError:
        """One report through the retry loop; returns the error instead of raising it.

        Each attempt holds one slot of :attr:`limiter`. The first slot is taken before the
        report's deadline starts (waiting for it is not the server's fault); a retry's wait
        counts. A retry after a timeout gets twice the previous attempt's timeout.
        """
        if not self.breaker.allow():
            return LLMError(
                "circuit_open",
                f"{self.client.base_url} failed "
                f"{self.breaker.threshold} reports in a row; paused for "
                f"{self.breaker.cooldown:g} s",
            )
        self.limiter.acquire()
        held = [True]
        timeout = [self.timeout]

        def attempt(left: float) -> tuple[ChatReply, ParsedAnswer, str]:
            if not held[0]:
                start = time.monotonic()
                if not self.limiter.acquire(left):
                    raise AttemptError("timeout", "no request slot free within the deadline")
                left -= time.monotonic() - start
            held[0] = False
            limit = min(timeout[0], left)
            start = time.monotonic()
            outcome = "answer"
            try:
                return self._attempt(text, left, limit)
            except AttemptError as error:
                if error.reason == "timeout":
                    outcome = "timeout"
                    if self.limiter.adaptive:
                        timeout[0] *= 2
                elif error.reason not in ("bad_json", "bad_schema"):
                    outcome = "error"
                raise
            finally:
                self.limiter.release(time.monotonic() - start, limit, outcome)

        try:
            (reply, parsed, mode), _ = call_with_retries(
                attempt,
                self.policy,
                on_retry=self._count_retry,
                rng=self._rng.random,
            )
        except LLMConfigError as error:
            return error
        except LLMError as error:
            self.breaker.record(False, error.reason)
            return error
        self.breaker.record(True)
        if self.cache is not None:
            try:
                self.cache.put(
                    cache_key(self.model, self.prompt.id, text, mode),
                    self.model,
                    self.prompt.id,
                    {"facts": list(parsed.raw)},
                    reply.prompt_tokens,
                    reply.completion_tokens,
                )
            except Exception as error:
                logger.warning("LLM answer cache %s: write failed: %r", self.cache.path, error)
                with self._stats as s:
                    s.cache_errors += 1
        with self._stats as s:
            s.llm_ok += 1
            s.formats[mode] += 1
            s.unmapped += len(parsed.unmapped)
            for repair in parsed.repairs:
                s.repairs[repair] += 1
        return Extraction(facts_to_labels(parsed.facts), parsed.facts, "llm", None, parsed.repairs)

    def _attempt(
        self, text: str, seconds_left: float, timeout: float
    ) -> tuple[ChatReply, ParsedAnswer, str]:
        """One attempt (plus immediate re-sends when ``auto`` steps the format down);
        ``(reply, parsed answer, response format used)``."""
        while True:
            mode = self._format
            body: dict[str, Any] = {
                "model": self.model,
                "messages": self.prompt.messages(text),
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
            body.update(self.prompt.format_fields(mode))
            if self.seed is not None:
                body["seed"] = self.seed
            body.update(self.extra_body)
            start = time.monotonic()
            try:
                reply = self.client.complete(body, min(timeout, seconds_left))
            except AttemptError as error:
                self._count_request(None, time.monotonic() - start)
                if self._step_down(mode, error):
                    seconds_left -= time.monotonic() - start
                    if seconds_left > 0:
                        continue
                raise
            self._count_request(reply, reply.seconds)
            try:
                return reply, parse_answer(reply.content), mode
            except ParseError as error:
                cut = (
                    " (the answer was cut at max_tokens)" if reply.finish_reason == "length" else ""
                )
                raise AttemptError(error.reason, f"{error}{cut}") from None

    def _step_down(self, mode: str, error: AttemptError) -> bool:
        """In ``auto`` mode, an error answer (4xx or 5xx) naming the response format moves to
        the next format of the ladder."""
        if self.response_format != "auto" or error.status is None or mode not in _NEXT_FORMAT:
            return False
        if error.status < 400 or not any(w in error.detail.lower() for w in _FORMAT_WORDS):
            return False
        with self._format_lock:
            if self._format == mode:
                self._format = _NEXT_FORMAT[mode]
                logger.info(
                    "%s refused response_format %s (%s); using %s",
                    self.client.base_url,
                    mode,
                    error.detail[:120],
                    self._format,
                )
        return True

    def _count_request(self, reply: ChatReply | None, seconds: float) -> None:
        with self._stats as s:
            s.requests += 1
            s.request_seconds += seconds
            if reply is not None:
                s.prompt_tokens += reply.prompt_tokens
                s.completion_tokens += reply.completion_tokens
                s.cost += (
                    reply.prompt_tokens * self.price_per_1k_input
                    + reply.completion_tokens * self.price_per_1k_output
                ) / 1000.0

    def _count_retry(self, error: AttemptError) -> None:
        with self._stats as s:
            s.retries[error.reason] += 1

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="orapo-llm")
            return self._pool

    def _rule_labeler(self) -> Any:
        if self._rule is None:
            self._rule = get_labeler("rule")
        return self._rule

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the threads, close the HTTP connections and the cache."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.client.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> LLMLabeler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_option(name: str) -> Any:
    """The default of :class:`LLMLabeler`'s keyword ``name``; the command-line help quotes it
    from here, so ``orapo label`` and ``orapo llm check`` state the same defaults as the code."""
    return inspect.signature(LLMLabeler).parameters[name].default


def model_listed(model: str, served: Sequence[str]) -> bool:
    """Whether the server's ``/models`` list names ``model``: the id itself, the file name of
    a path id (llama.cpp lists the GGUF path), with or without ``.gguf``, or Ollama's
    ``name:latest``.

    >>> model_listed("smollm2", ["/models/smollm2.gguf"]), model_listed("gpt", ["gpt-4o"])
    (True, False)
    """
    for name in served:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        if model in (name, base, base.removesuffix(".gguf")) or name == f"{model}:latest":
            return True
    return False


def fallback_message(
    fell: int,
    asked: int,
    reasons: Counter[str] | dict[str, int],
    limit: float,
    model: str,
    base_url: str,
) -> str:
    """The one-line reason of the loud-failure rule."""
    why = ", ".join(f"{k} {v}" for k, v in Counter(reasons).most_common())
    return (
        f"{fell} of {asked} reports ({fell / asked:.0%}) fell back to the rule labeler "
        f"({why}) instead of being answered by {model!r} at {base_url}; the limit is "
        f"{limit:g} (max_fallback_rate)"
    )


def hybrid_labeler(**options: Any) -> LLMLabeler:
    """The ``"hybrid"`` labeler: :class:`LLMLabeler` with ``hybrid=True``."""
    options.setdefault("hybrid", True)
    if not options["hybrid"]:
        raise LLMConfigError(
            "config",
            "the 'hybrid' labeler is LLMLabeler(hybrid=True); use "
            "the 'llm' labeler for hybrid=False",
        )
    return LLMLabeler(**options)


def _bad_text(value: object) -> str:
    raise TypeError(f"a report must be a string, got {type(value).__name__}")


def _progress(futures: list, show: bool, what: str):
    """Yield the futures in order; with ``show``, under a rich progress bar."""
    if not show:
        yield from futures
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(what, total=len(futures))
        for future in futures:
            future.result()
            bar.advance(task)
            yield future
