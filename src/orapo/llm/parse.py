"""The model's answer text -> validated facts: strict JSON parsing with repair, then the schema.

Two pure steps, each raising a :class:`ParseError` whose ``reason`` is the fault class the
retry loop counts (``bad_json`` or ``bad_schema``):

1. :func:`parse_json` tries ``json.loads`` first; only when that fails does it repair the
   common defects of chat models, each named in the returned list so it can be counted:

   ==================  ========================================================
   repair              what it fixes
   ==================  ========================================================
   ``code_fence``      ```` ```json ... ``` ```` around the answer (closed or not)
   ``leading_text``    prose before the first ``{`` or ``[``
   ``trailing_text``   prose after the JSON value
   ``single_quotes``   ``{'facts': ['a']}`` (an apostrophe inside stays one when
                       the next character cannot follow a string's end)
   ``trailing_comma``  ``[1, 2,]`` and ``{"a": 1,}``
   ``truncated``       an answer cut off (``max_tokens``): the last, incomplete
                       element of the innermost open array is dropped and every
                       open bracket closed; without an open array it fails
   ==================  ========================================================

   Raw control characters inside strings are accepted (``json.loads(strict=False)``).
2. :func:`validate_facts` checks the shape ``{"facts": [{"fact", "observation", "state"}]}``
   (a bare list of facts is accepted and reported as the repair ``bare_array``; extra keys are
   ignored) and maps each fact (:mod:`orapo.llm.facts`). Errors name the path:
   ``facts[2].state: 'maybe' is not one of present, absent, uncertain``.

>>> parse_json("```json\\n{'facts': [{'fact': 'no effusion',},]}\\n```")
({'facts': [{'fact': 'no effusion'}]}, ['code_fence', 'single_quotes', 'trailing_comma'])
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from orapo.llm.facts import AtomicFact, map_observation, map_state

_FENCE_OPEN = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?")
_FENCE_CLOSE = re.compile(r"\n?[ \t]*```.*$", re.DOTALL)
_AFTER_STRING = set(",:}]")


class ParseError(ValueError):
    """An answer that cannot be read; ``reason`` is ``bad_json`` or ``bad_schema``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ParsedAnswer:
    """A validated answer: facts, the repairs its JSON needed, observation strings that matched
    no name (their facts have ``observation=None``), and ``raw``: the facts as the model wrote
    them (``{"fact", "observation", "state"}`` strings; what the cache stores)."""

    facts: tuple[AtomicFact, ...]
    repairs: tuple[str, ...]
    unmapped: tuple[str, ...]
    raw: tuple[dict[str, str], ...] = ()


def parse_answer(content: str) -> ParsedAnswer:
    """Answer text -> :class:`ParsedAnswer` (:func:`parse_json` then :func:`validate_facts`)."""
    data, repairs = parse_json(content)
    parsed = validate_facts(data)
    return ParsedAnswer(parsed.facts, tuple(repairs) + parsed.repairs, parsed.unmapped, parsed.raw)


def parse_json(text: str) -> tuple[Any, list[str]]:
    """Parse a JSON answer, repairing the defects of the module docstring.

    Returns ``(value, repairs)``; ``repairs`` is empty when the text was valid JSON.
    """
    if not isinstance(text, str) or not text.strip():
        raise ParseError("bad_json", "the answer is empty")
    try:
        return json.loads(text), []
    except json.JSONDecodeError:
        pass
    repairs: list[str] = []
    body = text.strip()
    fence = _FENCE_OPEN.search(body)
    if fence and "{" not in body[: fence.start()] and "[" not in body[: fence.start()]:
        if body[: fence.start()].strip():
            repairs.append("leading_text")
        body = _FENCE_CLOSE.sub("", body[fence.end() :])
        repairs.insert(0, "code_fence")
    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ParseError("bad_json", f"no JSON object or array in the answer: {_clip(text)!r}")
    if body[:start].strip() and "leading_text" not in repairs:
        repairs.append("leading_text")
    fixed, more = _repair(body[start:])
    repairs.extend(more)
    try:
        return json.loads(fixed, strict=False), repairs
    except json.JSONDecodeError as error:
        raise ParseError(
            "bad_json",
            f"invalid JSON after repairs {repairs}: {error.msg} at char "
            f"{error.pos}: {_clip(text)!r}",
        ) from None


def _repair(text: str) -> tuple[str, list[str]]:
    """One left-to-right scan: quotes, trailing commas, trailing text, truncation."""
    out: list[str] = []
    repairs: set[str] = set()
    stack: list[str] = []  # open brackets
    commas: list[int] = []  # per open bracket: len(out) at its last comma (or after it opens)
    quote = ""  # the quote that opened the current string, "" outside strings
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and i + 1 < n:
                nxt = text[i + 1]
                out.append("'" if (quote == "'" and nxt == "'") else c + nxt)
                i += 2
                continue
            if c == quote and (quote == '"' or _ends_single_quoted(text, i + 1)):
                out.append('"')
                quote = ""
            elif c == '"':  # a double quote inside a single-quoted string
                out.append('\\"')
            else:
                out.append(c)
            i += 1
            continue
        if c in "\"'":
            quote = c
            if c == "'":
                repairs.add("single_quotes")
            out.append('"')
        elif c in "{[":
            stack.append(c)
            out.append(c)
            commas.append(len(out))
        elif c in "}]":
            if not stack or {"{": "}", "[": "]"}[stack[-1]] != c:
                raise ParseError("bad_json", f"unbalanced {c!r} at char {i}: {_clip(text)!r}")
            _drop_trailing_comma(out, repairs)
            stack.pop()
            commas.pop()
            out.append(c)
            if not stack:
                if text[i + 1 :].strip():
                    repairs.add("trailing_text")
                return "".join(out), sorted(repairs, key=_REPAIR_ORDER.index)
        elif c == ",":
            out.append(c)
            if commas:
                commas[-1] = len(out)
        else:
            out.append(c)
        i += 1
    # The text ended inside a value: truncated.
    repairs.add("truncated")
    arrays = [k for k, b in enumerate(stack) if b == "["]
    if not arrays:
        raise ParseError("bad_json", f"truncated outside any array: {_clip(text)!r}")
    k = arrays[-1]
    tail = "".join(out[commas[k] :]).strip()
    complete = not quote and k == len(stack) - 1 and (tail == "" or tail[-1] in '}]"')
    if not complete:  # drop the incomplete last element of the innermost array
        del out[commas[k] :]
    del stack[k + 1 :]
    _drop_trailing_comma(out, repairs, count=False)
    out.extend({"{": "}", "[": "]"}[b] for b in reversed(stack))
    return "".join(out), sorted(repairs, key=_REPAIR_ORDER.index)


_REPAIR_ORDER = [
    "code_fence",
    "leading_text",
    "single_quotes",
    "trailing_comma",
    "trailing_text",
    "truncated",
    "bare_array",
]


def _ends_single_quoted(text: str, j: int) -> bool:
    """Is the ``'`` before ``text[j]`` the end of a single-quoted string (not an apostrophe)?"""
    rest = text[j:].lstrip()
    return rest == "" or rest[0] in _AFTER_STRING


def _drop_trailing_comma(out: list[str], repairs: set[str], count: bool = True) -> None:
    k = len(out) - 1
    while k >= 0 and out[k].isspace():
        k -= 1
    if k >= 0 and out[k] == ",":
        del out[k:]
        if count:
            repairs.add("trailing_comma")


def validate_facts(data: Any) -> ParsedAnswer:
    """A parsed answer -> :class:`ParsedAnswer` (``repairs``: ``bare_array`` or nothing).

    Raises :class:`ParseError` (``bad_schema``) naming the first bad path.
    """
    shape_repairs: list[str] = []
    if isinstance(data, list):
        items, shape_repairs = data, ["bare_array"]
    elif isinstance(data, dict):
        if "facts" not in data:
            keys = ", ".join(map(repr, data)) or "none"
            raise ParseError("bad_schema", f"the answer has no 'facts' key (keys: {keys})")
        items = data["facts"]
        if not isinstance(items, list):
            raise ParseError("bad_schema", f"facts: expected a list, got {type(items).__name__}")
    else:
        raise ParseError("bad_schema", f"expected an object, got {type(data).__name__}")
    facts: list[AtomicFact] = []
    unmapped: list[str] = []
    raw: list[dict[str, str]] = []
    for k, item in enumerate(items):
        where = f"facts[{k}]"
        if not isinstance(item, dict):
            raise ParseError(
                "bad_schema", f"{where}: expected an object, got {type(item).__name__}"
            )
        for key in ("fact", "observation", "state"):
            if key not in item:
                raise ParseError("bad_schema", f"{where}: missing key {key!r}")
            if not isinstance(item[key], str):
                raise ParseError(
                    "bad_schema",
                    f"{where}.{key}: expected a string, got {type(item[key]).__name__}",
                )
        state = map_state(item["state"])
        if state is None:
            raise ParseError(
                "bad_schema",
                f"{where}.state: {item['state']!r} is not one of present, absent, uncertain",
            )
        observation, matched = map_observation(item["observation"])
        if not matched:
            unmapped.append(item["observation"])
        facts.append(AtomicFact(item["fact"].strip(), observation, state, "llm"))
        raw.append({key: item[key] for key in ("fact", "observation", "state")})
    return ParsedAnswer(tuple(facts), tuple(shape_repairs), tuple(unmapped), tuple(raw))


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n] + "..."
