"""Timing of the policy's hot paths: rollouts and log-probs.

    python -m orapo.model.bench --threads 1                  # demo preset, built in a temp dir
    python -m orapo.model.bench --model DIR --device cuda    # any model directory

Prints the parameter count, rollout throughput for B images x K samples x N new tokens
(generated tokens per second = B*K*decoding steps / seconds), and the time of the policy's
log-prob forward and backward and of the no-grad reference pass over those B*K rollouts.
Each timing is repeated; report the minimum (this CPU is shared).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def _demo_dir(tmp: str, preset: str) -> str:
    from orapo.model.cli import _default_corpus
    from orapo.model.demo import build_demo_model

    return str(build_demo_model(f"{tmp}/{preset}", _default_corpus(), preset=preset))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: build the demo preset)")
    parser.add_argument("--preset", default="demo", help="demo preset to build without --model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--lora", action="store_true", help="LoRA r=16 instead of full FT")
    parser.add_argument("-b", type=int, default=8, help="images B")
    parser.add_argument("-k", type=int, default=8, help="rollouts per image K")
    parser.add_argument("--new-tokens", type=int, default=64, help="max new tokens")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each timing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from orapo.model.config import LoraSettings, ModelConfig, SamplingConfig
    from orapo.model.policy import load_policy

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or _demo_dir(tmp, args.preset)
        lora = LoraSettings(enabled=args.lora, dropout=0.0)
        policy = load_policy(ModelConfig(path, device=args.device, lora=lora), trainable=True)
    size = int(policy.processor.image_processor.size.longest_edge**0.5)
    images = [
        Image.fromarray((np.random.default_rng(i).random((size, size)) * 255).astype("uint8"))
        for i in range(args.b)
    ]
    prompts = policy.prompt_batch(images)
    trainable = sum(p.numel() for p in policy.trainable_parameters())
    print(
        f"model {path}: {policy.num_parameters():,} parameters ({trainable:,} trainable, "
        f"{'LoRA' if args.lora else 'full FT'}), device {policy.device}, threads "
        f"{torch.get_num_threads()}, prompt {tuple(prompts.input_ids.shape)}"
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
