"""Timing of the policy's hot paths: rollouts and log-probs.

    python -m orapo.model.bench --threads 1                  # demo preset, built in a temp dir
    python -m orapo.model.bench --model DIR --device cuda    # any model directory
    python -m orapo.model.bench --config configs/qwen2_5_vl_3b_mimic_1k.yaml --device cuda

Prints the parameter count, rollout throughput for B images x K samples x N new tokens
(generated tokens per second = B*K*decoding steps / seconds), and the time of the policy's
log-prob forward and backward and of the no-grad reference pass over those B*K rollouts.
Each timing is repeated; report the minimum (this CPU is shared).

Images are square, of the largest area the processor keeps (``max_pixels``: ``--max-pixels``,
else the recipe's ``model.max_pixels`` with ``--config``, else the checkpoint's own bound; a
real Qwen2.5-VL checkpoint's own bound is 12.8 M px, ~16k image tokens per image, so give one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import torch
from PIL import Image


def _demo_dir(tmp: str, preset: str) -> str:
    from orapo.model.cli import _default_corpus
    from orapo.model.demo import build_demo_model

    return str(build_demo_model(f"{tmp}/{preset}", _default_corpus(), preset=preset))


def model_config(args: argparse.Namespace, path: str | None) -> Any:
    """The ModelConfig to time: the recipe's model section (``--config``) or LoRA r=16 /
    full FT on ``path``; ``--model``, ``--device`` and ``--max-pixels`` override."""
    from dataclasses import replace

    from orapo.model.config import LoraSettings, ModelConfig

    if args.config:
        from orapo.config_io import from_dict, load_yaml

        cfg = from_dict(ModelConfig, load_yaml(args.config)["model"], "model")
    else:
        cfg = ModelConfig(str(path), lora=LoraSettings(enabled=args.lora, dropout=0.0))
    cfg = replace(cfg, name_or_path=str(path or cfg.name_or_path), device=args.device)
    if args.max_pixels is not None:
        cfg = replace(cfg, max_pixels=args.max_pixels)
    return cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: build the demo preset)")
    parser.add_argument(
        "--config", help="recipe whose model section (max_pixels, dtype, LoRA, ...) to use"
    )
    parser.add_argument("--max-pixels", type=int, default=None, help="largest image area, px")
    parser.add_argument("--preset", default="demo", help="demo preset to build without --model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--lora", action="store_true", help="LoRA r=16 instead of full FT")
    parser.add_argument("-b", type=int, default=8, help="images B")
    parser.add_argument("-k", type=int, default=8, help="rollouts per image K")
    parser.add_argument("--new-tokens", type=int, default=64, help="max new tokens")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each timing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from orapo.model.config import SamplingConfig
    from orapo.model.policy import load_policy

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or (None if args.config else _demo_dir(tmp, args.preset))
        policy = load_policy(model_config(args, path), trainable=True)
    path = policy.source
    size = int(policy.processor.image_processor.size.longest_edge**0.5)
    images = [
        Image.fromarray((np.random.default_rng(i).random((size, size)) * 255).astype("uint8"))
        for i in range(args.b)
    ]
    prompts = policy.prompt_batch(images)
    trainable = sum(p.numel() for p in policy.trainable_parameters())
    print(
        f"model {path}: {policy.num_parameters():,} parameters ({trainable:,} trainable, "
        f"{'LoRA' if policy.is_lora else 'full FT'}), device {policy.device}, threads "
        f"{torch.get_num_threads()}, images {size}x{size} px, prompt "
        f"{tuple(prompts.input_ids.shape)}"
    )

    def sync() -> None:
        if policy.device.type == "cuda":
            torch.cuda.synchronize()

    sampling = SamplingConfig(k=args.k, max_new_tokens=args.new_tokens)
    policy.rollout(prompts, SamplingConfig(k=2, max_new_tokens=4))  # warm-up
    for rep in range(args.repeats):
        torch.manual_seed(rep)
        sync()
        start = time.perf_counter()
        rollouts = policy.rollout(prompts, sampling)
        sync()
        seconds = time.perf_counter() - start
        steps = rollouts.completion_ids.shape[1]
        print(
            f"rollout B={args.b} K={args.k}: {seconds:.2f} s, {steps} steps, "
            f"{args.b * args.k * steps / seconds:,.0f} generated tokens/s, "
            f"{1000 * seconds / steps:.1f} ms/step"
        )
    inputs = (rollouts.completion_ids, rollouts.completion_mask, rollouts.prompt_index)
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        logp = policy.completion_logprobs(prompts, *inputs)
        sync()
        middle = time.perf_counter()
        logp.sum().backward()
        sync()
        end = time.perf_counter()
        policy.model.zero_grad(set_to_none=True)
        print(
            f"log-probs of {logp.shape[0]}x{logp.shape[1]}: forward {middle - start:.2f} s, "
            f"backward {end - middle:.2f} s, total {end - start:.2f} s"
        )
    policy.prepare_reference()
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        policy.completion_logprobs(prompts, *inputs, reference=True)
        sync()
        print(f"reference log-probs (no grad): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
