"""The policy model's configuration: checkpoint, training mode (LoRA or full), sampling.

Every field carries its help text in ``metadata["help"]`` (see :func:`orapo.config_io.describe`).
``__post_init__`` rejects bad values with a message that says how to fix them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orapo.config_io import check_choice

#: The language model's projections in every Qwen-VL generation (attention and MLP).
DEFAULT_LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoraSettings:
    """LoRA adapters (peft) on the language model; ``enabled=False`` means full fine-tuning."""

    enabled: bool = field(
        default=True,
        metadata={"help": "Train LoRA adapters (true) or every language-model weight (false)."},
    )
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(
        default=32, metadata={"help": "LoRA alpha (the update is scaled by alpha/r)."}
    )
    dropout: float = field(
        default=0.05,
        metadata={
            "help": "Dropout on the LoRA input. Active only in train mode; it makes the GRPO "
            "ratio differ from 1 on-policy, so 0 is the safer choice for RL."
        },
    )
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={
            "help": "Leaf names of the language-model linear layers that get adapters "
            "(the vision tower's layers of the same name are excluded)."
        },
    )
    train_vision: bool = field(
        default=False,
        metadata={
            "help": "Train the vision tower too: under LoRA, adapters on its blocks' linear "
            "layers; under full fine-tuning, all its weights. Frozen otherwise."
        },
    )

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"lora.r must be a positive rank, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError(
                "lora.target_modules is empty; name at least one layer, e.g. q_proj, v_proj"
            )
        self.target_modules = list(self.target_modules)


@dataclass
class ModelConfig:
    """Which policy to load and how: checkpoint, precision, device, training mode, image size."""

    name_or_path: str = field(
        metadata={
            "help": "A local model directory (a Hugging Face checkpoint, an orapo demo model or "
            "a saved policy) or a hub id such as Qwen/Qwen2.5-VL-3B-Instruct (downloaded only "
            "if the machine can reach the hub)."
        }
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel: sdpa, flash_attention_2, eager; null = library default."
        },
    )
    device: str = field(
        default="auto",
        metadata={
            "help": "auto (cuda:$LOCAL_RANK if CUDA is available, else cpu), or a torch device."
        },
    )
    lora: LoraSettings = field(
        default_factory=lambda: LoraSettings(enabled=False),
        metadata={"help": "LoRA settings; lora.enabled=false means full fine-tuning."},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass (less memory, ~30% slower)."},
    )
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Smallest image area (pixels) after resizing; null = the checkpoint's."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Largest image area (pixels) after resizing; each 28x28 px becomes one image "
            "token on Qwen2/2.5-VL. Null = the checkpoint's (very large for chest X-rays)."
        },
    )
    logprob_chunk_size: int = field(
        default=16,
        metadata={
            "help": "Completions per forward pass when scoring log-probs. Under DDP with "
            "gradients, set it to at least the number of completions of one backward pass."
        },
    )
    logprob_token_chunk: int = field(
        default=1024,
        metadata={
            "help": "Tokens per lm_head + log-softmax chunk: at most this many rows of "
            "float32 vocabulary logits exist at once (recomputed in backward)."
        },
    )
    prompt: str | None = field(
        default=None,
        metadata={
            "help": "Report prompt: a packaged name (report_v1) or a YAML path; null = the one "
            "recorded in the model directory, else report_v1."
        },
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Refuse prompts longer than this (image tokens included) instead of "
            "truncating them, which would cut image tokens; null = no limit."
        },
    )

    def __post_init__(self) -> None:
        if not self.name_or_path:
            raise ValueError("model.name_or_path is empty; give a model directory or a hub id")
        check_choice("model.dtype", self.dtype, DTYPES)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.logprob_chunk_size <= 0:
            raise ValueError(
                f"model.logprob_chunk_size must be >= 1, got {self.logprob_chunk_size}"
            )
        if self.logprob_token_chunk <= 0:
            raise ValueError(
                f"model.logprob_token_chunk must be >= 1, got {self.logprob_token_chunk}"
            )
        for name in ("min_pixels", "max_pixels", "max_prompt_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"model.{name} must be positive or null, got {value}")
        if (
            self.min_pixels is not None
            and self.max_pixels is not None
            and self.min_pixels > self.max_pixels
        ):
            raise ValueError(
                f"model.min_pixels ({self.min_pixels}) exceeds model.max_pixels ({self.max_pixels})"
            )


@dataclass
class SamplingConfig:
    """How rollouts are sampled. Unset knobs never fall back to the checkpoint's defaults."""

    k: int = field(
        default=8, metadata={"help": "Reports sampled per image (the GRPO group size K)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1.0 = off)."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k sampling (null = off)."})
    max_new_tokens: int = field(
        default=128, metadata={"help": "Longest report, in tokens, the end-of-turn token included."}
    )
    do_sample: bool = field(
        default=True, metadata={"help": "Sample (true) or decode greedily (false; K must be 1)."}
    )

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"sampling.k must be >= 1, got {self.k}")
        if not self.do_sample and self.k != 1:
            raise ValueError(
                f"greedy decoding (do_sample=false) gives K identical reports; set k=1 "
                f"or do_sample=true (got k={self.k})"
            )
        if self.do_sample and self.temperature <= 0:
            raise ValueError(
                f"sampling.temperature must be > 0 when sampling, got {self.temperature}; "
                "use do_sample=false for greedy decoding"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"sampling.top_k must be >= 1 or null, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")
