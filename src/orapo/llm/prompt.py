"""Prompts are data: ``prompts/<name>.yaml`` beside this module, with a version.

A prompt file holds ``version``, ``system``, ``user_template`` (with one ``{report}``),
``examples`` (few-shot turns: ``report`` and its ``facts``) and ``schema`` (the answer's JSON
schema). :func:`load_prompt` reads and checks one; :meth:`Prompt.messages` builds the chat
turns for one report; :meth:`Prompt.response_format` the ``response_format`` field for each
mode. ``Prompt.id`` (``"facts-v1:3f2a9c01d4e5"``: version and a digest of the file) is what
the cache keys on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROMPTS_DIR = Path(__file__).with_name("prompts")
DEFAULT_PROMPT = "facts-v1"
#: How the answer's shape is asked for, in the order ``auto`` tries them:
#: ``json_schema`` - ``response_format: {type: json_schema, json_schema: {schema}}`` (OpenAI,
#: vLLM, Ollama, llama.cpp's ``llama-server``); ``json_object_schema`` - ``{type: json_object,
#: schema}`` (llama-cpp-python's server, which refuses ``json_schema``; ``llama-server`` takes it
#: too); ``guided_json`` - vLLM's own request field, the schema, no ``response_format``;
#: ``json_object`` - any JSON object, no schema; ``none`` - nothing, the prompt alone.
RESPONSE_FORMATS: tuple[str, ...] = (
    "json_schema",
    "json_object_schema",
    "guided_json",
    "json_object",
    "none",
)


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt file (module docstring)."""

    version: str
    system: str
    user_template: str
    examples: tuple[dict[str, Any], ...]
    schema: dict[str, Any]
    path: Path
    digest: str

    @property
    def id(self) -> str:
        """``"<version>:<first 12 hex digits of the file's SHA-256>"``."""
        return f"{self.version}:{self.digest[:12]}"

    def user_message(self, report: str) -> str:
        return self.user_template.replace("{report}", report)

    def messages(self, report: str) -> list[dict[str, str]]:
        """System turn, one user/assistant pair per example, then the report's user turn."""
        out = [{"role": "system", "content": self.system.strip()}]
        for example in self.examples:
            out.append({"role": "user", "content": self.user_message(example["report"])})
            answer = {"facts": example["facts"]}
            out.append({"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)})
        out.append({"role": "user", "content": self.user_message(report)})
        return out

    def response_format(self, mode: str) -> dict[str, Any] | None:
        """The ``response_format`` request field for ``mode`` (None: leave the field out)."""
        return self.format_fields(mode).get("response_format")

    def format_fields(self, mode: str) -> dict[str, Any]:
        """The request fields that ask for the answer's shape in ``mode``."""
        if mode == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "atomic_facts", "strict": True, "schema": self.schema},
                }
            }
        if mode == "json_object_schema":
            return {"response_format": {"type": "json_object", "schema": self.schema}}
        if mode == "guided_json":
            return {"guided_json": self.schema}
        if mode == "json_object":
            return {"response_format": {"type": "json_object"}}
        if mode == "none":
            return {}
        raise ValueError(f"unknown response_format {mode!r}; valid: {', '.join(RESPONSE_FORMATS)}")


def load_prompt(name_or_path: str | Path = DEFAULT_PROMPT) -> Prompt:
    """A prompt by name (a file in ``prompts/``, without ``.yaml``) or by path.

    Raises ``ValueError`` naming the file and field when the file is not a valid prompt.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            valid = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml")))
            raise ValueError(
                f"unknown prompt {str(name_or_path)!r}; valid names are: {valid} "
                "(or give the path of a .yaml prompt file)"
            )
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the prompt file: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a prompt file is a mapping with version, system, "
            "user_template, examples, schema"
        )
    for key, kind in (
        ("version", str),
        ("system", str),
        ("user_template", str),
        ("examples", list),
        ("schema", dict),
    ):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"{path}: field {key!r} must be a {kind.__name__}")
    if "{report}" not in data["user_template"]:
        raise ValueError(f"{path}: field 'user_template' must contain {{report}}")
    for k, example in enumerate(data["examples"]):
        if not (
            isinstance(example, dict)
            and isinstance(example.get("report"), str)
            and isinstance(example.get("facts"), list)
        ):
            raise ValueError(f"{path}: examples[{k}] needs a 'report' string and a 'facts' list")
    return Prompt(
        version=data["version"],
        system=data["system"],
        user_template=data["user_template"],
        examples=tuple(data["examples"]),
        schema=data["schema"],
        path=path,
        digest=hashlib.sha256(raw).hexdigest(),
    )
