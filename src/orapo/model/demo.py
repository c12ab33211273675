"""The offline demo policy: a small Qwen2.5-VL-architecture model built from nothing.

:func:`build_demo_model` trains a byte-level BPE tokenizer on the given texts (with Qwen's chat
and vision special tokens), builds a ``Qwen2_5_VLForConditionalGeneration`` from a small config
with random weights, a PIL image processor that resizes every image to a fixed area, and
Qwen2.5-VL's chat template, and saves them as a normal Hugging Face model directory that
:func:`orapo.model.load_policy` (and ``from_pretrained``) open like any checkpoint. Nothing is
downloaded. The weights are untrained: the model writes gibberish until it is fine-tuned.

Presets (``PRESETS``): ``tiny`` for tests (runs in seconds), ``demo`` for the CPU walkthrough
(112 px images -> 8x8 patches of 14 px -> 16 image tokens after the 2x2 merge), ``demo-64tok``
(the same without the merge: 64 image tokens; measured in docs/demo.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

#: Qwen2.5-VL's special tokens, in Qwen's order (their ids here are 0..13).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


@dataclass(frozen=True)
class DemoPreset:
    """Sizes of a demo model. Text head dim = text_hidden / text_heads (must be divisible by 8)."""

    image_size: int  # images are resized to about image_size**2 pixels (multiple of 28 px)
    vocab_size: int  # BPE target, special tokens and 256 byte symbols included
    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    max_positions: int = 2048
    merge: int = 2  # spatial merge: (merge x merge) patches of 14 px -> one image token


PRESETS: dict[str, DemoPreset] = {
    "tiny": DemoPreset(
        image_size=56,
        vocab_size=384,
        text_hidden=32,
        text_intermediate=64,
        text_layers=1,
        text_heads=2,
        text_kv_heads=1,
        vision_depth=1,
        vision_hidden=32,
        vision_intermediate=64,
        vision_heads=2,
    ),
    "demo": DemoPreset(
        image_size=112,
        vocab_size=800,
        text_hidden=128,
        text_intermediate=512,
        text_layers=2,
        text_heads=4,
        text_kv_heads=2,
        vision_depth=2,
        vision_hidden=128,
        vision_intermediate=256,
        vision_heads=4,
    ),
}
# "demo" with no spatial merge: 8x8 patches of 14 px -> 64 image tokens per 112 px image
# (measured in docs/demo.md).
PRESETS["demo-64tok"] = replace(PRESETS["demo"], merge=1)


def get_preset(name: str) -> DemoPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown demo preset {name!r}; valid presets are: {', '.join(PRESETS)}")
    return PRESETS[name]


def mrope_section(head_dim: int) -> list[int]:
    """Split of the rotary half-dimension into (temporal, height, width), Qwen's 1:1.5:1.5.

    Qwen2.5-VL-3B: head_dim 128 -> [16, 24, 24].
    """
    half = head_dim // 2
    hw = 3 * half // 8
    return [half - 2 * hw, hw, hw]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A Qwen2-style byte-level BPE tokenizer trained on ``texts`` (``Qwen2Tokenizer``).

    Same normaliser (NFC), pre-tokeniser (Qwen's split regex + byte level) and decoder as Qwen's;
    the special tokens of :data:`QWEN_SPECIAL_TOKENS` get ids 0..13.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    if ids != list(range(len(QWEN_SPECIAL_TOKENS))):
        raise RuntimeError(f"special token ids came out as {ids}, expected 0..13")
    return tokenizer


def demo_config(preset: DemoPreset, tokenizer: Any) -> Any:
    """A ``Qwen2_5_VLConfig`` of the preset's sizes for ``tokenizer``'s vocabulary."""
    from transformers import Qwen2_5_VLConfig

    tid = tokenizer.convert_tokens_to_ids
    head_dim = preset.text_hidden // preset.text_heads
    if head_dim % 8:
        raise ValueError(f"text head dim {head_dim} must be divisible by 8 (for mrope)")
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": preset.text_hidden,
            "intermediate_size": preset.text_intermediate,
            "num_hidden_layers": preset.text_layers,
            "num_attention_heads": preset.text_heads,
            "num_key_value_heads": preset.text_kv_heads,
            "max_position_embeddings": preset.max_positions,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": mrope_section(head_dim),
                "rope_theta": 10000.0,
            },
            "bos_token_id": tid("<|endoftext|>"),
            "eos_token_id": tid("<|im_end|>"),
            "pad_token_id": tid("<|endoftext|>"),
        },
        vision_config={
            "depth": preset.vision_depth,
            "hidden_size": preset.vision_hidden,
            "intermediate_size": preset.vision_intermediate,
            "num_heads": preset.vision_heads,
            "out_hidden_size": preset.text_hidden,
            "patch_size": 14,
            "spatial_merge_size": preset.merge,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [preset.vision_depth - 1],
        },
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def chat_template() -> str:
    """Qwen2.5-VL's chat template (a data file beside this module)."""
    return (resources.files("orapo.model") / "chat_template.jinja").read_text(encoding="utf-8")


def demo_processor(preset: DemoPreset, tokenizer: Any) -> Any:
    """An image-only Qwen2.5-VL processor: PIL image processor at a fixed area, chat template."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from orapo.model.loading import image_only_processor_class

    area = preset.image_size * preset.image_size
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=area, max_pixels=area, merge_size=preset.merge
    )
    cls = image_only_processor_class(Qwen2_5_VLProcessor)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template())


def build_demo_model(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    preset: str = "demo",
    seed: int = 0,
) -> Path:
    """Build and save an untrained demo policy; returns ``out_dir``.

    texts: the tokenizer's training corpus (reports, captions, anything); the rendered report
    prompt is added (5% of the corpus) so that it tokenizes compactly. The global torch RNG is
    left untouched.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from orapo.model.files import write_dir_atomic
    from orapo.model.loading import ORAPO_RECORD
    from orapo.model.prompt import load_prompt

    spec = get_preset(preset)
    corpus = [t for t in texts if t and t.strip()]
    if not corpus:
        raise ValueError("build_demo_model needs at least one non-empty text for the tokenizer")
    prompt = load_prompt()
    # The rendered prompt is in every training sequence: give it ~5% of the corpus so that
    # its words get merges (on the demo preset: 138 -> 68 prompt tokens, reports +5%).
    scaffold = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|><|image_pad|><|vision_end|>{prompt.instruction}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    extra = [scaffold] * max(1, len(corpus) // 20)
    tokenizer = train_tokenizer(corpus + extra, spec.vocab_size)
    config = demo_config(spec, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    tid = tokenizer.convert_tokens_to_ids
    model.generation_config = GenerationConfig(
        bos_token_id=tid("<|endoftext|>"),
        eos_token_id=[tid("<|im_end|>"), tid("<|endoftext|>")],
        pad_token_id=tid("<|endoftext|>"),
    )
    processor = demo_processor(spec, tokenizer)

    out_dir = Path(out_dir)
    record = {
        "format": "full",
        "built_by": "orapo.model.build_demo_model",
        "preset": preset,
        "preset_sizes": asdict(spec),
        "seed": seed,
        "tokenizer_corpus_texts": len(corpus),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "prompt": prompt.to_dict(),
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / ORAPO_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    write_dir_atomic(out_dir, write)
    return out_dir
