"""The policy: prompts, rollouts, log-probs of reports, the reference model, saving.

Dimensions: B images (prompts), K rollouts per image, N completions scored, P prompt tokens
(left-padded), T completion tokens (right-padded), H hidden size, V vocabulary.

How the vision tower is spared (its cost on a 3B model is ~1.4 s per 64 images on an H200):

* Rollouts call ``generate(num_return_sequences=K)`` on the B prompts. In transformers 5.24,
  ``GenerationMixin.generate`` runs ``_prepare_multimodal_encoder_kwargs_for_generation`` (the
  vision tower, once per image) *before* ``_expand_inputs_for_generation`` repeats the encoded
  image features K times; the test suite counts vision-tower calls to hold this. The text
  prefill still runs once per rollout (B*K rows): sharing it through an expanded KV cache is
  possible but fragile with Qwen's 3D rope positions, and the prefill is one batched forward
  pass (small next to ~T decoding steps).
* :meth:`Policy.completion_logprobs` encodes the B images once (no grad) and hands each chunk
  of completions its images' features through the model's ``mm_encoder_outputs`` argument, so
  N completions of B prompts cost B vision passes, not N. When the vision tower trains (and
  gradients are on) it is recomputed per chunk instead, so its gradients flow.

Precision: a trainable policy with ``dtype`` bfloat16/float16 keeps float32 master weights and
computes under autocast (:meth:`Policy.autocast`, around sampling and scoring); see
docs/model.md, Precision.

Log-probs never build the (N x T x V) float32 logits: a forward hook on the language model's
final norm captures the hidden states (the forward runs with ``logits_to_keep=1``), and
:func:`orapo.model.logprobs.token_logprobs` applies lm_head + log-softmax per chunk of tokens.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from orapo.model.config import ModelConfig, SamplingConfig
from orapo.model.images import load_image
from orapo.model.loading import (
    ORAPO_RECORD,
    Architecture,
    adapter_base,
    apply_lora,
    detect_architecture,
    final_norm,
    inner_model,
    is_local,
    load_core_model,
    load_processor,
    read_record,
    resolve_dtype,
    resolve_source,
    set_full_finetune_trainable,
    upcast_trainable,
    vision_tower,
)
from orapo.model.logprobs import token_logprobs
from orapo.model.prompt import ReportPrompt, load_prompt, parse_prompt

END_OF_TURN = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
#: Tokens the policy never emits (vision placeholders and markers).
SUPPRESSED_TOKENS: tuple[str, ...] = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
)


# ----------------------------------------------------------------------------- batches
@dataclass
class PromptBatch:
    """B report prompts, left-padded, on the policy's device."""

    input_ids: Tensor  # (B, P)
    attention_mask: Tensor  # (B, P)
    pixel_values: Tensor  # (sum of patches over the B images, C * temporal * patch * patch)
    image_grid_thw: Tensor  # (B, 3) patch grid (t, h, w) of each image
    mm_token_type_ids: Tensor | None = None  # (B, P) 1 on image tokens, 0 on text

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def model_inputs(self) -> dict[str, Tensor]:
        out = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values,
            "image_grid_thw": self.image_grid_thw,
        }
        if self.mm_token_type_ids is not None:
            out["mm_token_type_ids"] = self.mm_token_type_ids
        return out

    def pixel_rows(self, index: Tensor) -> Tensor:
        """The pixel_values rows of images ``index`` (repeats allowed), in that order."""
        counts = self.image_grid_thw.prod(-1)  # (B,) patches per image
        starts = torch.cumsum(counts, 0) - counts
        rows = [torch.arange(starts[i], starts[i] + counts[i]) for i in index.tolist()]
        return self.pixel_values[torch.cat(rows).to(self.pixel_values.device)]

    def select(self, index: Sequence[int] | Tensor) -> PromptBatch:
        """A PromptBatch of prompts ``index`` (repeats allowed), e.g. for micro-batches."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.input_ids.device)
        return PromptBatch(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            pixel_values=self.pixel_rows(index),
            image_grid_thw=self.image_grid_thw[index],
            mm_token_type_ids=None
            if self.mm_token_type_ids is None
            else self.mm_token_type_ids[index],
        )


@dataclass
class Rollouts:
    """K sampled reports for each of B prompts; rows i*K .. i*K+K-1 belong to image i."""

    prompts: PromptBatch
    k: int
    completion_ids: Tensor  # (B*K, T) right-padded with the pad token
    completion_mask: Tensor  # (B*K, T) 1 on real tokens incl. the end-of-turn token
    texts: list[str]  # B*K decoded reports, special tokens stripped
    truncated: Tensor | None = None  # (B*K,) bool: hit max_new_tokens without end of turn

    @property
    def prompt_index(self) -> Tensor:
        """(B*K,) the prompt of each rollout: [0]*K + [1]*K + ..."""
        b = len(self.prompts)
        return torch.arange(b, device=self.completion_ids.device).repeat_interleave(self.k)

    def group(self, g: int) -> slice:
        """The rows of prompt ``g``'s K rollouts (its *group*): ``g*K .. g*K+K-1``."""
        return slice(g * self.k, (g + 1) * self.k)

    @classmethod
    def merge(
        cls, groups: Sequence[tuple[Rollouts, int]], prompts: PromptBatch, pad_token_id: int
    ) -> Rollouts:
        """The groups ``groups`` (``(rollouts, g)`` pairs, from one or several Rollouts) as one
        Rollouts, in that order, under ``prompts`` (the prompts of their images, same order).

        Completions are right-padded to the widest source (``pad_token_id``, mask 0);
        ``truncated`` is kept when every source has it.
        """
        k = groups[0][0].k
        if any(r.k != k for r, _ in groups):
            raise ValueError("merged groups must have the same K")
        width = max(r.completion_ids.shape[1] for r, _ in groups)

        def stack(parts: list[Tensor], pad: int) -> Tensor:  # (len(groups) * K, width)
            return torch.cat(
                [nn.functional.pad(x, (0, width - x.shape[1]), value=pad) for x in parts]
            )

        truncated = None
        if all(r.truncated is not None for r, _ in groups):
            truncated = torch.cat([r.truncated[r.group(g)] for r, g in groups])  # type: ignore[index]
        return cls(
            prompts=prompts,
            k=k,
            completion_ids=stack([r.completion_ids[r.group(g)] for r, g in groups], pad_token_id),
            completion_mask=stack([r.completion_mask[r.group(g)] for r, g in groups], 0),
            texts=[text for r, g in groups for text in r.texts[r.group(g)]],
            truncated=truncated,
        )


def trim_completions(
    ids: Tensor, stop_ids: Sequence[int], pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut generated ids after the first stop token.

    ids (N, T) generated tokens -> (ids', mask, truncated): ids' (N, T') with pad_id after the
    first stop token, mask (N, T') 1 up to and including it, truncated (N,) True where no stop
    token was generated (all T tokens are real). T' = the longest kept row.

    >>> trim_completions(torch.tensor([[5, 2, 7], [5, 6, 7]]), [2], 0)[1].tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    n, t = ids.shape
    is_stop = torch.isin(ids, torch.as_tensor(list(stop_ids), device=ids.device))  # (N, T)
    has_stop = is_stop.any(1)  # (N,)
    first = torch.where(
        has_stop, is_stop.int().argmax(1), torch.full_like(has_stop, t - 1, dtype=torch.long)
    )
    mask = (torch.arange(t, device=ids.device)[None, :] <= first[:, None]).long()  # (N, T)
    width = int(mask.sum(1).max().item()) if n else 0
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))[:, :width]
    return ids, mask[:, :width], ~has_stop


def select_image_features(features: Any, index: Sequence[int]) -> Any:
    """Per-image encoder outputs of images ``index`` (repeats allowed), for ``mm_encoder_outputs``.

    ``features``: what ``get_image_features(..., return_dict=True)`` returns (``pooler_output``
    a tuple of per-image (tokens_i, H) tensors; Qwen3-VL adds per-layer ``deepstack_features``).
    """
    kwargs: dict[str, Any] = {"pooler_output": [features.pooler_output[i] for i in index]}
    deepstack = getattr(features, "deepstack_features", None)
    if deepstack is not None:
        kwargs["deepstack_features"] = [[layer[i] for i in index] for layer in deepstack]
    return type(features)(**kwargs)


# ----------------------------------------------------------------------------- policy
class Policy:
    """A vision-language policy and everything the trainer and evaluator do with it.

    Attributes: ``model`` (the trainable module, peft-wrapped under LoRA; generation and saving
    use it), ``forward_module`` (what gradient-carrying log-prob forwards call; the trainer may
    set it to a DDP/accelerate wrapper of ``model``), ``processor``, ``tokenizer``, ``device``,
    ``config``, ``prompt`` (the :class:`ReportPrompt`), ``source`` (what was loaded),
    ``base_path`` (the base weights under LoRA, else ``source``).
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        config: ModelConfig,
        *,
        prompt: ReportPrompt,
        arch: Architecture,
        source: str,
        base_path: str,
        trainable: bool,
    ) -> None:
        self.model = model
        self.forward_module: nn.Module = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.config = config
        self.prompt = prompt
        self.arch = arch
        self.source = source
        self.base_path = base_path
        self.trainable = trainable
        self.device = next(model.parameters()).device
        #: The dtype the forward computes in (``config.dtype`` resolved); see :meth:`autocast`.
        self.compute_dtype: torch.dtype = resolve_dtype(config.dtype, self.device)
        end = self._token_id(END_OF_TURN)
        if end is None:
            raise ValueError(f"{source}: the tokenizer has no {END_OF_TURN} token")
        self.end_token_id: int = end
        # End of turn, plus end of text (Qwen's generation configs stop at both).
        stops = [self.end_token_id]
        for extra in (self.tokenizer.eos_token_id, self._token_id(END_OF_TEXT)):
            if extra is not None and extra not in stops:
                stops.append(extra)
        self.stop_token_ids: list[int] = stops
        pad = self.tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else self.tokenizer.eos_token_id
        # Vision placeholders must never be generated: the next forward pass would count them
        # as image slots ("Image features and image tokens do not match"). The policy is the
        # model with these tokens removed, in sampling and in scoring alike.
        self.suppressed_token_ids: list[int] = sorted(
            {i for name in SUPPRESSED_TOKENS if (i := self._token_id(name)) is not None}
        )
        self.prompt_text: str = processor.apply_chat_template(
            prompt.messages(), tokenize=False, add_generation_prompt=True
        )
        self._reference: nn.Module | None = None
        # Full fine-tuning: a fingerprint of the initial weights, so that a reference copy
        # requested after an optimizer step is refused instead of silently being wrong.
        self._initial_fingerprint: Tensor | None = None
        if trainable and not self.is_lora:
            self._initial_fingerprint = self._fingerprint()

    def set_prompt(self, prompt: ReportPrompt) -> None:
        """Use another prompt from now on (recorded by :meth:`save`)."""
        self.prompt = prompt
        self.prompt_text = self.render_prompt(prompt)

    def render_prompt(self, prompt: ReportPrompt) -> str:
        """``prompt`` in the checkpoint's chat template, ready for generation."""
        return self.processor.apply_chat_template(
            prompt.messages(), tokenize=False, add_generation_prompt=True
        )

    def _token_id(self, token: str) -> int | None:
        """The id of special token ``token``, or None if the vocabulary lacks it."""
        i = self.tokenizer.convert_tokens_to_ids(token)
        unk = self.tokenizer.unk_token_id
        if i is None or (i == unk and token != self.tokenizer.unk_token):
            return None
        return i

    # ------------------------------------------------------------------ structure
    @property
    def is_lora(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    @property
    def core(self) -> nn.Module:
        """The transformers ``*ForConditionalGeneration`` (LoRA layers injected under LoRA)."""
        return self.model.get_base_model() if self.is_lora else self.model

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def vision_trains(self) -> bool:
        return any(p.requires_grad for p in vision_tower(self.core).parameters())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.core.parameters())

    @property
    def mixed_precision(self) -> bool:
        """Trainable weights are float32 master weights while the forward computes in a reduced
        ``compute_dtype`` under autocast (a trainable policy with ``dtype`` bfloat16/float16)."""
        return self.trainable and self.compute_dtype != torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``compute_dtype`` under :attr:`mixed_precision`; a no-op otherwise (the
        float32 CPU path is untouched). Wraps sampling and scoring alike."""
        if not self.mixed_precision:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    # ------------------------------------------------------------------ prompts
    def prompt_batch(
        self,
        images: Sequence[Image.Image | str | Path],
        prompts: Sequence[ReportPrompt] | None = None,
    ) -> PromptBatch:
        """Encode B images with the report prompt (left-padded, on the policy's device).

        ``prompts`` gives each image a prompt of its own (B of them; e.g. one question per
        image in the base model's chest question answering) instead of the policy's prompt.
        """
        if not images:
            raise ValueError("prompt_batch needs at least one image")
        if prompts is not None and len(prompts) != len(images):
            raise ValueError(f"prompt_batch: {len(prompts)} prompts for {len(images)} images")
        pil = [
            (load_image(im) if isinstance(im, (str, Path)) else im.convert("RGB")) for im in images
        ]
        texts = (
            [self.prompt_text] * len(pil)
            if prompts is None
            else [self.render_prompt(p) for p in prompts]
        )
        enc = self.processor(text=texts, images=pil, padding=True, return_tensors="pt")
        length = enc["input_ids"].shape[1]
        limit = self.config.max_prompt_tokens
        if limit is not None and length > limit:
            raise ValueError(
                f"the prompt is {length} tokens (image tokens included), over "
                f"max_prompt_tokens={limit}; truncating would cut image tokens, so lower "
                "max_pixels or raise max_prompt_tokens"
            )
        mm = enc.get("mm_token_type_ids")
        if mm is None:
            mm = (enc["input_ids"] == self.core.config.image_token_id).long()
        return PromptBatch(
            input_ids=enc["input_ids"].to(self.device),
            attention_mask=enc["attention_mask"].to(self.device),
            pixel_values=enc["pixel_values"].to(self.device),
            image_grid_thw=enc["image_grid_thw"].to(self.device),
            mm_token_type_ids=mm.to(self.device),
        )

    # ------------------------------------------------------------------ sampling
    @contextlib.contextmanager
    def _generation_setup(self) -> Iterator[None]:
        """Eval mode, and the checkpoint's generation defaults (top_k, repetition penalty, ...)
        out of the way, so that only :class:`SamplingConfig` decides how reports are sampled."""
        from transformers import GenerationConfig

        core = self.core
        saved_config, was_training = core.generation_config, self.model.training
        core.generation_config = GenerationConfig(
            eos_token_id=list(self.stop_token_ids), pad_token_id=self.pad_token_id
        )
        self.model.eval()
        try:
            yield
        finally:
            core.generation_config = saved_config
            self.model.train(was_training)

    def generation_config(self, sampling: SamplingConfig, **extra: Any) -> Any:
        """The ``GenerationConfig`` of :meth:`rollout` (``extra``: e.g. ``output_scores``)."""
        from transformers import GenerationConfig

        knobs: dict[str, Any] = {"do_sample": False}
        if sampling.do_sample:
            # top_k=0 disables top-k (a None would fall back to transformers' default of 50).
            knobs = {
                "do_sample": True,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k or 0,
            }
        return GenerationConfig(
            **knobs,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=sampling.k,
            num_beams=1,
            repetition_penalty=1.0,
            suppress_tokens=self.suppressed_token_ids or None,
            eos_token_id=list(self.stop_token_ids),
            pad_token_id=self.pad_token_id,
            **extra,
        )

    @torch.no_grad()
    def rollout(self, prompts: PromptBatch, sampling: SamplingConfig) -> Rollouts:
        """Sample ``sampling.k`` reports per prompt, stopping at the end-of-turn token."""
        gen = self.generation_config(sampling)
        with self._generation_setup(), self.autocast():
            out = self.core.generate(**prompts.model_inputs(), generation_config=gen)
        generated = out[:, prompts.input_ids.shape[1] :]  # (B*K, T)
        ids, mask, truncated = trim_completions(generated, self.stop_token_ids, self.pad_token_id)
        return Rollouts(
            prompts=prompts,
            k=sampling.k,
            completion_ids=ids,
            completion_mask=mask,
            texts=self.decode(ids, mask),
            truncated=truncated,
        )

    def decode(self, ids: Tensor, mask: Tensor) -> list[str]:
        """Report texts of completions (special tokens stripped, whitespace trimmed)."""
        rows = [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu(), strict=True)]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def generate_reports(
        self,
        images: Sequence[Image.Image | str | Path],
        max_new_tokens: int = 256,
        batch_size: int = 8,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Greedy reports for ``images``, ``batch_size`` at a time; ``progress(n)`` after each."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        greedy = SamplingConfig(k=1, do_sample=False, max_new_tokens=max_new_tokens)
        reports: list[str] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            reports.extend(self.rollout(self.prompt_batch(chunk), greedy).texts)
            if progress is not None:
                progress(len(chunk))
        return reports

    # ------------------------------------------------------------------ scoring
    def encode_completions(
        self, texts: Sequence[str], max_tokens: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reports as completions: (N, T) ids ending with the end-of-turn token, (N, T) mask.

        ``max_tokens`` keeps the first max_tokens tokens (the end-of-turn token is then cut
        from reports that are too long, as it is from truncated rollouts).
        """
        rows = [
            self.tokenizer(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            + [self.end_token_id]
            for t in texts
        ]
        if max_tokens is not None:
            rows = [r[:max_tokens] for r in rows]
        width = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def prepare_reference(self) -> None:
        """Make the frozen reference copy now (full fine-tuning); call before the first step."""
        self._reference_model()

    def _reference_model(self) -> nn.Module:
        """The reference under full fine-tuning: a frozen deep copy, made once (from memory)."""
        if self._reference is None:
            initial = self._initial_fingerprint
            if initial is not None and not torch.equal(self._fingerprint(), initial):
                raise RuntimeError(
                    "the reference model was requested after the policy weights changed; "
                    "call policy.prepare_reference() before the first optimizer step"
                )
            ref = copy.deepcopy(self.core)
            if self.mixed_precision:  # frozen: no master weights needed, half the memory
                ref.to(self.compute_dtype)
            ref.requires_grad_(False)
            ref.eval()
            self._reference = ref
            self._initial_fingerprint = None
        return self._reference

    @torch.no_grad()
    def _fingerprint(self) -> Tensor:
        """(n_params,) float32 sum of each parameter: changes when any weight is updated."""
        return torch.stack([p.detach().float().sum() for p in self.core.parameters()])

    @contextlib.contextmanager
    def _scoring_target(self, reference: bool) -> Iterator[tuple[nn.Module, nn.Module]]:
        """(module to call, core it runs) for policy or reference scoring."""
        if not reference or not self.trainable:
            yield (self.forward_module, self.core)
        elif self.is_lora:
            with self.model.disable_adapter():
                yield (self.core, self.core)
        else:
            ref = self._reference_model()
            yield (ref, ref)

    def completion_logprobs(
        self,
        prompts: PromptBatch,
        completion_ids: Tensor,
        completion_mask: Tensor,
        prompt_index: Tensor,
        *,
        reference: bool = False,
    ) -> Tensor:
        """(N, T) float32 log-probs of each completion token given prompt ``prompt_index[n]``.

        completion_ids, completion_mask (N, T); prompt_index (N,) into the B prompts. With
        grad unless ``reference`` or under no_grad; padding positions are 0. ``reference``:
        the adapter-disabled model under LoRA, a frozen copy under full fine-tuning (for a
        policy loaded with trainable=False, the model itself). Runs
        ``config.logprob_chunk_size`` completions per forward pass.
        """
        n, t = completion_ids.shape
        if completion_mask.shape != (n, t) or prompt_index.shape != (n,):
            raise ValueError(
                f"shape mismatch: completion_ids {tuple(completion_ids.shape)}, completion_mask "
                f"{tuple(completion_mask.shape)}, prompt_index {tuple(prompt_index.shape)}"
            )
        if n and (int(prompt_index.min()) < 0 or int(prompt_index.max()) >= len(prompts)):
            raise ValueError(f"prompt_index out of range for {len(prompts)} prompts")
        grad = torch.is_grad_enabled() and not reference
        context = torch.enable_grad() if grad else torch.no_grad()
        p_len = prompts.input_ids.shape[1]
        out = []
        with context, self.autocast(), self._scoring_target(reference) as (module, core):
            features = None
            if not (grad and self.vision_trains()):
                with torch.no_grad():
                    features = inner_model(core).get_image_features(
                        prompts.pixel_values, prompts.image_grid_thw, return_dict=True
                    )
            lm_head = core.get_output_embeddings()
            suppress = torch.tensor(self.suppressed_token_ids, dtype=torch.long, device=self.device)
            step = self.config.logprob_chunk_size
            for start in range(0, n, step):
                idx = prompt_index[start : start + step]
                ids = completion_ids[start : start + step]
                mask = completion_mask[start : start + step]
                inputs = self._scoring_inputs(prompts, idx, ids, mask, features)
                hidden = self._final_hidden(module, core, inputs)  # (n, P + T, H)
                hidden = hidden[:, p_len - 1 : p_len + t - 1]  # (n, T, H) predicts ids
                out.append(
                    token_logprobs(
                        hidden, lm_head, ids, mask, self.config.logprob_token_chunk, suppress
                    )
                )
        if not out:
            return torch.zeros((0, t), dtype=torch.float32, device=self.device)
        return torch.cat(out)

    def _scoring_inputs(
        self, prompts: PromptBatch, idx: Tensor, ids: Tensor, mask: Tensor, features: Any
    ) -> dict[str, Any]:
        """Model inputs for completions ``ids`` appended to prompts ``idx``."""
        attn = prompts.attention_mask[idx]
        inputs: dict[str, Any] = {
            "input_ids": torch.cat([prompts.input_ids[idx], ids], 1),
            "attention_mask": torch.cat([attn, mask.to(attn.dtype)], 1),
            "image_grid_thw": prompts.image_grid_thw[idx],
        }
        if prompts.mm_token_type_ids is not None:
            mm = prompts.mm_token_type_ids[idx]
            inputs["mm_token_type_ids"] = torch.cat([mm, torch.zeros_like(ids).to(mm.dtype)], 1)
        if features is not None:
            inputs["mm_encoder_outputs"] = {"image": select_image_features(features, idx.tolist())}
        else:
            inputs["pixel_values"] = prompts.pixel_rows(idx)
        return inputs

    @staticmethod
    def _final_hidden(module: nn.Module, core: nn.Module, inputs: dict[str, Any]) -> Tensor:
        """Run ``module`` and return the language model's final normed hidden states."""
        captured: list[Tensor] = []
        handle = final_norm(core).register_forward_hook(lambda _m, _i, o: captured.append(o))
        try:
            module(**inputs, logits_to_keep=1, use_cache=False)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"expected one pass through the final norm, saw {len(captured)}")
        return captured[0]

    # ------------------------------------------------------------------ saving
    def save(self, out_dir: str | Path, *, merge: bool = False) -> Path:
        """Save as a Hugging Face model directory that :func:`load_policy` opens.

        Under LoRA: the adapter (``adapter_config.json`` records the base model's path) unless
        ``merge``, which saves merged full weights (made on a copy; the policy keeps its adapter).
        The processor files and ``orapo_model.json`` (format, base, prompt) go beside.
        """
        from orapo.model.files import write_dir_atomic

        def write(tmp: Path) -> None:
            if self.is_lora and not merge:
                for cfg in self.model.peft_config.values():
                    cfg.base_model_name_or_path = self.base_path
                self.model.save_pretrained(tmp)
                fmt = "lora-adapter"
            else:
                core = copy.deepcopy(self.model).merge_and_unload() if self.is_lora else self.core
                core.save_pretrained(tmp)
                fmt = "full"
            self.processor.save_pretrained(tmp)
            record = {
                "format": fmt,
                "base_model": self.base_path if fmt == "lora-adapter" else None,
                "architecture": self.arch.model_type,
                "prompt": self.prompt.to_dict(),
                "saved_from": self.source,
            }
            (tmp / ORAPO_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

        return write_dir_atomic(out_dir, write)


# ----------------------------------------------------------------------------- loading
def _has_tokenizer(source: str) -> bool:
    return is_local(source) and any(
        (Path(source) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )


def load_policy(cfg: ModelConfig, *, trainable: bool = True) -> Policy:
    """Open a checkpoint, demo model or saved policy as a :class:`Policy`.

    trainable=False: frozen, eval mode, a saved LoRA adapter merged into its base. trainable:
    LoRA adapters (new, or the saved ones continued) or full fine-tuning per ``cfg.lora``; the
    vision tower frozen unless ``cfg.lora.train_vision``.
    """
    source = resolve_source(cfg.name_or_path)
    record = read_record(source) if is_local(source) else {}
    base = adapter_base(source)
    weights = base or source
    arch = detect_architecture(weights)
    processor = load_processor(
        source if _has_tokenizer(source) or not is_local(source) else weights,
        arch,
        min_pixels=cfg.min_pixels,
        max_pixels=cfg.max_pixels,
    )
    from peft import PeftModel

    core = load_core_model(weights, arch, cfg)
    model: nn.Module = core
    if base is not None:
        keep_adapter = trainable and cfg.lora.enabled
        model = PeftModel.from_pretrained(core, source, is_trainable=keep_adapter)
        if not keep_adapter:
            model = model.merge_and_unload()
    elif trainable and cfg.lora.enabled:
        model = apply_lora(core, cfg.lora)
    if trainable:
        is_peft = isinstance(model, PeftModel)
        if not is_peft:
            set_full_finetune_trainable(model, cfg.lora.train_vision)
        upcast_trainable(model)  # float32 master weights; the forward autocasts (Policy.autocast)
        if cfg.gradient_checkpointing:
            inner = model.get_base_model() if is_peft else model
            inner.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        model.train()
    else:
        model.requires_grad_(False)
        model.eval()
    if cfg.prompt is not None:
        prompt = load_prompt(cfg.prompt)
    elif isinstance(record.get("prompt"), dict):
        prompt = parse_prompt(record["prompt"], f"{source}/{ORAPO_RECORD}: prompt")
    else:
        prompt = load_prompt()
    return Policy(
        model,
        processor,
        cfg,
        prompt=prompt,
        arch=arch,
        source=source,
        base_path=weights,
        trainable=trainable,
    )
