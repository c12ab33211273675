"""A loopback OpenAI-compatible chat server with a deterministic fake "model" and fault injection.

For tests, benchmarks and offline demos: it speaks ``POST /v1/chat/completions`` (and
``GET /v1/models``) on 127.0.0.1, and answers the fact-extraction prompt with
:func:`fake_facts`, a few keyword rules per sentence. It is not a labeler: it exists so that the
whole client path (HTTP, retries, parsing, cache, concurrency) runs for real without a model::

    with FakeChatServer(latency=0.05) as server:
        LLMLabeler("fake-facts", server.base_url).label("Small left pleural effusion.")

Faults (names for :meth:`FakeChatServer.push_faults`, or a marker ``[fault:NAME]`` /
``[fault:NAME:N]`` inside a report: every request for it, or its first N requests):

==================  ========================================================================
fault               the server ...
==================  ========================================================================
``timeout``         waits ``hang_seconds`` before answering
``drip``            sends the answer one byte every ``drip_seconds``
``drop``            closes the connection without an answer
``429``             answers 429 with ``Retry-After: <retry_after>``
``429ms``           answers 429 with ``retry-after-ms: <retry_after * 1000>``
``500`` / ``503``   answers 500 / 503 (503 with ``Retry-After``)
``400``             answers 400 (context length exceeded)
``401`` / ``404``   answers 401 / 404
``bad_body``        answers 200 with a body that is not JSON
``no_content``      answers a completion whose message has no content (a refusal)
``malformed``       answers prose instead of JSON
``fenced``          wraps the JSON in a code fence, with a line of prose before it
``single_quotes``   writes the JSON with single quotes and trailing commas
``truncated``       cuts the JSON inside its last fact (``finish_reason: length``)
``truncated_hard``  cuts the JSON after a few characters
``wrong_schema``    answers ``{"findings": [...]}``
``bad_state``       answers facts whose state is ``"maybe"``
==================  ========================================================================

``llama_cpp=True`` answers as llama-cpp-python's server (``python -m llama_cpp.server``)
does: one request at a time (the others wait their turn, and a request whose client gave up
is still worked through), ``response_format`` of type ``json_schema`` refused with HTTP 500
("Input should be 'text' or 'json_object'"), ``{"type": "json_object", "schema": ...}``
honoured, any model name accepted; without a schema the fake model, like a small real one,
leaves out the ``state`` key. ``fail_all="500"`` (any fault name) applies that fault to every
chat request: a server that cannot answer.

``server.requests`` logs every request (time, path, parsed body, fault); ``max_in_flight`` is
the most requests it handled at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS: tuple[str, ...] = (
    "timeout",
    "drip",
    "drop",
    "429",
    "429ms",
    "500",
    "503",
    "400",
    "401",
    "404",
    "bad_body",
    "no_content",
    "malformed",
    "fenced",
    "single_quotes",
    "truncated",
    "truncated_hard",
    "wrong_schema",
    "bad_state",
)
_MARKER = re.compile(r"\[fault:([a-z0-9_]+)(?::(\d+))?\]")
_SENTENCES = re.compile(r"(?<=[.;!?])\s+|\n+")
_GLOBAL_NORMAL = re.compile(
    r"\bnormal (chest|study|radiograph|chest radiograph|examination)\b"
    r"|\bno acute (cardiopulmonary|intrathoracic) (process|abnormality|disease|findings?)\b"
)
_UNCERTAIN = re.compile(
    r"\b(possible|possibly|may|might|could|cannot be excluded|cannot exclude|questionable|"
    r"suspicious|concerning|suggestive|borderline)\b"
)
_NEGATIVE = re.compile(r"\b(no|without|negative for|free of|resolved|normal|clear)\b")
#: Keyword -> observation, first match per observation per sentence.
_KEYWORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"mediastin", "Enlarged Cardiomediastinum"),
        (r"cardiomegaly|heart size|enlarged heart|cardiac silhouette", "Cardiomegaly"),
        (r"opacit|infiltrate|lungs are clear", "Lung Opacity"),
        (r"nodule|\bmass\b", "Lung Lesion"),
        (r"edema|congestion", "Edema"),
        (r"consolidation", "Consolidation"),
        (r"pneumonia", "Pneumonia"),
        (r"atelecta", "Atelectasis"),
        (r"pneumothora", "Pneumothorax"),
        (r"effusion", "Pleural Effusion"),
        (r"pleural thickening", "Pleural Other"),
        (r"fracture", "Fracture"),
        (r"\btubes?\b|\blines?\b|catheter|pacemaker|wires", "Support Devices"),
    )
)


def fake_facts(report: str) -> list[dict[str, str]]:
    """The fake model: per sentence, a fact for each keyword found (state: uncertain if a hedge
    word is in the sentence, else absent if a negation word is, else present), a No Finding
    fact for a global-normal phrase, an ``Other`` fact for a sentence with none of them.

    >>> fake_facts("No pneumothorax. Possible left effusion. Old rib deformity.")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'fact': 'No pneumothorax', 'observation': 'Pneumothorax', 'state': 'absent'},
     {'fact': 'Possible left effusion', 'observation': 'Pleural Effusion', 'state': 'uncertain'},
     {'fact': 'Old rib deformity', 'observation': 'Other', 'state': 'present'}]
    """
    facts: list[dict[str, str]] = []
    for sentence in _SENTENCES.split(_MARKER.sub("", report)):
        sentence = sentence.strip().rstrip(".;!?").strip()
        if not any(ch.isalpha() for ch in sentence):
            continue
        lower = sentence.lower()
        found = False
        if _GLOBAL_NORMAL.search(lower):
            facts.append({"fact": sentence, "observation": "No Finding", "state": "present"})
            found = True
        else:
            state = (
                "uncertain"
                if _UNCERTAIN.search(lower)
                else "absent"
                if _NEGATIVE.search(lower)
                else "present"
            )
            for pattern, name in _KEYWORDS:
                if pattern.search(lower):
                    facts.append({"fact": sentence, "observation": name, "state": state})
                    found = True
        if not found:
            facts.append({"fact": sentence, "observation": "Other", "state": "present"})
    return facts


@dataclass
class RequestRecord:
    """One request the fake server received."""

    time: float
    path: str
    body: Any
    fault: str | None
    authorized: bool
    headers: dict[str, str] = field(default_factory=dict)


class FakeChatServer:
    """The fake server (module docstring); a context manager that starts and stops it.

    Args:
        latency: seconds every chat request waits before answering (a model's think time).
        retry_after: the ``Retry-After`` value of the 429 / 503 faults, seconds.
        hang_seconds: how long the ``timeout`` fault waits.
        drip_seconds: the pause between bytes of the ``drip`` fault.
        reject_json_schema: answer 400 to requests whose ``response_format`` is a JSON schema
            (a server without structured outputs).
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
        model: the model name ``/v1/models`` lists.
        llama_cpp: answer as llama-cpp-python's server does (module docstring).
        fail_all: a fault (:data:`FAULTS`) for every chat request.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        retry_after: float = 1.0,
        hang_seconds: float = 10.0,
        drip_seconds: float = 0.2,
        reject_json_schema: bool = False,
        api_key: str | None = None,
        model: str = "fake-facts",
        host: str = "127.0.0.1",
        port: int = 0,
        llama_cpp: bool = False,
        fail_all: str | None = None,
    ) -> None:
        if fail_all is not None and fail_all not in FAULTS:
            raise ValueError(f"unknown fault {fail_all!r}; valid: {', '.join(FAULTS)}")
        self.latency = latency
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.drip_seconds = drip_seconds
        self.reject_json_schema = reject_json_schema
        self.api_key = api_key
        self.model = model
        self.llama_cpp = llama_cpp
        self.fail_all = fail_all
        self._serial = threading.Lock()  # llama_cpp: one request at a time
        self.requests: list[RequestRecord] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[str] = deque()
        self._per_report: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server((host, port), _handler(self))
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    def start(self) -> FakeChatServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True, name="fake-chat-server"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def push_faults(self, *names: str) -> None:
        """Queue faults for the next requests, one each, in order."""
        for name in names:
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; valid: {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend(names)

    def chat_requests(self) -> list[RequestRecord]:
        """The requests to ``/chat/completions`` so far."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- the handler's helpers ---------------------------------------------------------------

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _pick_fault(self, report: str) -> str | None:
        with self._lock:
            if self.fail_all is not None:
                return self.fail_all
            if self._faults:
                return self._faults.popleft()
            marker = _MARKER.search(report)
            if marker is None:
                return None
            name, limit = marker.group(1), marker.group(2)
            self._per_report[report] += 1
            if limit is not None and self._per_report[report] > int(limit):
                return None
            return name

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout, drip) is expected here, not an error


def _report_of(body: Any) -> str:
    try:
        content = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content.split("Report:\n", 1)[-1].strip() if isinstance(content, str) else ""


def _handler(server: FakeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(
            self,
            status: int,
            payload: Any,
            headers: dict[str, str] | None = None,
            raw: bytes | None = None,
        ) -> None:
            data = raw if raw is not None else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None):
            self._send(status, {"error": {"message": message, "type": "fake"}}, headers)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(
                    200, {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                )
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            authorized = (
                server.api_key is None
                or self.headers.get("Authorization") == f"Bearer {server.api_key}"
            )
            report = _report_of(body)
            fault = server._pick_fault(report) if self.path.endswith("/chat/completions") else None
            headers = {
                k.lower(): v
                for k, v in self.headers.items()
                if k.lower() not in ("authorization", "api-key")
            }
            with server._lock:
                server.requests.append(
                    RequestRecord(time.monotonic(), self.path, body, fault, authorized, headers)
                )
            server._enter()
            try:
                if server.llama_cpp:
                    with server._serial:
                        self._chat(body, report, fault, authorized)
                else:
                    self._chat(body, report, fault, authorized)
            finally:
                server._leave()

        def _chat(self, body: Any, report: str, fault: str | None, authorized: bool) -> None:
            if not self.path.endswith("/chat/completions"):
                return self._error(404, f"no route {self.path}")
            if not authorized or fault == "401":
                return self._error(401, "Incorrect API key provided.")
            if fault == "404":
                return self._error(404, "The model does not exist.")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return self._error(400, "the body needs 'model' and 'messages'")
            fmt = body.get("response_format") or {}
            if not isinstance(fmt, dict):
                fmt = {}
            if server.reject_json_schema and fmt.get("type") == "json_schema":
                return self._error(
                    400, "response_format of type 'json_schema' is not supported by this server"
                )
            if server.llama_cpp and fmt.get("type") not in (None, "text", "json_object"):
                return self._error(  # llama-cpp-python: its pydantic model, then a 500
                    500,
                    "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n"
                    "  Input should be 'text' or 'json_object' [type=literal_error, "
                    f"input_value={fmt.get('type')!r}, input_type=str]",
                )
            drop_state = server.llama_cpp and not fmt.get("schema")
            if server.latency:
                server._sleep(server.latency)
            retry = {"Retry-After": f"{server.retry_after:g}"}
            if fault == "timeout":
                server._sleep(server.hang_seconds)
            elif fault == "drop":
                self.close_connection = True
                return None
            elif fault == "429":
                return self._error(429, "Rate limit reached.", retry)
            elif fault == "429ms":
                return self._error(
                    429, "Rate limit reached.", {"retry-after-ms": f"{server.retry_after * 1000:g}"}
                )
            elif fault == "500":
                return self._error(500, "The server had an error.")
            elif fault == "503":
                return self._error(503, "The server is overloaded.", retry)
            elif fault == "400":
                return self._error(400, "This model's maximum context length is 8192 tokens.")
            elif fault == "bad_body":
                return self._send(200, None, raw=b"<html>502 Bad Gateway</html>")
            facts = fake_facts(report)
            if drop_state:  # a small model without a schema to follow
                facts = [{k: v for k, v in f.items() if k != "state"} for f in facts]
            content, finish = _answer(facts, fault)
            prompt_tokens = sum(
                len(str(m.get("content", "")).split())
                for m in body["messages"]
                if isinstance(m, dict)
            )
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if fault == "no_content":
                message = {
                    "role": "assistant",
                    "content": None,
                    "refusal": "I cannot help with that.",
                }
            payload = {
                "id": f"chatcmpl-fake-{len(server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(content.split()),
                    "total_tokens": prompt_tokens + len(content.split()),
                },
            }
            if fault == "drip":
                return self._drip(json.dumps(payload).encode("utf-8"))
            return self._send(200, payload)

        def _drip(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for k in range(len(data)):
                    if server._stop.is_set():
                        return
                    self.wfile.write(data[k : k + 1])
                    self.wfile.flush()
                    server._sleep(server.drip_seconds)
            except OSError:  # the client gave up
                self.close_connection = True

    return Handler


def _answer(facts: list[dict[str, str]], fault: str | None) -> tuple[str, str]:
    """The answer text for ``facts`` with a content fault applied; ``(content, finish)``."""
    good = json.dumps({"facts": facts})
    if fault == "malformed":
        return "Sure! The report describes a few findings, mostly normal.", "stop"
    if fault == "fenced":
        return (
            f"Here are the facts:\n```json\n{json.dumps({'facts': facts}, indent=2)}\n```",
            "stop",
        )
    if fault == "single_quotes":
        items = ", ".join(
            "{" + ", ".join(f"'{k}': '{v}'" for k, v in f.items()) + ",}" for f in facts
        )
        return "{'facts': [" + items + ",]}", "stop"
    if fault == "truncated":
        if not facts:
            return good[:-3], "length"
        cut = good.rfind('"state"')
        return good[: cut + 4], "length"
    if fault == "truncated_hard":
        return good[:5], "length"
    if fault == "wrong_schema":
        return json.dumps({"findings": [f["fact"] for f in facts]}), "stop"
    if fault == "bad_state":
        return json.dumps(
            {
                "facts": [dict(f, state="maybe") for f in facts]
                or [{"fact": "x", "observation": "Other", "state": "maybe"}]
            }
        ), "stop"
    return good, "stop"
