"""Checkpoints that resume exactly, written atomically.

A checkpoint is a folder ``RUN_DIR/checkpoints/step-000040/`` holding accelerate's state
(the *trainable* weights only: the LoRA adapter, or what full fine-tuning updates; optimizer,
scheduler, and the random states of python, numpy and torch for every process) plus
``trainer_state.json`` (step, sampler position, ZRR controller). Frozen weights (a LoRA base,
a frozen vision tower) come from the model the run starts from, so a 3B LoRA checkpoint holds
megabytes of adapter instead of gigabytes of base weights.
It is written under a temporary name and renamed when complete, so a run killed while saving
leaves the previous checkpoint intact and no half-written one that looks valid.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from orapo.atomic import atomic_write_text

STATE_FILE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"  #: the folder of a run's checkpoints


def save_trainable_only(accelerator: Any) -> None:
    """Make ``accelerator.save_state`` write only parameters that require grad."""

    def hook(models: list, weights: list, output_dir: str) -> None:
        for i, model in enumerate(models):
            keep = {name for name, p in model.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in weights[i].items() if k in keep}

    accelerator.register_save_state_pre_hook(hook)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS_DIR / f"step-{step:06d}"


def save_checkpoint(
    accelerator: Any, run_dir: Path, step: int, trainer_state: dict, keep: int
) -> Path:
    """Save a checkpoint for ``step`` (all processes call this; the main one writes files)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        atomic_write_text(tmp / STATE_FILE, json.dumps(trainer_state, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _prune(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def _prune(run_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are not complete)."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(accelerator: Any, path: Path) -> dict:
    """Restore accelerate's state from ``path`` and return the trainer state."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    # strict=False: the checkpoint holds the trainable weights only (save_trainable_only).
    accelerator.load_state(str(path), strict=False)
    return json.loads(state_file.read_text(encoding="utf-8"))
