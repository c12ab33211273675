"""The policy model layer: worked values, equivalence with naive computations, tiny-model smoke.

Every model here is built locally (tiny preset); nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from PIL import Image

from orapo.model import (
    ImageLoadError,
    LoraSettings,
    ModelConfig,
    ModelLoadError,
    SamplingConfig,
    build_demo_model,
    load_policy,
    load_prompt,
    token_logprobs,
    trim_completions,
)
from orapo.model.loading import vision_tower
from orapo.model.logprobs import naive_token_logprobs, selective_log_softmax
from orapo.model.prompt import PromptError

REPORTS = [
    "FINDINGS: The heart is enlarged. There is a small left pleural effusion.\n"
    "IMPRESSION: Cardiomegaly with small left effusion.",
    "FINDINGS: The lungs are clear. No pneumothorax or pleural effusion.\n"
    "IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Right lower lobe consolidation. Endotracheal tube in place.\n"
    "IMPRESSION: Pneumonia. Support devices as described.",
]


def _images(n: int, seed: int = 0, size: int = 64) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((size, size)) * 255).astype("uint8")) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_demo_model(tmp_path_factory.mktemp("m") / "tiny", REPORTS * 10, preset="tiny")


def _policy(path, trainable=True, **overrides):
    return load_policy(ModelConfig(str(path), **overrides), trainable=trainable)


def _naive_logprobs(policy, prompts, ids, mask, index):
    """Full-logits reference: one forward over prompt + completion with raw pixels."""
    p = prompts.input_ids.shape[1]
    t = ids.shape[1]
    out = policy.core(
        input_ids=torch.cat([prompts.input_ids[index], ids], 1),
        attention_mask=torch.cat([prompts.attention_mask[index], mask], 1),
        mm_token_type_ids=torch.cat([prompts.mm_token_type_ids[index], torch.zeros_like(ids)], 1),
        pixel_values=prompts.pixel_rows(index),
        image_grid_thw=prompts.image_grid_thw[index],
    )
    suppress = torch.tensor(policy.suppressed_token_ids)
    return naive_token_logprobs(out.logits[:, p - 1 : p + t - 1], ids, mask, suppress)


def _bias_end_of_turn(policy, bonus: float) -> None:
    """Make the end-of-turn token likelier (so that some rollouts stop early)."""
    end = policy.end_token_id

    def hook(_module, _inputs, output):
        output = output.clone()
        output[..., end] += bonus
        return output

    policy.core.get_output_embeddings().register_forward_hook(hook)


# ----------------------------------------------------------------------------- worked values
def test_trim_completions_worked_values():
    ids = torch.tensor([[5, 2, 7, 8], [5, 6, 7, 8], [2, 9, 9, 9], [4, 4, 3, 1]])
    out, mask, truncated = trim_completions(ids, stop_ids=[2, 3], pad_id=0)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0], [4, 4, 3, 0]]
    assert truncated.tolist() == [False, True, False, False]
    # all rows stop early: the width shrinks to the longest kept row
    out, mask, _ = trim_completions(torch.tensor([[2, 9, 9], [1, 2, 9]]), [2], 0)
    assert out.tolist() == [[2, 0], [1, 2]] and mask.tolist() == [[1, 0], [1, 1]]


def test_selective_log_softmax_worked_value():
    logits = torch.tensor([[0.0, 0.0], [math_log(3.0), 0.0]])
    got = selective_log_softmax(logits, torch.tensor([1, 0]))
    torch.testing.assert_close(got, torch.tensor([math_log(0.5), math_log(0.75)]))


def math_log(x: float) -> float:
    return float(np.log(x))


def test_token_logprobs_equal_naive_values_and_grads():
    torch.manual_seed(0)
    n, t, h, v = 3, 7, 8, 11
    head = torch.nn.Linear(h, v)
    hidden = torch.randn(n, t, h, requires_grad=True)
    targets = torch.randint(0, v, (n, t))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6])
    suppress = torch.tensor([2, 5])
    targets[targets == 2] = 3
    targets[targets == 5] = 3
    got = token_logprobs(hidden, head, targets, mask, chunk_tokens=4, suppress=suppress)
    want = naive_token_logprobs(head(hidden), targets, mask, suppress)
    torch.testing.assert_close(got, want)
    assert (got[mask == 0] == 0).all()
    (g1,) = torch.autograd.grad(got.sum(), hidden)
    (g2,) = torch.autograd.grad(want.sum(), hidden)
    torch.testing.assert_close(g1, g2)


def test_prompt_is_versioned_data():
    prompt = load_prompt()
    assert prompt.version == "report_v1"
    assert "FINDINGS" in prompt.instruction and "IMPRESSION" in prompt.instruction
    assert prompt.messages()[-1]["content"][0] == {"type": "image"}
    with pytest.raises(PromptError, match="report_v1"):
        load_prompt("no_such_prompt")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="do_sample"):
        SamplingConfig(k=4, do_sample=False)
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig("x", dtype="float64")
    with pytest.raises(ValueError, match="target_modules"):
        LoraSettings(target_modules=[])


# ----------------------------------------------------------------------------- demo model
def test_demo_model_builds_saves_loads_generates(tiny_dir, tmp_path):
    files = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= files
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    from transformers import AutoModelForImageTextToText

    assert type(AutoModelForImageTextToText.from_pretrained(tiny_dir)).__name__ == (
        "Qwen2_5_VLForConditionalGeneration"
    )
    policy = _policy(tiny_dir, trainable=False)
    assert policy.tokenizer.convert_tokens_to_ids("<|im_end|>") == 2
    assert policy.tokenizer.convert_tokens_to_ids("<|image_pad|>") == 12
    prompts = policy.prompt_batch(_images(2))
    n_image_tokens = (prompts.input_ids == policy.core.config.image_token_id).sum(1)
    assert n_image_tokens.tolist() == [4, 4]  # 56 px -> 4x4 patches -> 2x2 merged
    reports = policy.generate_reports(_images(3), max_new_tokens=6, batch_size=2)
    assert len(reports) == 3 and all(isinstance(r, str) for r in reports)
    # saving a full model and loading it again gives the same model
    saved = policy.save(tmp_path / "copy")
    again = _policy(saved, trainable=False)
    ids, mask = policy.encode_completions(REPORTS[:2])
    index = torch.tensor([0, 1])
    torch.testing.assert_close(
        policy.completion_logprobs(prompts, ids, mask, index),
        again.completion_logprobs(prompts, ids, mask, index),
    )


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match=r"'bert' is not supported.*qwen2_5_vl"):
        _policy(tmp_path)
    with pytest.raises(ModelLoadError, match="no such model directory"):
        _policy(tmp_path / "missing")


def test_write_refuses_to_replace_a_non_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model directory"):
        build_demo_model(tmp_path, REPORTS, preset="tiny")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_encode_completions_end_with_end_of_turn(tiny_dir):
    policy = _policy(tiny_dir, trainable=False)
    ids, mask = policy.encode_completions(["FINDINGS: clear.", "IMPRESSION: <|image_pad|>"])
    lengths = mask.sum(1)
    for row, n in zip(ids, lengths, strict=True):
        assert row[n - 1] == policy.end_token_id
        assert (row[n:] == policy.pad_token_id).all()
    # report text never becomes a control token
    assert not (ids == policy.core.config.image_token_id).any()


def test_bad_images_name_the_file(tiny_dir, tmp_path):
    policy = _policy(tiny_dir, trainable=False)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        policy.prompt_batch([bad])
    with pytest.raises(ImageLoadError, match="missing.png"):
        policy.prompt_batch([tmp_path / "missing.png"])


def test_long_prompt_is_refused_not_truncated(tiny_dir):
    policy = _policy(tiny_dir, trainable=False, max_prompt_tokens=10)
    with pytest.raises(ValueError, match="would cut image tokens"):
        policy.prompt_batch(_images(1))


# ----------------------------------------------------------------------------- rollouts
def test_rollouts_respect_k_masks_and_stop_tokens(tiny_dir):
    policy = _policy(tiny_dir)
    _bias_end_of_turn(policy, 3.5)
    calls = []
    vision_tower(policy.core).register_forward_pre_hook(lambda *_: calls.append(1))
    prompts = policy.prompt_batch(_images(3))
    torch.manual_seed(1)
    ro = policy.rollout(prompts, SamplingConfig(k=4, max_new_tokens=10))
    assert len(calls) == 1, "the vision tower must run once for all B*K rollouts"
    assert ro.completion_ids.shape[0] == 12 and len(ro.texts) == 12
    assert ro.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    stops = torch.tensor(policy.stop_token_ids)
    n_stopped = 0
    for row, m, truncated in zip(ro.completion_ids, ro.completion_mask, ro.truncated, strict=True):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any(), "mask is a prefix"
        assert (row[n:] == policy.pad_token_id).all(), "after the stop: padding"
        is_stop = torch.isin(row[:n], stops)
        if truncated:
            assert n == 10 and not is_stop.any()
        else:
            n_stopped += 1
            assert is_stop[-1] and not is_stop[:-1].any(), "exactly one stop, the last token"
    assert 0 < n_stopped < 12, "the seed should give both stopped and truncated rollouts"
    assert not torch.isin(ro.completion_ids, torch.tensor(policy.suppressed_token_ids)).any()


def test_rollouts_ignore_checkpoint_generation_defaults(tiny_dir):
    from transformers import GenerationConfig

    policy = _policy(tiny_dir)
    policy.core.generation_config = GenerationConfig(top_k=1, do_sample=False, eos_token_id=2)
    torch.manual_seed(0)
    ro = policy.rollout(policy.prompt_batch(_images(1)), SamplingConfig(k=4, max_new_tokens=8))
    assert len({tuple(r.tolist()) for r in ro.completion_ids}) > 1, "top_k=1 leaked in"
    assert policy.core.generation_config.top_k == 1, "the model's own config is restored"


# ----------------------------------------------------------------------------- log-probs
def test_completion_logprobs_equal_naive_and_reuse_vision(tiny_dir):
    policy = _policy(tiny_dir, logprob_chunk_size=5, logprob_token_chunk=7)
    prompts = policy.prompt_batch(_images(3, seed=2))
    torch.manual_seed(0)
    ro = policy.rollout(prompts, SamplingConfig(k=3, max_new_tokens=8))
    gt_ids, gt_mask = policy.encode_completions(REPORTS)
    width = max(ro.completion_ids.shape[1], gt_ids.shape[1])

    def pad(x, value):
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    ids = torch.cat([pad(ro.completion_ids, policy.pad_token_id), pad(gt_ids, policy.pad_token_id)])
    mask = torch.cat([pad(ro.completion_mask, 0), pad(gt_mask, 0)])
    index = torch.cat([ro.prompt_index, torch.arange(3)])  # N = B*K + B
    calls = []
    vision_tower(policy.core).register_forward_pre_hook(lambda *_: calls.append(1))
    got = policy.completion_logprobs(prompts, ids, mask, index)
    assert len(calls) == 1, "12 completions of 3 prompts: one vision pass"
    assert got.requires_grad and got.shape == ids.shape
    assert (got[mask == 0] == 0).all()
    with torch.no_grad():
        want = _naive_logprobs(policy, prompts, ids, mask, index)
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-5)

    # vision tower training: recomputed per chunk, same numbers, gradients reach it
    trains_vision = _policy(
        tiny_dir, logprob_chunk_size=5, lora=LoraSettings(enabled=False, train_vision=True)
    )
    calls.clear()
    vision_tower(trains_vision.core).register_forward_pre_hook(lambda *_: calls.append(1))
    got2 = trains_vision.completion_logprobs(prompts, ids, mask, index)
    assert len(calls) == 3  # ceil(12 / 5) chunks
    torch.testing.assert_close(got2, got)
    got2.sum().backward()
    assert all(p.grad is not None for p in vision_tower(trains_vision.core).parameters())


def test_lora_reference_is_base_and_grads_reach_only_adapters(tiny_dir):
    policy = _policy(tiny_dir, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert not any("visual" in n for n in names), "vision tower frozen by default"
    torch.manual_seed(0)
    with torch.no_grad():  # make the adapters non-trivial (lora_B starts at zero)
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    base = _policy(tiny_dir, trainable=False)
    prompts = policy.prompt_batch(_images(2))
    ids, mask = policy.encode_completions(REPORTS[:2])
    index = torch.tensor([0, 1])
    ref = policy.completion_logprobs(prompts, ids, mask, index, reference=True)
    assert not ref.requires_grad
    torch.testing.assert_close(ref, base.completion_logprobs(prompts, ids, mask, index))
    logp = policy.completion_logprobs(prompts, ids, mask, index)
    assert not torch.allclose(logp, ref), "the adapters must change the policy"
    logp.sum().backward()
    for n, p in policy.model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_lora_adapter_saves_and_loads(tiny_dir, tmp_path):
    policy = _policy(tiny_dir, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    saved = policy.save(tmp_path / "adapter")
    assert (saved / "adapter_config.json").is_file()
    record = json.loads((saved / "orapo_model.json").read_text())
    assert record["format"] == "lora-adapter" and record["prompt"]["version"] == "report_v1"
    prompts = policy.prompt_batch(_images(2))
    ids, mask = policy.encode_completions(REPORTS[:2])
    index = torch.tensor([0, 1])
    want = policy.completion_logprobs(prompts, ids, mask, index).detach()
    merged = _policy(saved, trainable=False)  # base + adapter, merged for inference
    torch.testing.assert_close(merged.completion_logprobs(prompts, ids, mask, index), want)
    resumed = _policy(saved, lora=LoraSettings(r=4))  # the adapter continues training
    assert resumed.is_lora and resumed.trainable_parameters()
    torch.testing.assert_close(
        resumed.completion_logprobs(prompts, ids, mask, index).detach(), want
    )


def test_full_finetune_reference_is_a_frozen_copy_made_once(tiny_dir):
    policy = _policy(tiny_dir)
    assert not any(p.requires_grad for p in vision_tower(policy.core).parameters())
    prompts = policy.prompt_batch(_images(2))
    ids, mask = policy.encode_completions(REPORTS[:2])
    index = torch.tensor([0, 1])
    policy.prepare_reference()
    before = policy.completion_logprobs(prompts, ids, mask, index, reference=True)
    reference = policy._reference
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.1)
    policy.completion_logprobs(prompts, ids, mask, index).sum().backward()
    opt.step()
    after = policy.completion_logprobs(prompts, ids, mask, index, reference=True)
    assert policy._reference is reference
    torch.testing.assert_close(after, before)
    assert not torch.allclose(policy.completion_logprobs(prompts, ids, mask, index), before)

    late = _policy(tiny_dir)
    opt = torch.optim.SGD(late.trainable_parameters(), lr=0.1)
    late.completion_logprobs(prompts, ids, mask, index).sum().backward()
    opt.step()
    with pytest.raises(RuntimeError, match="prepare_reference"):
        late.completion_logprobs(prompts, ids, mask, index, reference=True)


# ----------------------------------------------------------------------------- other families
def _tiny_family_dir(family: str, tiny_dir, out):
    """A random tiny Qwen2-VL or Qwen3-VL checkpoint sharing the tiny tokenizer."""
    import transformers
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from orapo.model.demo import chat_template
    from orapo.model.loading import image_only_processor_class

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tid = tok.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
    )
    ids = dict(
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    if family == "qwen3_vl":
        text["head_dim"] = 16
        vision = dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            patch_size=16,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0],
        )
        config = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
        model, proc, patch = transformers.Qwen3VLForConditionalGeneration, "Qwen3VLProcessor", 16
    else:
        vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2)
        config = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model, proc, patch = transformers.Qwen2VLForConditionalGeneration, "Qwen2VLProcessor", 14
    torch.manual_seed(0)
    model(config).save_pretrained(out)
    area = (4 * patch) ** 2
    image_processor = Qwen2VLImageProcessorPil(min_pixels=area, max_pixels=area, patch_size=patch)
    cls = image_only_processor_class(getattr(transformers, proc))
    cls(
        image_processor=image_processor, tokenizer=tok, chat_template=chat_template()
    ).save_pretrained(out)
    return out


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_other_qwen_families_load_sample_and_score(family, tiny_dir, tmp_path):
    path = _tiny_family_dir(family, tiny_dir, tmp_path / family)
    policy = _policy(path, logprob_chunk_size=4)
    assert policy.arch.model_type == family
    prompts = policy.prompt_batch(_images(2))
    torch.manual_seed(0)
    ro = policy.rollout(prompts, SamplingConfig(k=3, max_new_tokens=5))
    got = policy.completion_logprobs(
        prompts, ro.completion_ids, ro.completion_mask, ro.prompt_index
    )
    with torch.no_grad():
        want = _naive_logprobs(
            policy, prompts, ro.completion_ids, ro.completion_mask, ro.prompt_index
        )
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-5)


def test_model_config_reads_from_a_recipe_dict():
    from orapo.config_io import from_dict

    cfg = from_dict(ModelConfig, {"name_or_path": "m", "lora": {"enabled": True, "r": 8}})
    assert cfg.lora.enabled and cfg.lora.r == 8 and cfg.lora.target_modules[0] == "q_proj"
    assert ModelConfig("m").lora.enabled is False  # full fine-tuning unless asked


def test_prompt_batch_select_takes_the_right_image_rows(tiny_dir):
    policy = _policy(tiny_dir, trainable=False)
    prompts = policy.prompt_batch(_images(3))
    per = prompts.pixel_values.shape[0] // 3  # same size images: same patch count
    sub = prompts.select([2, 0, 2])
    assert torch.equal(sub.input_ids, prompts.input_ids[[2, 0, 2]])
    assert torch.equal(sub.pixel_values[:per], prompts.pixel_values[2 * per :])
    assert torch.equal(sub.pixel_values[per : 2 * per], prompts.pixel_values[:per])
    assert torch.equal(sub.pixel_values[2 * per :], prompts.pixel_values[2 * per :])


def test_hub_style_checkpoint_layout_loads_without_torchvision(tiny_dir, tmp_path):
    """Qwen's published layout: preprocessor_config.json with min/max_pixels, chat_template.json,
    no processor_config.json; the processor is assembled (PIL image processor) all the same."""
    import shutil

    from orapo.model.demo import chat_template

    hub = tmp_path / "hub"
    hub.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, hub / name)
    (hub / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    (hub / "chat_template.json").write_text(json.dumps({"chat_template": chat_template()}))
    policy = _policy(hub, trainable=False)
    big = policy.prompt_batch(_images(1, size=112))
    assert int(big.mm_token_type_ids.sum()) == 16  # 112 px -> 8x8 patches -> 4x4 tokens
    small = _policy(hub, trainable=False, max_pixels=56 * 56).prompt_batch(_images(1, size=112))
    assert int(small.mm_token_type_ids.sum()) == 4
    assert policy.prompt_text.startswith("<|im_start|>system")
