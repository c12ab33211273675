"""One OraPO step at the paper's scale against plain Hugging Face building blocks and TRL's
``GRPOTrainer``, on the same batch, in one run.

    python benchmarks/step_gpu.py --device cuda                    # Qwen/Qwen2.5-VL-3B-Instruct
    python benchmarks/step_gpu.py --model /models/Qwen2.5-VL-3B-Instruct --device cuda
    python benchmarks/step_gpu.py --model DIR --layers 1 --device cpu --batch 2 --k 2 \\
        --new-tokens 4 --max-pixels 3136                           # a CPU smoke run (the test)

Workload (the defaults): B=8 images x K=8 rollouts of exactly ``--new-tokens`` 200 tokens
(``min_new_tokens`` = ``max_new_tokens`` on every side, so random weights decode as long as a
trained model), LoRA r64 / alpha 128 on the language model (vision frozen), ``--dtype`` bfloat16
on CUDA (float32 on CPU), sdpa attention, gradient checkpointing, images of ``--max-pixels``
200,704 px (448 x 448: 256 image tokens, the 3B recipes' value).

Weights: a local directory holding weights is loaded as is (download the checkpoint first:
``huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct --local-dir DIR``). Anything else (a hub
id, or ``--layers`` / ``--vision-layers`` to keep the first N decoder layers / vision blocks)
gets random weights from the model's own config (a hub id downloads its config and tokenizer
only, or reads them from the local Hugging Face cache), written to a temporary directory that
every side loads. Timings do not depend on the weights: every rollout has exactly
``--new-tokens`` tokens.

Sides, run one after the other on the same B studies (each: 1 warm-up step, then ``--steps``
timed steps; medians), each on its own fresh model:

* ``orapo``: ``Trainer.train_step`` (mode orapo: rollouts, FactS rewards, reference log-probs of
  rollouts and ground-truth reports, GRPO + DPO, backward, clip, AdamW). Phases from wrapping
  the trainer's own calls: rollout, reference, policy forward+backward, optimizer; ``other``
  is the rest of the step (rewards, advantages, encoding the ground truth).
* ``hf``: plain Hugging Face building blocks on the same model and LoRA: ``generate``
  (``num_return_sequences=K``), a no-grad reference forward with the adapter disabled, a forward
  + backward of a GRPO-style surrogate (full logits of the completions, one image's K rollouts
  per forward), an AdamW step.
* ``trl``: TRL's ``GRPOTrainer`` (``beta=0``, ``loss_type="dapo"``, LoRA, gradient
  checkpointing, the same processor and FactS reward): rollout (its ``_generate``) and the rest.

Printed: seconds per phase, peak GPU memory of the side's step (``-`` on CPU), and the ratios of
the step times. Nothing here claims a GPU number: run it on a GPU to get one.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_vs_trl import (  # noqa: E402
    RecordingReward,
    build_orapo_trainer,
    check_same_prompt,
    grpo_trainer,
    make_step_timer,
    trl_dataset,
)

PHASES = ("rollout", "reference", "policy fwd+bwd", "optimizer", "other")
LORA = {"r": 64, "alpha": 128, "dropout": 0.0}


# ----------------------------------------------------------------------------- timing
class Clock:
    """Seconds per phase of the current step; synchronises CUDA around each timed call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, fn: Callable, phase: Callable[..., str | None] | str) -> Callable:
        """``fn`` whose time goes to ``phase`` (or ``phase(*args, **kwargs)``; None: untimed)."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            name = phase(*args, **kwargs) if callable(phase) else phase
            if name is None:
                return fn(*args, **kwargs)
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds[name] += time.perf_counter() - start
            return out

        return timed

    def step(self, fn: Callable[[], Any]) -> tuple[dict[str, float], float | None]:
        """Run one step: its phases (``other`` = the untimed rest) and peak memory in GiB."""
        self.seconds = defaultdict(float)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        total = time.perf_counter() - start
        phases = dict(self.seconds)
        phases["other"] = max(0.0, total - sum(phases.values()))
        phases["step"] = total
        peak = None
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        return phases, peak


# ----------------------------------------------------------------------------- the model
def has_weights(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and (any(p.glob("*.safetensors")) or any(p.glob("*.safetensors.index.json")))


def random_weights_dir(args, out: Path, dtype: torch.dtype) -> str:
    """The model's config (``--layers`` / ``--vision-layers`` kept) with random weights, and its
    processor files, saved in ``out``."""
    from transformers import AutoConfig, AutoTokenizer

    from orapo.model.loading import detect_architecture, load_processor

    config = AutoConfig.from_pretrained(args.model)
    if args.layers:
        config.text_config.num_hidden_layers = args.layers
        if getattr(config.text_config, "layer_types", None):
            config.text_config.layer_types = config.text_config.layer_types[: args.layers]
    if args.vision_layers:
        vision = config.vision_config
        vision.depth = args.vision_layers
        if hasattr(vision, "fullatt_block_indexes"):
            kept = [i for i in vision.fullatt_block_indexes if i < args.vision_layers]
            vision.fullatt_block_indexes = kept or [args.vision_layers - 1]
    arch = detect_architecture(args.model)
    torch.manual_seed(0)
    model = arch.model_cls()._from_config(config, dtype=dtype)
    model.save_pretrained(out)
    try:
        load_processor(args.model, arch).save_pretrained(out)
    except (OSError, ValueError):
        AutoTokenizer.from_pretrained(args.model).save_pretrained(out)
    return str(out)


def model_config(args, path: str):
    from orapo.model.config import LoraSettings, ModelConfig

    return ModelConfig(
        name_or_path=path,
        dtype=args.dtype,
        attn_implementation="sdpa",
        device=args.device,
        lora=LoraSettings(enabled=True, **LORA),
        gradient_checkpointing=True,
        max_pixels=args.max_pixels,
        min_pixels=min(args.max_pixels, 3136),
        logprob_chunk_size=args.k,
    )


def make_world(args, tmp: Path) -> Path:
    """Synthetic studies with images of ``--max-pixels`` (enough for every round)."""
    from orapo.synth import generate

    side = int(args.max_pixels**0.5)
    n = args.batch * (args.steps + 1)
    return generate(
        tmp / "synth",
        n + 2,
        seed=0,
        size=side,
        progress=False,
        contact_sheet=False,
        counts={"train": n, "val": 1, "test": 1},
    )


# ----------------------------------------------------------------------------- the sides
def orapo_side(args, path: str, manifest: Path, run_dir: Path, device, console) -> dict:
    """Trainer.train_step, phases from its own calls; also the studies of each round."""
    from functools import partial

    trainer = build_orapo_trainer(
        manifest,
        model_config(args, path),
        run_dir,
        console,
        mode="orapo",
        batch=args.batch,
        k=args.k,
        max_new_tokens=args.new_tokens,
        steps=args.steps + 1,
        lr=5e-5,
    )
    policy, clock = trainer.policy, Clock(device)
    policy.generation_config = partial(policy.generation_config, min_new_tokens=args.new_tokens)
    policy.rollout = clock.wrap(policy.rollout, "rollout")
    policy.completion_logprobs = clock.wrap(
        policy.completion_logprobs,
        lambda *a, reference=False, **k: "reference" if reference else None,
    )
    trainer.loss = clock.wrap(trainer.loss, "policy fwd+bwd")
    trainer.backward = clock.wrap(trainer.backward, "policy fwd+bwd")
    trainer.optimizer_step = clock.wrap(trainer.optimizer_step, "optimizer")
    rounds = []
    for _ in range(args.steps + 1):
        batch = trainer.next_batch()
        rounds.append((clock.step(lambda b=batch: trainer.train_step(b)), batch.images))
    dataset = trl_dataset(trainer, args.steps + 1)
    check_same_prompt(policy, dataset)
    return {"rounds": rounds, "dataset": dataset, "prompt": policy.prompt_text}


def hf_side(args, path: str, images_per_round: list, prompt_text: str, device) -> list:
    """Plain transformers + peft: generate, reference forward, policy forward + backward, AdamW."""
    from peft import LoraConfig, get_peft_model

    from orapo.model.loading import detect_architecture, load_processor, resolve_dtype

    arch = detect_architecture(path)
    dtype = resolve_dtype(args.dtype, device)
    model = arch.model_cls().from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    model.to(device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules=rf"model\.language_model\..*\.({'|'.join(targets)})",
    )
    model = get_peft_model(model, lora)
    processor = load_processor(path, arch, min_pixels=min(args.max_pixels, 3136),
                               max_pixels=args.max_pixels)  # fmt: skip
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    clock = Clock(device)
    k, t = args.k, args.new_tokens
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def logps(inputs: dict, seqs: torch.Tensor, p: int) -> torch.Tensor:
        """(K, T) log-probs of the K completions of one image (full logits of the completion)."""
        logits = model(**inputs, input_ids=seqs, logits_to_keep=t + 1).logits[:, :-1]
        return logits.float().log_softmax(-1).gather(-1, seqs[:, p:, None])[..., 0]

    def step(images: list) -> None:
        enc = processor(text=[prompt_text] * len(images), images=images, padding=True,
                        return_tensors="pt").to(device)  # fmt: skip
        p = enc["input_ids"].shape[1]
        generate = clock.wrap(model.generate, "rollout")
        with torch.no_grad(), autocast:
            model.eval()
            seqs = generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                            max_new_tokens=t, min_new_tokens=t, num_return_sequences=k)  # fmt: skip
            model.train()
        patches = enc["image_grid_thw"].prod(-1).tolist()
        starts = [sum(patches[:i]) for i in range(len(images))]
        per_image = []
        for i in range(len(images)):  # one image's K completions per forward
            attention = enc["attention_mask"][i : i + 1].repeat(k, 1)
            inputs = {
                "pixel_values": enc["pixel_values"][starts[i] : starts[i] + patches[i]].repeat(
                    k, 1
                ),
                "image_grid_thw": enc["image_grid_thw"][i : i + 1].repeat(k, 1),
                "attention_mask": torch.nn.functional.pad(attention, (0, t), value=1),
            }
            if "mm_token_type_ids" in enc:
                mm = enc["mm_token_type_ids"][i : i + 1].repeat(k, 1)
                inputs["mm_token_type_ids"] = torch.nn.functional.pad(mm, (0, t))
            per_image.append((inputs, seqs[i * k : (i + 1) * k]))
        with torch.no_grad(), autocast, model.disable_adapter():
            reference = clock.wrap(logps, "reference")
            refs = [reference(inputs, s, p) for inputs, s in per_image]
        advantages = torch.randn(len(images), k, 1, device=device)

        def forward_backward(i: int) -> None:
            with autocast:
                logp = logps(*per_image[i], p)
                ratio = torch.exp(logp - refs[i])
                loss = -(ratio * advantages[i]).mean() / len(images)
            loss.backward()

        fb = clock.wrap(forward_backward, "policy fwd+bwd")
        for i in range(len(images)):
            fb(i)
        clock.wrap(lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)), "optimizer")()

    return [(clock.step(lambda im=images: step(im)), None) for images in images_per_round]


def trl_side(args, path: str, dataset, run_dir: Path, device) -> list:
    """TRL's GRPOTrainer on the same studies: rollout (its ``_generate``) and the rest."""
    from accelerate.state import AcceleratorState

    from orapo.model.policy import load_policy
    from orapo.rewards import make_reward

    AcceleratorState._reset_state()  # orapo's Accelerator set no mixed precision; TRL sets its own

    policy = load_policy(model_config(args, path), trainable=True)
    clock = Clock(device)
    reward = RecordingReward(make_reward("facts"))
    steps: list = []
    timer = make_step_timer(lambda _: None)
    trainer = grpo_trainer(
        policy.model,
        policy.processor,
        dataset,
        reward,
        timer,
        output_dir=str(run_dir),
        use_cpu=device.type == "cpu",
        bf16=policy.compute_dtype == torch.bfloat16,
        per_device_train_batch_size=args.batch * args.k,
        num_generations=args.k,
        max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens},
        learning_rate=5e-5,
        activation_checkpointing=True,
        max_steps=args.steps + 1,
    )
    trainer._generate = clock.wrap(trainer._generate, "rollout")
    begin, end = timer.on_step_begin, timer.on_step_end

    def on_step_begin(*a, **kw):
        clock.seconds = defaultdict(float)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        clock.sync()
        return begin(*a, **kw)

    def on_step_end(*a, **kw):
        clock.sync()
        out = end(*a, **kw)
        phases = dict(clock.seconds)
        phases["other"] = max(0.0, timer.seconds[-1] - sum(phases.values()))
        phases["step"] = timer.seconds[-1]
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        steps.append(((phases, peak), None))
        return out

    timer.on_step_begin, timer.on_step_end = on_step_begin, on_step_end
    trainer.train()
    return steps


# ----------------------------------------------------------------------------- main
def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def table(results: dict[str, list]) -> list[str]:
    """Median seconds per phase over the timed steps (the first, a warm-up, left out), peak
    memory (GiB, ``-`` on CPU) and the ratios of the step medians."""
    median = {
        side: {
            key: statistics.median(r[0][0].get(key, 0.0) for r in rounds[1:])
            for key in (*PHASES, "step")
        }
        for side, rounds in results.items()
    }
    lines = [
        f"{'side':<6} {'step s':>8} "
        + " ".join(f"{p:>15}" for p in PHASES)
        + f" {'peak GiB':>9} {'/ trl':>6} {'/ hf':>6}"
    ]
    for side, rounds in results.items():
        m = median[side]
        peaks = [r[0][1] for r in rounds[1:] if r[0][1] is not None]
        peak = f"{max(peaks):>9.2f}" if peaks else f"{'-':>9}"
        lines.append(
            f"{side:<6} {m['step']:>8.3f} "
            + " ".join(f"{m[p]:>15.3f}" for p in PHASES)
            + f" {peak} {m['step'] / median['trl']['step']:>6.2f}"
            + f" {m['step'] / median['hf']['step']:>6.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="Qwen/Qwen2.5-VL-3B-Instruct",
        help="checkpoint directory, or a hub id / directory for its config",
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), ...")
    parser.add_argument("--layers", type=int, default=0, help="keep N decoder layers (random)")
    parser.add_argument("--vision-layers", type=int, default=0, help="keep N vision blocks")
    parser.add_argument("--batch", type=int, default=8, help="images B")
    parser.add_argument("--k", type=int, default=8, help="rollouts per image K")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens per rollout")
    parser.add_argument("--max-pixels", type=int, default=200704, help="image area, px")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side (+1 warm-up)")
    args = parser.parse_args(argv)
    if args.k < 2 or args.batch < 1 or args.steps < 1 or args.new_tokens < 1:
        parser.error("need --k >= 2, --batch >= 1, --steps >= 1, --new-tokens >= 1")
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from orapo.model.loading import resolve_device, resolve_dtype

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    device = resolve_device(args.device)
    console = Console(stderr=True)
    results: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="step_gpu-") as tmp_name:
        tmp = Path(tmp_name)
        random = args.layers or args.vision_layers or not has_weights(args.model)
        dtype = resolve_dtype(args.dtype, device)
        path = random_weights_dir(args, tmp / "model", dtype) if random else args.model
        manifest = make_world(args, tmp)
        console.print(f"model {path} ({'random weights' if random else 'checkpoint'}), {device}")
        orapo = orapo_side(args, path, manifest, tmp / "orapo", device, console)
        results["orapo"] = orapo["rounds"]
        free_memory()
        images = [imgs for _, imgs in orapo["rounds"]]
        results["hf"] = hf_side(args, path, images, orapo["prompt"], device)
        free_memory()
        results["trl"] = trl_side(args, path, orapo["dataset"], tmp / "trl", device)
    import transformers
    import trl

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores)"
    )
    print(
        f"step_gpu: {path if not random else args.model} "
        f"({'random weights' if random else 'checkpoint'}"
        f"{f', {args.layers} layers' if args.layers else ''}), {name}, dtype {args.dtype}, "
        f"B={args.batch} x K={args.k}, {args.new_tokens} new tokens, LoRA r{LORA['r']}, "
        f"sdpa, gradient checkpointing, max_pixels {args.max_pixels}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}; median of "
        f"{args.steps} timed steps after 1 warm-up"
    )
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
