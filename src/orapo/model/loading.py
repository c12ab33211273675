"""Loading Qwen-VL checkpoints and their processors; LoRA and freezing.

Supported architectures are looked up by the checkpoint's ``model_type`` in
:data:`ARCHITECTURES`; anything else is an error that lists them. Models and processors come
from transformers' own classes. Where torchvision is missing (this project's CPU environment),
``AutoProcessor`` cannot build Qwen's video processor, so the processor is assembled from the
tokenizer, the PIL image processor (``Qwen2VLImageProcessorPil``) and the chat template, as an
image-only subclass of the checkpoint's own processor class (same behaviour for images, saved
under the same class name, so a machine with torchvision opens the saved directory with
``AutoProcessor``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orapo.errors import UserError
from orapo.model.config import LoraSettings, ModelConfig
from orapo.registry import Registry

#: What ``orapo`` writes beside a saved policy (format, base model, prompt).
ORAPO_RECORD = "orapo_model.json"
ADAPTER_CONFIG = "adapter_config.json"


class ModelLoadError(UserError, ValueError):
    """A model directory or hub id that cannot be opened as a policy; the message says why."""


@dataclass(frozen=True)
class Architecture:
    """How to build one model family: transformers class names, looked up lazily."""

    model_type: str
    model_class: str
    processor_class: str

    def model_cls(self) -> type:
        import transformers

        return getattr(transformers, self.model_class)

    def processor_cls(self) -> type:
        import transformers

        return getattr(transformers, self.processor_class)


ARCHITECTURES: Registry[Architecture] = Registry("model architecture")
for _arch in (
    Architecture("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    Architecture("qwen2_vl", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    Architecture("qwen3_vl", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
):
    ARCHITECTURES.register(_arch.model_type)(_arch)


# ----------------------------------------------------------------------------- where, what
def is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists()


def resolve_source(name_or_path: str) -> str:
    """An absolute local directory, or a hub id left as is; anything else is an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path}: a model must be a directory, not a file")
        return str(path.resolve())
    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path) is not None
    if not looks_like_hub_id:
        raise ModelLoadError(
            f"{name_or_path}: no such model directory (and not a hub id like Org/Name)"
        )
    return name_or_path


def read_record(source: str) -> dict[str, Any]:
    """The ``orapo_model.json`` of a local model directory ({} if absent)."""
    path = Path(source) / ORAPO_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: invalid JSON ({err.msg})") from None


def adapter_base(source: str) -> str | None:
    """The base model of a LoRA adapter directory, or None if ``source`` holds full weights."""
    path = Path(source) / ADAPTER_CONFIG
    if not is_local(source) or not path.is_file():
        return None
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: invalid JSON ({err.msg})") from None
    if not base:
        raise ModelLoadError(f"{path}: field 'base_model_name_or_path' is missing")
    return resolve_source(base)


def detect_architecture(source: str) -> Architecture:
    """The :class:`Architecture` of a checkpoint, from its config's ``model_type``."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{source}: cannot read the model config ({err})") from None
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            f"{source}: model type {model_type!r} is not supported; supported types are: "
            f"{', '.join(ARCHITECTURES.names())} (Qwen2-VL, Qwen2.5-VL, Qwen3-VL checkpoints)"
        )
    return ARCHITECTURES.get(model_type)


# ----------------------------------------------------------------------------- dtype, device
def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda:$LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


# ----------------------------------------------------------------------------- processor
_IMAGE_ONLY_CLASSES: dict[type, type] = {}


def image_only_processor_class(base: type) -> type:
    """A subclass of Qwen processor ``base`` without the video processor (needs no torchvision).

    It keeps ``base``'s name, so the saved ``processor_config.json`` names the real class.
    """
    if base in _IMAGE_ONLY_CLASSES:
        return _IMAGE_ONLY_CLASSES[base]
    from transformers.processing_utils import ProcessorMixin

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        def token(name: str, default: str) -> tuple[str, int]:
            text = getattr(tokenizer, name, None) or default
            return text, tokenizer.convert_tokens_to_ids(text)

        self.image_token, self.image_token_id = token("image_token", "<|image_pad|>")
        self.video_token, self.video_token_id = token("video_token", "<|video_pad|>")
        self.vision_start_token, self.vision_start_token_id = token(
            "vision_start_token", "<|vision_start|>"
        )
        self.vision_end_token, self.vision_end_token_id = token(
            "vision_end_token", "<|vision_end|>"
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    cls = type(
        base.__name__,
        (base,),
        {"__init__": __init__, "__doc__": f"{base.__name__} for images only (no torchvision)."},
    )
    _IMAGE_ONLY_CLASSES[base] = cls
    return cls


def _chat_template(source: str, tokenizer: Any) -> str | None:
    from transformers.utils import cached_file

    found = cached_file(source, "chat_template.jinja", _raise_exceptions_for_missing_entries=False)
    if found:
        return Path(found).read_text(encoding="utf-8")
    for name in ("chat_template.json", "processor_config.json"):
        found = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
        if found:
            data = json.loads(Path(found).read_text(encoding="utf-8"))
            if isinstance(data.get("chat_template"), str):
                return data["chat_template"]
    return getattr(tokenizer, "chat_template", None)


def load_processor(
    source: str,
    arch: Architecture,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Any:
    """The checkpoint's processor, left-padding, with optional image-size bounds."""
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        processor = AutoProcessor.from_pretrained(source)
        if not hasattr(processor, "image_processor"):
            raise ModelLoadError(f"{source}: AutoProcessor gave no image processor")
    else:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        tokenizer = AutoTokenizer.from_pretrained(source)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
        template = _chat_template(source, tokenizer)
        if template is None:
            raise ModelLoadError(
                f"{source}: no chat template (chat_template.jinja, chat_template.json or the "
                "tokenizer's); the report prompt needs one"
            )
        cls = image_only_processor_class(arch.processor_cls())
        processor = cls(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=template
        )
    set_pixel_bounds(processor.image_processor, min_pixels, max_pixels)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def set_pixel_bounds(image_processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    """Override the image processor's resize bounds (``size`` shortest/longest edge = area)."""
    if min_pixels is None and max_pixels is None:
        return
    from transformers.image_utils import SizeDict

    size = image_processor.size
    shortest = min_pixels if min_pixels is not None else size.shortest_edge
    longest = max_pixels if max_pixels is not None else size.longest_edge
    if shortest > longest:
        raise ValueError(f"min_pixels ({shortest}) exceeds max_pixels ({longest})")
    image_processor.size = SizeDict(shortest_edge=shortest, longest_edge=longest)


# ----------------------------------------------------------------------------- model parts
def inner_model(core: nn.Module) -> nn.Module:
    """The ``*Model`` inside ``*ForConditionalGeneration`` (has ``visual``, ``language_model``)."""
    return core.model


def vision_tower(core: nn.Module) -> nn.Module:
    return inner_model(core).visual


def final_norm(core: nn.Module) -> nn.Module:
    """The language model's last norm: its output is the hidden state lm_head reads."""
    return inner_model(core).language_model.norm


def lora_target_regex(settings: LoraSettings) -> str:
    """peft ``target_modules`` regex: the named layers of the language model (and lm_head-like
    top-level modules of those names), plus the vision blocks' linears if ``train_vision``."""
    names = "|".join(re.escape(n) for n in settings.target_modules)
    pattern = rf"(?:model\.language_model\.(?:.*\.)?)?(?:{names})"
    if settings.train_vision:
        vision = "qkv|proj|fc1|fc2|linear_fc1|linear_fc2|gate_proj|up_proj|down_proj"
        pattern += rf"|model\.visual\.blocks\.\d+\.(?:.*\.)?(?:{vision})"
    return pattern


def apply_lora(core: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap ``core`` in a peft LoRA model; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_target_regex(settings),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(core, config)
    except ValueError as err:
        raise ModelLoadError(
            f"LoRA: {err}; lora.target_modules={settings.target_modules} must name linear layers "
            "of the language model (e.g. q_proj, v_proj)"
        ) from None


def set_full_finetune_trainable(core: nn.Module, train_vision: bool) -> None:
    """Full fine-tuning: every weight trains except the vision tower unless ``train_vision``."""
    for p in core.parameters():
        p.requires_grad_(True)
    if not train_vision:
        for p in vision_tower(core).parameters():
            p.requires_grad_(False)


def upcast_trainable(model: nn.Module) -> None:
    """Keep every trainable parameter in float32 (master weights); frozen ones stay as loaded.

    With ``dtype: bfloat16`` the optimizer would otherwise update bf16 weights in place, and an
    update smaller than half a bf16 step (lr 5e-5 on weights of 0.02) would be rounded away.
    The forward computes in the reduced dtype under autocast (``Policy.autocast``). peft already
    keeps new and loaded LoRA adapters in float32; this covers full fine-tuning.
    """
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


#: The oldest transformers whose Qwen-VL forward takes pre-encoded images (``mm_encoder_outputs``,
#: what ``Policy.completion_logprobs`` hands it); older releases drop them silently and score
#: every completion as if the image were blank (tests/test_scoring_sees_image.py).
MIN_TRANSFORMERS = "5.18.0"


def check_scoring_sees_images(core: nn.Module) -> None:
    """Refuse a transformers release whose forward would ignore pre-encoded image features."""
    import inspect

    import transformers

    if "mm_encoder_outputs" not in inspect.signature(inner_model(core).forward).parameters:
        raise ModelLoadError(
            f"transformers {transformers.__version__} ignores pre-encoded image features, so "
            f"every log-prob would be computed without the image; install "
            f"transformers>={MIN_TRANSFORMERS}"
        )


def load_core_model(source: str, arch: Architecture, cfg: ModelConfig) -> nn.Module:
    """The transformers model, in the configured dtype, attention kernel and device."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device.type == "cuda":
        kwargs["device_map"] = str(device)  # load straight onto the GPU, no CPU copy
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = arch.model_cls().from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{source}: cannot load the model weights ({err})") from None
    check_scoring_sees_images(model)
    return model.to(device)
