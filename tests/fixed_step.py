"""One training step on fixed rollouts and rewards, for equivalence tests (not collected).

Rollouts are a function of each study's report (K prefixes of it) and rewards a function of each
rollout's text, so 1 process and several processes, or 1 and several micro-batches, see the same
global batch. Run directly or with several CPU processes (gloo) under torchrun::

    torchrun --standalone --nproc_per_node 2 tests/fixed_step.py MANIFEST MODEL_DIR OUT.pt grpo

writes, from the main process, ``{mode: [gradient of each trainable parameter]}`` as applied by
the optimizer step (after the processes' gradients are averaged), and ``{"processes": P}``.
Mode ``validate`` instead stores ``Trainer.validate``'s result on the test split (its summary
and predictions).
(``accelerate launch --cpu --num_processes 2`` starts a single process: its CPU launcher runs
several only through mpirun.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

K = 2


def reward(text: str) -> float:
    """0 for the short prefix of some reports (zero-reward groups and DPO negatives), else a
    value that differs within groups."""
    return 0.0 if len(text) % 3 == 0 else (len(text) % 7) / 6


def tiny_trainer(manifest: str, model: str, run_dir: Path, **extra):
    """A trainer of batches of 4 studies x K on the tiny world, one thread."""
    from rich.console import Console

    from orapo.config_io import apply_overrides, from_dict
    from orapo.train.config import TrainConfig
    from orapo.train.setup import build_trainer, resolve_data

    values = {
        "data.manifest": manifest,
        "model.name_or_path": model,
        "data.train_size": 8,
        "data.val_size": 4,
        "data.test_size": 4,
        "trainer.batch_size": 4,
        "trainer.threads": 1,
        "trainer.report_to": "[]",
        "trainer.max_grad_norm": 0,
        "sampling.k": K,
        "sampling.max_new_tokens": 48,
        **extra,
    }
    cfg = from_dict(TrainConfig, apply_overrides({}, [f"{k}={v}" for k, v in values.items()]))
    console = Console(quiet=True)
    return build_trainer(cfg, run_dir, resolve_data(cfg, console), console)


def fixed_trainer(manifest: str, model: str, run_dir: Path, **extra):
    """A trainer whose rollouts and rewards are functions of the studies and texts."""
    from orapo.model.policy import Rollouts

    trainer = tiny_trainer(manifest, model, run_dir, **extra)
    policy, current = trainer.policy, {}

    def rollout(prompts, sampling):
        texts = []
        for report in current["reports"]:  # prefixes of 1 to 12 words: lengths differ
            words = report.split()
            texts += [" ".join(words[: 1 + (len(report) + 5 * j) % 12]) for j in range(K)]
        ids, mask = policy.encode_completions(texts, max_tokens=sampling.max_new_tokens)
        return Rollouts(prompts, K, ids, mask, texts, torch.zeros(len(texts), dtype=torch.bool))

    policy.rollout = rollout
    trainer.reward_fn = lambda completions, **columns: [reward(t) for t in completions]
    next_batch = trainer.next_batch

    def next_batch_with_reports():
        batch = next_batch()
        current["reports"] = batch.references
        return batch

    trainer.next_batch = next_batch_with_reports
    return trainer


def applied_gradients(trainer) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Run one step; the gradients the (first) optimizer step applied, and the step's metrics."""
    params = trainer.policy.trainable_parameters()
    captured: list[torch.Tensor] = []
    step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        if not captured:
            captured.extend(
                torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params
            )
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    metrics = trainer.train_step(trainer.next_batch())
    return captured, metrics


def torchrun(n: int, *args: str) -> subprocess.CompletedProcess:
    """Run this script with ``args`` as ``n`` CPU processes (gloo) under torchrun."""
    here = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(n), str(here / "fixed_step.py"), *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def main(argv: list[str]) -> None:
    manifest, model, out, *modes = argv
    results, is_main = {}, True
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    for mode in modes:
        run_dir = Path(out).parent / f"run-{mode}"
        if mode == "validate":
            trainer = tiny_trainer(manifest, model, run_dir)
            result = trainer.validate(trainer.data.test, "test")
            results[mode] = {k: result[k] for k in ("summary", "predictions", "metrics") if result}
        else:
            trainer = fixed_trainer(manifest, model, run_dir, **{"algorithm.mode": mode})
            results[mode] = applied_gradients(trainer)[0]
        is_main = trainer.acc.is_main_process
        results["processes"] = trainer.acc.num_processes
        trainer.acc.wait_for_everyone()
    if is_main:
        torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1:])
