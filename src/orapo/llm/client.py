"""One OpenAI-compatible chat request, its faults classified, and the retry loop around it.

:class:`ChatClient` sends one ``POST {base_url}/chat/completions`` with ``httpx`` and either
returns a :class:`ChatReply` or raises :class:`AttemptError` with a ``reason`` (glossary in
:mod:`orapo.llm.stats`). The time of one attempt is bounded as a whole, not per socket
operation: the body is streamed and the attempt stops once its time is up, so a server that
trickles bytes cannot hold a training step.

:func:`call_with_retries` repeats an attempt with exponential backoff (or the server's
``Retry-After``) until it succeeds, a fault is not retryable, ``max_retries`` is used up, or the
next wait would pass the report's ``deadline``; it then raises :class:`LLMError`.

:class:`LLMConfigError` (HTTP 401, 403, 404: wrong key, URL or model) is raised at once and is
never retried nor replaced by a fallback: every report would fail the same way.

The API key is read from the environment variable named ``api_key_env`` at each request and
only ever put in the request header: never in a message, a log line, a repr or the cache.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Faults worth another attempt. ``client_error`` (a 4xx other than 401/403/404/408/429) is not.
RETRYABLE: frozenset[str] = frozenset(
    {
        "timeout",
        "rate_limited",
        "server_error",
        "connection",
        "bad_response",
        "bad_json",
        "bad_schema",
    }
)
#: Faults that say the server (not the report) is unwell; they feed the circuit breaker.
SERVER_FAULTS: frozenset[str] = frozenset({"timeout", "rate_limited", "server_error", "connection"})
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


def http_module() -> Any:
    """``httpx``, or its successor ``httpx2`` (same API) when only that one is installed."""
    try:
        import httpx
    except ImportError:
        try:
            import httpx2 as httpx
        except ImportError:
            raise ImportError("the LLM labeler needs an HTTP client: pip install httpx") from None
    return httpx


class AttemptError(Exception):
    """One failed attempt. ``reason``: the fault class; ``retry_after``: seconds the server
    asked us to wait (None when it did not say); ``status``: the HTTP status, if any."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.status = status


class LLMError(RuntimeError):
    """A report the model could not label within the retry budget (fallback off), or a
    configuration error. ``reason`` is the last fault class."""

    def __init__(self, reason: str, message: str, *, attempts: int = 0, elapsed: float = 0.0):
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.elapsed = elapsed


class LLMConfigError(LLMError):
    """Wrong URL, model or key (HTTP 401/403/404) or bad options: never retried or replaced."""


class LLMFallbackError(LLMError):
    """More reports fell back to the rule labeler than ``max_fallback_rate`` allows and
    ``on_fallback="stop"`` (reason ``fallback_rate``). The FactS reward lets it through, so
    it stops training."""

    def __init__(self, message: str) -> None:
        super().__init__("fallback_rate", message)


@dataclass(frozen=True)
class ChatReply:
    """The parts of a chat completion the labeler uses."""

    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class ChatClient:
    """A thread-safe client for one OpenAI-compatible server.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (requests go to
            ``{base_url}/chat/completions``).
        api_key_env: environment variable holding the key; unset or empty: no auth header.
        auth_header: ``"authorization"`` (``Bearer <key>``, OpenAI, vLLM, Ollama) or
            ``"api-key"`` (Azure OpenAI).
        connections: the most connections kept open (the labeler's concurrency).
        trust_env: let httpx read proxy settings from the environment.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        auth_header: str = "authorization",
        connections: int = 8,
        trust_env: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise LLMConfigError(
                "config", f"base_url must start with http:// or https://, got {base_url!r}"
            )
        if auth_header.lower() not in ("authorization", "api-key"):
            raise LLMConfigError(
                "config", f"auth_header must be 'authorization' or 'api-key', got {auth_header!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.api_key_env = api_key_env
        self.auth_header = auth_header.lower()
        self._http = http_module()
        limits = self._http.Limits(
            max_connections=connections, max_keepalive_connections=connections
        )
        self._client = self._http.Client(limits=limits, trust_env=trust_env)
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"ChatClient({self.base_url!r}, api_key_env={self.api_key_env!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            if self.auth_header == "api-key":
                headers["api-key"] = key
            else:
                headers["authorization"] = f"Bearer {key}"
        return headers

    def complete(self, body: dict[str, Any], timeout: float) -> ChatReply:
        """Send one request; the whole attempt takes at most about ``timeout`` seconds."""
        http = self._http
        start = time.monotonic()
        end = start + timeout
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            with self._client.stream(
                "POST",
                self.url,
                content=data,
                headers=self._headers(),
                timeout=http.Timeout(timeout),
            ) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise AttemptError(
                            "bad_response", f"answer longer than {MAX_RESPONSE_BYTES} bytes"
                        )
                    chunks.append(chunk)
                    if time.monotonic() > end:
                        raise AttemptError("timeout", f"the answer took over {timeout:.1f} s")
                status, headers = response.status_code, response.headers
        except http.TimeoutException as error:
            waited = time.monotonic() - start
            raise AttemptError(
                "timeout", f"{type(error).__name__} after {waited:.1f} s (limit {timeout:.1f} s)"
            ) from None
        except http.TransportError as error:
            raise AttemptError("connection", f"{type(error).__name__}: {error}") from None
        payload = b"".join(chunks)
        seconds = time.monotonic() - start
        if status == 200:
            return _read_completion(payload, seconds)
        detail = _error_detail(payload)
        retry_after = parse_retry_after(headers)
        if status == 429:
            raise AttemptError(
                "rate_limited", f"HTTP 429: {detail}", retry_after=retry_after, status=status
            )
        if status >= 500:
            raise AttemptError(
                "server_error", f"HTTP {status}: {detail}", retry_after=retry_after, status=status
            )
        if status == 408:
            raise AttemptError("timeout", f"HTTP 408: {detail}", status=status)
        if status in (401, 403):
            state = "set" if os.environ.get(self.api_key_env) else "not set"
            raise LLMConfigError(
                "config",
                f"HTTP {status} from {self.url}: {detail}. Check the API key in the "
                f"environment variable {self.api_key_env} (currently {state}).",
            )
        if status == 404:
            raise LLMConfigError(
                "config",
                f"HTTP 404 from {self.url}: {detail}. Check base_url (OpenAI-"
                "compatible servers answer at <base_url>/chat/completions, so it usually ends "
                f"in /v1) and the model name {body.get('model')!r}.",
            )
        raise AttemptError("client_error", f"HTTP {status}: {detail}", status=status)

    def list_models(self, timeout: float = 10.0) -> list[str] | None:
        """The model ids ``GET {base_url}/models`` lists; None when the server does not answer
        that with a readable list (not every server has the route)."""
        try:
            response = self._client.get(
                f"{self.base_url}/models", headers=self._headers(), timeout=timeout
            )
            if response.status_code != 200:
                return None
            data = response.json().get("data")
        except Exception:  # noqa: BLE001 - any failure means "cannot tell"
            return None
        if not isinstance(data, list):
            return None
        ids = [m.get("id") for m in data if isinstance(m, dict)]
        return [i for i in ids if isinstance(i, str)] or None

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._client.close()


def _read_completion(payload: bytes, seconds: float) -> ChatReply:
    try:
        data = json.loads(payload)
        choice = data["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise AttemptError(
            "bad_response", f"HTTP 200 but not a chat completion: {payload[:200]!r}"
        ) from None
    content = message.get("content") if isinstance(message, dict) else None
    usage = data.get("usage") or {}
    prompt_tokens = _int(usage.get("prompt_tokens"))
    completion_tokens = _int(usage.get("completion_tokens"))
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        raise AttemptError(
            "bad_response",
            "no text content in the answer" + (f" (refusal: {refusal!r})" if refusal else ""),
        )
    return ChatReply(
        content, choice.get("finish_reason"), prompt_tokens, completion_tokens, seconds
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _error_detail(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:300]
    except (ValueError, AttributeError):
        pass
    return text.strip()[:300] or "(empty body)"


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an
    HTTP date); None when absent or unreadable.

    >>> parse_retry_after({"retry-after": "2"})
    2.0
    >>> parse_retry_after({"retry-after-ms": "250"})
    0.25
    >>> parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT"}, now=1445412480.0)
    5.0
    """
    get = headers.get
    ms = get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one report.

    ``max_retries``: attempts after the first. ``deadline``: seconds from the first attempt
    after which no attempt starts and none runs on (each attempt's timeout is cut to the time
    left). Wait before retry ``n`` (1-based): the server's ``Retry-After`` when given, else
    ``min(backoff_max, backoff * 2 ** (n - 1)) * (1 + jitter * u)``, ``u`` uniform in [0, 1).
    A wait that would end past the deadline is not waited: the report fails at once.
    """

    max_retries: int = 4
    deadline: float = 60.0
    backoff: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds, got {self.deadline}")
        if self.backoff < 0 or self.backoff_max < 0 or self.jitter < 0:
            raise ValueError("backoff, backoff_max and jitter must be >= 0")

    def delay(self, retry: int, retry_after: float | None, u: float = 0.0) -> float:
        """Seconds to wait before retry number ``retry`` (1-based).

        >>> [RetryPolicy(backoff=0.5, backoff_max=3.0).delay(n, None) for n in (1, 2, 3, 4)]
        [0.5, 1.0, 2.0, 3.0]
        >>> RetryPolicy().delay(1, retry_after=7.0)
        7.0
        """
        if retry_after is not None:
            return retry_after
        return min(self.backoff_max, self.backoff * 2 ** (retry - 1)) * (1 + self.jitter * u)


def call_with_retries(
    attempt: Callable[[float], T],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[AttemptError], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> tuple[T, int]:
    """Run ``attempt(seconds_left)`` until it returns; ``(result, attempts)``.

    Raises :class:`LLMError` (reason: the last fault) when the fault is not retryable, the
    retries are used up or the deadline would pass; :class:`LLMConfigError` passes through.
    """
    start = clock()
    end = start + policy.deadline
    tries = 0
    while True:
        tries += 1
        try:
            return attempt(max(end - clock(), 0.0)), tries
        except AttemptError as error:
            last = error
        elapsed = clock() - start
        why = None
        if last.reason not in RETRYABLE:
            why = "not retried"
        elif tries > policy.max_retries:
            why = f"after {tries} attempts (max_retries={policy.max_retries})"
        else:
            wait = policy.delay(tries, last.retry_after, rng())
            if clock() + wait >= end:
                why = (
                    f"after {tries} attempts: waiting {wait:.2f} s more would pass the "
                    f"deadline of {policy.deadline:g} s"
                )
        if why is not None:
            raise LLMError(
                last.reason, f"{last} ({why}; {elapsed:.2f} s)", attempts=tries, elapsed=elapsed
            )
        if on_retry is not None:
            on_retry(last)
        sleep(wait)


class CircuitBreaker:
    """Stop asking a server that keeps failing: after ``threshold`` reports in a row failed
    with a server fault, :meth:`allow` is False for ``cooldown`` seconds (those reports fall
    back at once, reason ``circuit_open``). After the pause requests go out again; one success
    closes the breaker, one more failure opens it again. ``threshold=0`` disables it."""

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if threshold < 0 or cooldown < 0:
            raise ValueError("breaker_threshold and breaker_cooldown must be >= 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = float("-inf")

    def allow(self) -> bool:
        with self._lock:
            return self.threshold == 0 or self._clock() >= self._open_until

    def record(self, ok: bool, reason: str | None = None) -> None:
        """Record a report's outcome; only server faults count against the server."""
        with self._lock:
            if ok:
                self._failures = 0
            elif reason in SERVER_FAULTS:
                self._failures += 1
                if self.threshold and self._failures >= self.threshold:
                    self._open_until = self._clock() + self.cooldown


class AdaptiveLimit:
    """How many requests may be in flight, adapted to what the server answers.

    Some servers answer one request at a time (llama.cpp's with one slot): the others queue,
    the last of ``n`` waits ``n`` answers, and a request whose client timed out is still
    worked through, lengthening the queue. So the latency is measured first: the limit starts
    at 1 and grows by one per quick answer (under a quarter of the request timeout), doubling
    each round, up to ``maximum`` (the labeler's ``concurrency``), until the first sign of
    queueing. From then on: an answer that took more than half the timeout lowers the limit by
    one, a timeout halves it, and ``limit`` quick answers in a row raise it by one. Never below
    1. A timeout before any answer at all (a server that hangs or is down, not a queue) sets
    the limit to ``maximum``, so a dead server fails the batch in about one deadline, not one
    per report. Errors (5xx, refused connections) do not move it. With ``adaptive=False`` the
    limit stays at ``maximum``. ``highest`` is the highest limit reached.
    """

    def __init__(self, maximum: int, adaptive: bool = True) -> None:
        if maximum < 1:
            raise ValueError(f"concurrency must be >= 1, got {maximum}")
        self.maximum = maximum
        self.adaptive = adaptive
        self._limit = 1 if adaptive else maximum
        self.highest = self._limit
        self._growing = adaptive  # slow start: +1 per quick answer
        self._answered = False
        self._in_flight = 0
        self._quick = 0
        self._cond = threading.Condition()

    @property
    def limit(self) -> int:
        return self._limit

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for a free slot (at most ``timeout`` seconds); False when none came."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._in_flight < self._limit, timeout)
            if ok:
                self._in_flight += 1
            return ok

    def release(self, seconds: float, timeout: float, outcome: str = "answer") -> None:
        """Free a slot. ``outcome``: ``"answer"`` (the server answered, in ``seconds``, under a
        request timeout of ``timeout``), ``"timeout"`` or ``"error"`` (no change)."""
        with self._cond:
            self._in_flight -= 1
            if self.adaptive and outcome == "timeout":
                self._growing = False
                self._set(self._limit // 2 if self._answered else self.maximum)
            elif self.adaptive and outcome == "answer":
                self._answered = True
                if seconds > timeout / 2:
                    self._growing = False
                    self._set(self._limit - 1)
                elif seconds < timeout / 4:
                    self._quick += 1
                    if self._growing or self._quick >= self._limit:
                        self._set(self._limit + 1)
            self._cond.notify_all()

    def _set(self, value: int) -> None:
        self._limit = max(1, min(self.maximum, value))
        self.highest = max(self.highest, self._limit)
        self._quick = 0
