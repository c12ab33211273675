"""The report-generation prompt, stored as data (``prompts/*.yaml``) and versioned.

One prompt serves training, generation and evaluation, so a model is always asked the same
question it was trained on; its ``version`` goes into every saved model and evaluation result.

A prompt file::

    version: report_v1          # unique name, recorded in outputs
    system: null                # system message; null keeps the chat template's default
    image_position: before      # image placeholder before or after the instruction
    instruction: Write the report ...

The prompt is rendered with the checkpoint's own chat template (:meth:`ReportPrompt.messages`),
so Qwen checkpoints see exactly the format they were tuned on.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orapo.errors import UserError

DEFAULT_PROMPT = "report_v1"
IMAGE_POSITIONS = ("before", "after")


class PromptError(UserError, ValueError):
    """A prompt file that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class ReportPrompt:
    """A versioned chat prompt with one image placeholder."""

    version: str
    instruction: str
    system: str | None = None
    image_position: str = "before"

    def messages(self) -> list[dict[str, Any]]:
        """Chat messages in the Hugging Face multimodal format (one image, one instruction)."""
        image = {"type": "image"}
        text = {"type": "text", "text": self.instruction}
        content = [image, text] if self.image_position == "before" else [text, image]
        out: list[dict[str, Any]] = []
        if self.system is not None:
            out.append({"role": "system", "content": [{"type": "text", "text": self.system}]})
        out.append({"role": "user", "content": content})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "system": self.system,
            "image_position": self.image_position,
            "instruction": self.instruction,
        }


def packaged_prompts() -> list[str]:
    """Names of the prompts shipped in ``orapo/model/prompts``."""
    folder = resources.files("orapo.model") / "prompts"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def parse_prompt(data: Any, where: str) -> ReportPrompt:
    """Validate a decoded prompt mapping; ``where`` names its source in errors."""
    if not isinstance(data, dict):
        raise PromptError(f"{where}: a prompt must be a mapping with version and instruction")
    unknown = set(data) - {"version", "system", "image_position", "instruction"}
    if unknown:
        raise PromptError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for name in ("version", "instruction"):
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise PromptError(f"{where}: field {name!r} must be a non-empty string")
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise PromptError(f"{where}: field 'system' must be a string or null")
    position = data.get("image_position", "before")
    if position not in IMAGE_POSITIONS:
        raise PromptError(
            f"{where}: field 'image_position' is {position!r}; expected one of "
            f"{', '.join(IMAGE_POSITIONS)}"
        )
    return ReportPrompt(
        version=data["version"].strip(),
        instruction=data["instruction"].strip(),
        system=system,
        image_position=position,
    )


def load_prompt(name_or_path: str | None = None) -> ReportPrompt:
    """A packaged prompt by name (``report_v1``) or a prompt YAML file by path."""
    name_or_path = name_or_path or DEFAULT_PROMPT
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise PromptError(f"prompt file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        resource = resources.files("orapo.model") / "prompts" / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise PromptError(
                f"unknown prompt {name_or_path!r}; packaged prompts are: "
                f"{', '.join(packaged_prompts())} (or give a path to a YAML file)"
            )
        text = resource.read_text(encoding="utf-8")
        where = f"orapo/model/prompts/{name_or_path}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PromptError(f"{where}: not valid YAML ({err})") from None
    return parse_prompt(data, where)
