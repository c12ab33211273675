"""One training step of orapo against TRL's ``GRPOTrainer``: same model, batch, K and lengths.

    .venv/bin/python benchmarks/step_vs_trl.py                  # demo preset, B=8, K=8, 64 tokens
    .venv/bin/python benchmarks/step_vs_trl.py --steps 10       # a steadier median
    .venv/bin/python benchmarks/step_vs_trl.py --preset tiny --batch 4 --k 4 --steps 2

Builds a synthetic world and an untrained demo model (Qwen2.5-VL architecture) in a temporary
folder, then three trainers, each on its own fresh copy of that model (vision tower frozen, the
rest fully fine-tuned, float32, CPU, one torch thread):

* ``trl``: TRL's ``GRPOTrainer``: plain GRPO, ``beta=0`` (no reference model),
  ``loss_type="dapo"``, group-std advantages, no vLLM, no gradient checkpointing, orapo's
  processor as ``processing_class``. One optimizer step per B*K completions:
  ``per_device_train_batch_size=B*K``, ``num_generations=K``, no gradient accumulation (so TRL
  also skips its old-log-prob pass, as orapo does with ``mu=1``).
* ``orapo-grpo``: ``Trainer.train_step`` with ``algorithm.mode=grpo`` (the same loss).
* ``orapo``: ``Trainer.train_step`` with ``algorithm.mode=orapo``: adds the reference
  log-probs of the rollouts and ground-truth reports (no grad) and the DPO term.
* ``orapo-trl``: ``orapo.integrations.trl.OraPOTrainer``: the ``trl`` side's settings plus
  OraPO's defaults (w from the ZRR EMA, DPO beta 0.1, zero-reward negatives); its reference is
  a frozen copy that TRL loads. Its ``train()`` runs in a second thread, taking strict turns
  with the ``trl`` side's (one optimizer step each, never overlapping): ``ratio orapo-trl /
  trl`` is the cost of the DPO term inside TRL.

Each side uses its own instance of the FactS reward (rule labeler; gold ``labels`` and
``reference`` columns), samples at temperature 1 with no top-k / top-p, caps completions at
``--max-new-tokens``, and sees the same B studies at each step: TRL's dataset is laid out in the
order of orapo's sampler and read unshuffled (the script checks this, and that TRL renders
exactly orapo's prompt text).

What is timed: one optimizer step = rollouts + reward + loss + backward + gradient clipping +
optimizer and scheduler step; not loading images from disk, not logging. orapo: wall clock
around ``Trainer.train_step``. TRL: ``trainer.train()`` runs ``1 + --steps`` steps and a
callback times ``on_step_begin`` -> ``on_step_end`` (``training_step`` alone would leave out the
clipping and optimizer step that transformers' loop runs after it). The same callback runs the
two orapo steps after each TRL step, so the sides alternate (trl, orapo-grpo, orapo, orapo-trl,
trl, ...)
under the same machine load. Round 1 is a warm-up and is not counted. The ``rollout`` column
is the generation part (prompt encoding + ``generate`` + decoding: orapo's ``time/rollout``
metric, and TRL's ``_generate`` timed by wrapping it on the instance); ``update`` is the rest.
The table shows medians over the timed steps and the ratios of the step medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SIDES = ("trl", "orapo-grpo", "orapo", "orapo-trl")
ORAPO_MODES = {"orapo-grpo": "grpo", "orapo": "orapo"}


class RecordingReward:
    """A reward wrapper recording, per call, the references scored and the completion lengths.

    TRL passes ``completion_ids`` (token lists, end-of-turn token included); orapo does not, and
    its lengths come from the trainer's ``rollout/mean_length`` metric.
    """

    def __init__(self, reward: Callable[..., list[float | None]]) -> None:
        self.reward = reward
        self.__name__ = getattr(reward, "__name__", "reward")
        self.calls: list[dict[str, Any]] = []

    @property
    def failures(self):
        return getattr(self.reward, "failures", {})

    def __call__(self, completions: list[Any], **columns: Any) -> list[float | None]:
        ids = columns.get("completion_ids")
        self.calls.append(
            {
                "references": list(columns.get("reference") or []),
                "lengths": [len(x) for x in ids] if ids is not None else None,
            }
        )
        return self.reward(completions, **columns)


def timed(fn: Callable, sink: list[float]) -> Callable:
    """``fn`` that appends its wall-clock seconds to ``sink`` on each call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sink.append(time.perf_counter() - start)
        return out

    return wrapper


# ----------------------------------------------------------------------------- setup
def make_world(tmp: Path, preset: str, n: int) -> tuple[Path, Path]:
    """A synthetic manifest of ``n`` studies and a demo model whose tokenizer read its reports
    (what ``orapo model demo --manifest M --preset P`` builds)."""
    from orapo.manifest import read_manifest
    from orapo.model.demo import build_demo_model, get_preset
    from orapo.synth import generate

    size = get_preset(preset).image_size
    manifest = generate(tmp / "synth", n, seed=0, size=size, progress=False, contact_sheet=False)
    texts = [s.report for s in read_manifest(manifest).studies if s.split == "train"]
    return manifest, build_demo_model(tmp / "model", texts, preset=preset, seed=0)


def build_orapo_trainer(
    manifest: Path,
    model,
    run_dir: Path,
    console,
    *,
    mode: str,
    batch: int,
    k: int,
    max_new_tokens: int,
    steps: int,
    lr: float,
    threads: int | None = None,
):
    """An orapo Trainer of ``model`` (a ModelConfig) in ``mode``, with the benchmarks' settings:
    FactS, ``dapo``, temperature 1, a constant lr, clipping at 1.0, no evaluation or saving."""
    from orapo.model.config import SamplingConfig
    from orapo.train.config import (
        AlgorithmConfig,
        DataConfig,
        EvalConfig,
        TrainConfig,
        TrainerConfig,
    )
    from orapo.train.setup import build_trainer, resolve_data

    cfg = TrainConfig(
        data=DataConfig(manifest=str(manifest), train_size=None, val_size=None, test_size=None),
        model=model,
        sampling=SamplingConfig(k=k, temperature=1.0, max_new_tokens=max_new_tokens),
        algorithm=AlgorithmConfig(mode=mode, reward="facts", loss_reduction="dapo"),
        trainer=TrainerConfig(
            steps=steps,
            batch_size=batch,
            lr=lr,
            lr_schedule="constant",
            warmup_steps=0,
            max_grad_norm=1.0,
            eval_every=0,
            save_every=0,
            report_to=[],
            threads=threads,
        ),
        eval=EvalConfig(before=False, after=False),
    )
    return build_trainer(cfg, run_dir, resolve_data(cfg, console), console)


def orapo_trainer(args, mode: str, manifest: Path, model_dir: Path, run_dir: Path, console):
    """An orapo Trainer in ``mode`` (grpo or orapo) with the benchmark's settings."""
    from orapo.model.config import ModelConfig

    trainer = build_orapo_trainer(
        manifest,
        ModelConfig(name_or_path=str(model_dir), device="cpu"),
        run_dir,
        console,
        mode=mode,
        batch=args.batch,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        steps=args.steps + 1,
        lr=args.lr,
        threads=1,
    )
    trainer.reward_fn = RecordingReward(trainer.reward_fn)
    return trainer


def trl_dataset(trainer, rounds: int):
    """The studies orapo's sampler hands out over ``rounds`` steps, in order, as a TRL dataset.

    Columns: ``prompt`` (orapo's report prompt as conversational messages; TRL inserts the image
    before the user text), ``image``, and the reward's ``reference`` and ``labels``.
    """
    from datasets import Dataset

    from orapo.train.data import EpochSampler, study_image

    sampler = EpochSampler(len(trainer.data.train), trainer.cfg.trainer.seed)
    studies = [trainer.data.train[i] for i in sampler.take(rounds * trainer.cfg.trainer.batch_size)]
    prompt = trainer.policy.prompt
    messages = [] if prompt.system is None else [{"role": "system", "content": prompt.system}]
    messages.append({"role": "user", "content": prompt.instruction})
    return Dataset.from_dict(
        {
            "prompt": [messages] * len(studies),
            "image": [study_image(s, trainer.data.root) for s in studies],
            "reference": [s.report for s in studies],
            "labels": [s.labels for s in studies],
        }
    )


def check_same_prompt(policy, dataset) -> None:
    """TRL must render exactly orapo's prompt text, else the two sides do different work."""
    from trl.data_utils import prepare_multimodal_messages

    if policy.prompt.image_position != "before":
        raise RuntimeError("TRL puts the image before the text; orapo's prompt puts it after")
    row = dataset[0]
    messages = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    text = policy.processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    if text != policy.prompt_text:
        raise RuntimeError(f"TRL renders another prompt:\n{text!r}\norapo:\n{policy.prompt_text!r}")


def grpo_trainer(model, processor, dataset, reward, callback, *, orapo=False, **settings):
    """TRL's GRPOTrainer with the settings the benchmarks share (plain GRPO: ``beta=0``,
    ``loss_type="dapo"``, temperature 1 without top-k / top-p, a constant schedule, clipping at
    1.0, no shuffling, logging or saving), overridden and completed by ``settings`` (at least
    ``output_dir``, ``per_device_train_batch_size``, ``num_generations``,
    ``max_completion_length``, ``learning_rate``, ``max_steps``). ``orapo=True``: orapo's
    ``OraPOTrainer`` and ``OraPOConfig`` instead (the same plus the DPO term)."""
    from transformers import PrinterCallback

    if orapo:
        from orapo.integrations.trl import OraPOConfig as GRPOConfig
        from orapo.integrations.trl import OraPOTrainer as GRPOTrainer
    else:
        from trl import GRPOConfig, GRPOTrainer

    shared = {
        "fp16": False,
        "gradient_accumulation_steps": 1,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "beta": 0.0,
        "loss_type": "dapo",
        "num_iterations": 1,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "max_grad_norm": 1.0,
        "shuffle_dataset": False,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "logging_strategy": "no",
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
    }
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=GRPOConfig(**{**shared, **settings}),
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the end-of-training summary
    return trainer


def trl_trainer(args, model_dir: Path, dataset, reward, out_dir: Path, callback, orapo=False):
    """TRL's GRPOTrainer (``orapo``: OraPOTrainer) on a fresh copy of the demo model, with
    orapo's processor and the same trainable parameters (orapo's loader freezes the vision
    tower)."""
    from orapo.model.config import ModelConfig
    from orapo.model.policy import load_policy

    policy = load_policy(ModelConfig(name_or_path=str(model_dir), device="cpu"), trainable=True)
    trainer = grpo_trainer(
        policy.model,
        policy.processor,
        dataset,
        reward,
        callback,
        orapo=orapo,
        output_dir=str(out_dir),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=args.batch * args.k,
        num_generations=args.k,
        max_completion_length=args.max_new_tokens,
        scale_rewards="group",
        epsilon=0.2,
        learning_rate=args.lr,
        weight_decay=0.0,
        optim="adamw_torch",
        activation_checkpointing=False,
        max_steps=args.steps + 1,
    )
    if trainer.model.is_activation_checkpointing:
        raise RuntimeError("TRL turned activation checkpointing on; orapo runs without it")
    return trainer


class Turns:
    """Two training threads taking strict turns, one optimizer step each (``sides[0]`` first):
    two Hugging Face trainers cannot alternate steps in one thread, and must not overlap."""

    def __init__(self, sides: tuple[str, str]) -> None:
        self.sides, self.current, self.done = sides, sides[0], set()
        self.cv = threading.Condition()

    def _other(self, side: str) -> str:
        return self.sides[1] if side == self.sides[0] else self.sides[0]

    def wait(self, side: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.current == side or self._other(side) in self.done)

    def hand_over(self, side: str, finished: bool = False) -> None:
        with self.cv:
            if finished:
                self.done.add(side)
            self.current = self._other(side)
            self.cv.notify_all()


def make_step_timer(between: Callable[[int], None], turns: Turns | None = None, side: str = ""):
    """A TrainerCallback timing each TRL optimizer step, then calling ``between(step)``; with
    ``turns``, each step waits for ``side``'s turn and hands over after it."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if turns is not None:
                turns.wait(side)
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)
            between(state.global_step)
            if turns is not None:
                turns.hand_over(side)

        def on_train_end(self, args, state, control, **kwargs):
            if turns is not None:
                turns.hand_over(side, finished=True)

    return StepTimer()


def train_in_turns(trainers: list) -> None:
    """``trainer.train()`` of each in its own thread (their callbacks take turns); re-raises."""
    errors: list[BaseException] = []

    def train(trainer) -> None:
        try:
            trainer.train()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            errors.append(err)

    threads = [threading.Thread(target=train, args=(t,)) for t in trainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def trainable(params) -> int:
    return sum(p.numel() for p in params if p.requires_grad)


# ----------------------------------------------------------------------------- main
def run(args, console) -> dict[str, Any]:
    """Build everything, run the alternating rounds; per-side step/rollout seconds, lengths."""
    rounds = args.steps + 1
    step_s: dict[str, list[float]] = {side: [] for side in SIDES}
    rollout_s: dict[str, list[float]] = {side: [] for side in SIDES}
    lengths: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="step_vs_trl-") as tmp_name:
        tmp = Path(tmp_name)
        console.print(f"Building a synthetic world and the {args.preset} model in {tmp}")
        manifest, model_dir = make_world(tmp, args.preset, args.studies)
        orapo = {
            side: orapo_trainer(args, mode, manifest, model_dir, tmp / side, console)
            for side, mode in ORAPO_MODES.items()
        }
        dataset = trl_dataset(orapo["orapo-grpo"], rounds)
        check_same_prompt(orapo["orapo-grpo"].policy, dataset)

        def orapo_steps(step: int) -> None:
            for side, trainer in orapo.items():
                batch = trainer.next_batch()
                start = time.perf_counter()
                metrics = trainer.train_step(batch)
                step_s[side].append(time.perf_counter() - start)
                rollout_s[side].append(metrics["time/rollout"])
                lengths[side].append(metrics["rollout/mean_length"])
            console.print(
                f"round {step}/{rounds}{' (warm-up)' if step == 1 else ''}: "
                + ", ".join(f"{side} {step_s[side][-1]:.2f} s" for side in SIDES[:3])
            )

        from orapo.rewards import make_reward

        reward = RecordingReward(make_reward("facts"))
        turns = Turns(("trl", "orapo-trl"))
        timer = make_step_timer(orapo_steps, turns, "trl")
        trl = trl_trainer(args, model_dir, dataset, reward, tmp / "trl", timer)
        trl._generate = timed(trl._generate, rollout_s["trl"])
        counts = {
            "trl": trainable(trl.model.parameters()),
            **{side: trainable(t.policy.model.parameters()) for side, t in orapo.items()},
        }
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"the sides train different parameter counts: {counts}")
        step_s["trl"] = timer.seconds  # filled by the callback during train()

        workload: dict[str, list[float]] = {"zrr/raw": [], "mix/w": [], "dpo/pairs_per_batch": []}

        def orapo_trl_done(step: int) -> None:
            for key, values in workload.items():  # what the DPO term had to do at this step
                values.append(orapo_trl._metrics["train"][key][-1])
            console.print(f"orapo-trl {step}/{rounds}: {step_s['orapo-trl'][-1]:.2f} s")

        orapo_reward = RecordingReward(make_reward("facts"))
        orapo_timer = make_step_timer(orapo_trl_done, turns, "orapo-trl")
        step_s["orapo-trl"] = orapo_timer.seconds
        orapo_trl = trl_trainer(
            args, model_dir, dataset, orapo_reward, tmp / "orapo-trl", orapo_timer, orapo=True
        )
        orapo_trl._generate = timed(orapo_trl._generate, rollout_s["orapo-trl"])
        train_in_turns([trl, orapo_trl])  # trl, orapo-grpo, orapo, orapo-trl, trl, ...
        workload = {key: values[1:] for key, values in workload.items()}

    lengths["trl"] = [statistics.fmean(c["lengths"]) for c in reward.calls]
    lengths["orapo-trl"] = [statistics.fmean(c["lengths"]) for c in orapo_reward.calls]
    calls = {
        "trl": reward.calls,
        "orapo-trl": orapo_reward.calls,
        **{s: t.reward_fn.calls for s, t in orapo.items()},
    }
    same = all(
        len(calls[side]) == rounds
        and all(
            sorted(a["references"]) == sorted(b["references"])
            for a, b in zip(calls["trl"], calls[side], strict=True)
        )
        for side in (*ORAPO_MODES, "orapo-trl")
    )
    failures = {
        "trl": sum(reward.failures.values()),
        "orapo-trl": sum(orapo_reward.failures.values()),
        **{s: sum(t.reward_fn.failures.values()) for s, t in orapo.items()},
    }
    return {
        "step_s": step_s,
        "rollout_s": rollout_s,
        "lengths": lengths,
        "same_studies": same,
        "reward_failures": failures,
        "trainable": counts["trl"],
        "orapo_trl_workload": workload,
    }


def report(args, result: dict[str, Any], load: tuple[float, float]) -> None:
    """The table: medians over the timed steps (round 1, the warm-up, is left out)."""
    import transformers
    import trl

    print(
        f"step_vs_trl: preset {args.preset} ({result['trainable']:,} trainable parameters), "
        f"B={args.batch} images x K={args.k}, max {args.max_new_tokens} new tokens; "
        f"CPU ({os.cpu_count()} cores, {platform.machine()}), 1 torch thread, float32; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"
    )
    print(
        f"median of {args.steps} timed steps after 1 warm-up; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after; same studies each step on every side: "
        f"{'yes' if result['same_studies'] else 'NO'}; reward failures: "
        + ", ".join(f"{s} {n}" for s, n in result["reward_failures"].items())
    )
    header = f"{'side':<11} {'s/step':>7} {'rollout':>8} {'update':>7} {'mean len':>9}  timed steps"
    print(header)
    print("-" * len(header))
    medians = {}
    for side in SIDES:
        steps = result["step_s"][side][1:]
        rollouts = result["rollout_s"][side][1:]
        medians[side] = statistics.median(steps)
        update = statistics.median(s - r for s, r in zip(steps, rollouts, strict=True))
        mean_len = statistics.fmean(result["lengths"][side][1:])
        print(
            f"{side:<11} {medians[side]:>7.3f} {statistics.median(rollouts):>8.3f} "
            f"{update:>7.3f} {mean_len:>9.1f}  " + ", ".join(f"{t:.2f}" for t in steps)
        )
    for side in (*ORAPO_MODES, "orapo-trl"):
        print(f"ratio {side} / trl: {medians[side] / medians['trl']:.2f}")
    work = result["orapo_trl_workload"]
    print(
        "orapo-trl workload (timed steps): ZRR "
        + ", ".join(f"{x:.2f}" for x in work["zrr/raw"])
        + "; w "
        + ", ".join(f"{x:.3f}" for x in work["mix/w"])
        + "; DPO pairs per step "
        + ", ".join(f"{x:.0f}" for x in work["dpo/pairs_per_batch"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    from orapo.model.demo import PRESETS

    parser.add_argument(
        "--preset", default="demo", choices=sorted(PRESETS), help="Demo model preset."
    )
    parser.add_argument("--batch", type=int, default=8, help="Images (prompts) per step, B.")
    parser.add_argument("--k", type=int, default=8, help="Completions per image, K.")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, help="Completion length cap, in tokens."
    )
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per side (+1 warm-up).")
    parser.add_argument("--lr", type=float, default=1e-5, help="Learning rate of every side.")
    parser.add_argument(
        "--studies", type=int, default=200, help="Synthetic studies (70%% train) to generate."
    )
    args = parser.parse_args(argv)
    if args.k < 2 or args.batch < 1 or args.steps < 1 or args.max_new_tokens < 1:
        parser.error("need --k >= 2, --batch >= 1, --steps >= 1, --max-new-tokens >= 1")
    if args.studies < 20:
        parser.error("need --studies >= 20 (every split must get studies)")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    before = os.getloadavg()[0]
    result = run(args, Console(stderr=True))
    report(args, result, (before, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
