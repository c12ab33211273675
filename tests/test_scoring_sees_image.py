"""Guard: the scoring forward sees the image (issue 16, item 1).

``Policy.completion_logprobs`` hands each chunk its images' pre-encoded features through the
model's ``mm_encoder_outputs`` argument. A transformers release whose Qwen-VL forward does not
know that argument swallows it in ``**kwargs`` and scores every completion as if the image
tokens were blank: every policy and reference log-prob silently ignores the image (measured on
transformers 5.0.0). These checks fail on such a release; ``pyproject.toml``'s lower bound on
transformers is the oldest release where they pass (docs/model.md).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from PIL import Image

from orapo.model import ModelConfig, SamplingConfig, build_demo_model, load_policy
from orapo.model.logprobs import naive_token_logprobs
from orapo.model.policy import trim_completions

REPORTS = [
    "FINDINGS: The heart is enlarged. There is a small left pleural effusion.",
    "FINDINGS: The lungs are clear. No pneumothorax or pleural effusion.",
    "IMPRESSION: Pneumonia. Support devices as described.",
]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = build_demo_model(tmp_path_factory.mktemp("m") / "tiny", REPORTS * 10, preset="tiny")
    return load_policy(ModelConfig(str(path)), trainable=False)


def _images() -> list[Image.Image]:
    """Two very different 56 px pictures: noise, and a bright disc on black."""
    noise = (np.random.default_rng(0).random((56, 56)) * 255).astype("uint8")
    yy, xx = np.mgrid[:56, :56]
    disc = (((yy - 28) ** 2 + (xx - 28) ** 2) < 200).astype("uint8") * 255
    return [Image.fromarray(noise), Image.fromarray(disc)]


def _full_forward(policy, prompts, ids, mask, index, with_image: bool):
    """Naive log-probs: one forward over prompt + completion, full logits, raw pixels (or no
    pixels at all: the image tokens' own embeddings stand in, as an image-blind forward)."""
    p, t = prompts.input_ids.shape[1], ids.shape[1]
    inputs = {
        "input_ids": torch.cat([prompts.input_ids[index], ids], 1),
        "attention_mask": torch.cat([prompts.attention_mask[index], mask], 1),
        "mm_token_type_ids": torch.cat(
            [prompts.mm_token_type_ids[index], torch.zeros_like(ids)], 1
        ),
        "image_grid_thw": prompts.image_grid_thw[index],
    }
    if with_image:
        inputs["pixel_values"] = prompts.pixel_rows(index)
    with torch.no_grad():
        logits = policy.core(**inputs).logits
    suppress = torch.tensor(policy.suppressed_token_ids)
    return naive_token_logprobs(logits[:, p - 1 : p + t - 1], ids, mask, suppress)


def test_two_images_give_different_completion_logprobs(policy):
    prompts = policy.prompt_batch(_images())
    ids, mask = policy.encode_completions(REPORTS[:1] * 2)  # the same report under each image
    index = torch.arange(2)
    with torch.no_grad():
        got = policy.completion_logprobs(prompts, ids, mask, index)
    with_image = _full_forward(policy, prompts, ids, mask, index, with_image=True)
    blind = _full_forward(policy, prompts, ids, mask, index, with_image=False)
    # The check is not vacuous: on this model the image moves the log-probs well above noise.
    assert (with_image[0] - with_image[1]).abs().max() > 1e-3
    assert (with_image - blind).abs().max() > 1e-3
    torch.testing.assert_close(got, with_image, atol=2e-5, rtol=1e-5)
    assert (got[0] - got[1]).abs().max() > 1e-3, "scoring ignores the image"


def test_generate_scores_match_completion_logprobs(policy):
    """Log-probs of the sampled tokens under generate's own (processed) scores equal
    ``completion_logprobs`` of the same tokens: sampling and scoring see the same inputs."""
    prompts = policy.prompt_batch(_images())
    sampling = SamplingConfig(k=3, max_new_tokens=10)
    gen = policy.generation_config(sampling, output_scores=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    with torch.no_grad(), policy._generation_setup():
        out = policy.core.generate(**prompts.model_inputs(), generation_config=gen)
    generated = out.sequences[:, prompts.input_ids.shape[1] :]  # (B*K, T)
    ids, mask, _ = trim_completions(generated, policy.stop_token_ids, policy.pad_token_id)
    t = ids.shape[1]
    scores = torch.stack(out.scores[:t], 1).float().log_softmax(-1)  # (B*K, T, V)
    from_generate = scores.gather(-1, ids[..., None])[..., 0] * mask
    index = torch.arange(2).repeat_interleave(sampling.k)
    with torch.no_grad():
        scored = policy.completion_logprobs(prompts, ids, mask, index)
    assert int(mask.sum()) >= 2 * sampling.k  # something was sampled
    torch.testing.assert_close(scored, from_generate, atol=2e-5, rtol=1e-5)
