"""CPU smoke runs of `orapo train` on a tiny model and world: the real entry point end to end,
exact resume, failures, and the 2-process (gloo) path against one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import tiny_world
from orapo.cli import app
from orapo.config_io import apply_overrides, from_dict
from orapo.train.config import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 48-study synthetic world at 56 px and an untrained tiny demo model."""
    return tiny_world(tmp_path_factory.mktemp("world"))


def overrides(world, **extra) -> list[str]:
    manifest, model = world
    base = {
        "data.manifest": str(manifest),
        "model.name_or_path": str(model),
        "model.lora.train_vision": "false",
        "data.train_size": 16,
        "data.val_size": 4,
        "data.test_size": 8,
        "trainer.batch_size": 4,
        "trainer.lr": 0.01,
        "trainer.warmup_steps": 0,
        "trainer.eval_every": 0,
        "trainer.threads": 1,
        "trainer.report_to": "[]",
        "sampling.k": 2,
        "sampling.max_new_tokens": 12,
        "eval.max_new_tokens": 12,
        "eval.examples": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def config(world, **extra) -> TrainConfig:
    return from_dict(TrainConfig, apply_overrides({}, overrides(world, **extra)))


def state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_train_cli_end_to_end(world, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--out",
        str(out),
        *overrides(world, **{"trainer.steps": 3, "trainer.save_every": 2, "trainer.eval_every": 2}),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Clinical P/R/F1" in result.output

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps"] == 3
    for key in ("base", "final"):
        assert 0.0 <= summary[key]["f1"] <= 1.0
        assert summary[key]["protocol"] == "positive/all14/micro"
    assert summary["wall_seconds"] > 0
    assert Path(summary["model_dir"]) == out / "model"
    assert (out / "config.yaml").is_file()
    assert (out / "eval-final" / "metrics.json").is_file()
    # Each result file names the model that produced it.
    final_metrics = json.loads((out / "eval-final" / "metrics.json").read_text())
    assert final_metrics["model"] == str(out / "model")
    base_metrics = json.loads((out / "eval-base" / "metrics.json").read_text())
    assert base_metrics["model"] == str(world[1])
    # The grounding check and the image-blind references are in the summary and the table.
    shuffled = summary["final_shuffled_images"]
    assert 0.0 <= shuffled["f1"] <= 1.0 and shuffled["n"] == summary["final"]["n"]
    assert (out / "eval-final-shuffled" / "metrics.json").is_file()
    refs = summary["references"]
    assert set(refs) == {"best_fixed_report", "all_positive", "majority"}
    assert refs["all_positive"]["recall"] == 1.0
    assert "shuffled" in result.output and "image-blind" in result.output
    assert {p.name for p in (out / "plots").iterdir()} >= {"reward.png", "zrr.png", "w.png"}

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("reward/mean", "zrr/raw", "zrr/ema", "mix/w", "loss/grpo", "loss/dpo"):
        assert key in rows[0], key
    assert 0.05 <= rows[0]["mix/w"] <= 0.15
    assert "val/f1" in rows[1]

    # The saved policy opens like any checkpoint, and every trained tensor moved.
    base, trained = state_dict(Path(world[1])), state_dict(out / "model")
    language = [k for k in trained if "visual" not in k]
    assert language
    unchanged = [k for k in language if torch.equal(base[k], trained[k])]
    assert not unchanged, unchanged
    assert all(torch.equal(base[k], trained[k]) for k in trained if "visual" in k)  # frozen
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--model",
            str(out / "model"),
            "--input",
            str(world[0]),
            "--split",
            "test",
            "--max-new-tokens",
            "8",
            "-o",
            str(tmp_path / "gen.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    # A new run into this finished run's folder is refused before any work: one line, and the
    # old log is left as it was (it would otherwise get a second step 1, 2, 3).
    log_before = (out / "metrics.jsonl").read_text()
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert f"{out} already holds a run" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output
    assert (out / "metrics.jsonl").read_text() == log_before


@pytest.mark.parametrize("mode", ["grpo", "sft"])
def test_ablation_modes_run(world, tmp_path, mode):
    from orapo.train.run import run_training

    cfg = config(world, **{"algorithm.mode": mode, "trainer.steps": 2, "eval.before": False})
    summary = run_training(cfg, tmp_path / mode)
    rows = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
    if mode == "grpo":
        assert all(r["mix/w"] == 0.0 for r in rows) and "loss/dpo" in rows[0]
        assert rows[0]["loss/dpo"] is None  # not computed at w = 0
    else:
        assert "loss/sft" in rows[0] and "zrr/raw" not in rows[0]
    assert "base" not in summary and "final" in summary


def _interrupt_at(step: int):
    from orapo.train.loop import Trainer

    original = Trainer.next_batch

    def next_batch(self):
        if self.step == step:
            raise KeyboardInterrupt
        return original(self)

    return next_batch


@pytest.mark.parametrize("lose_last_checkpoint", [False, True])
def test_resume_reproduces_uninterrupted_run(world, tmp_path, monkeypatch, lose_last_checkpoint):
    """Ctrl-C at step 3 (checkpoint saved), or a kill (only the step-2 checkpoint), then
    --resume: the final parameters equal those of an uninterrupted run."""
    from orapo.train.loop import Trainer
    from orapo.train.run import run_training

    extra = {"trainer.steps": 4, "trainer.save_every": 2, "eval.before": False, "eval.after": False}
    run_training(config(world, **extra), tmp_path / "straight")

    interrupted = tmp_path / "interrupted"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "next_batch", _interrupt_at(3))
        with pytest.raises(KeyboardInterrupt):
            run_training(config(world, **extra), interrupted)
    assert (interrupted / "checkpoints" / "step-000003").is_dir()
    saved = state_dict(interrupted / "checkpoints" / "step-000003")
    assert saved and not any("visual" in k for k in saved)  # trainable weights only
    if lose_last_checkpoint:
        shutil.rmtree(interrupted / "checkpoints" / "step-000003")
    summary = run_training(config(world, **extra), interrupted, resume=True)
    assert summary["steps"] == 4

    a, b = state_dict(tmp_path / "straight" / "model"), state_dict(interrupted / "model")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    rows = [json.loads(x) for x in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_nonfinite_loss_stops_with_checkpoint_intact(world, tmp_path, monkeypatch):
    from orapo import algorithms as alg
    from orapo.train import loop
    from orapo.train.loop import NonFiniteLossError
    from orapo.train.run import run_training

    real = alg.orapo_loss
    calls = {"n": 0}

    def poisoned(l_grpo, l_dpo, w):
        calls["n"] += 1
        loss, metrics = real(l_grpo, l_dpo, w)
        return (loss * float("nan") if calls["n"] == 3 else loss), metrics

    monkeypatch.setattr(loop.alg, "orapo_loss", poisoned)
    cfg = config(world, **{"trainer.steps": 4, "trainer.save_every": 2, "eval.before": False})
    with pytest.raises(NonFiniteLossError, match="step 3.*last good checkpoint"):
        run_training(cfg, tmp_path / "nan")
    checkpoints = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir())
    assert checkpoints == ["step-000002"]


def test_missing_rewards_are_counted_not_fatal(world, tmp_path, monkeypatch):
    from orapo.rewards import REWARDS
    from orapo.train.run import run_training

    def flaky(completions, **columns):
        return [None if i % 3 == 0 else float(len(c) % 2) for i, c in enumerate(completions)]

    monkeypatch.setitem(REWARDS._items, "flaky", lambda **_: flaky)
    cfg = config(
        world,
        **{
            "trainer.steps": 2,
            "algorithm.reward": "flaky",
            "eval.before": False,
            "eval.after": False,
        },
    )
    summary = run_training(cfg, tmp_path / "flaky")
    assert summary["missing_rewards"] == 2 * 3  # rollouts 0, 3, 6 of the 8 in each step
    rows = [json.loads(x) for x in (tmp_path / "flaky" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["reward/missing_total"] == summary["missing_rewards"]


def torchrun_orapo(n: int, *args: str) -> list[str]:
    """``orapo ARGS`` as ``n`` CPU processes (gloo). torchrun, not ``accelerate launch --cpu``:
    on CPU the latter starts one process unless it goes through mpirun."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
        "-m", "orapo", *args,
    ]  # fmt: skip


def test_two_processes_match_one(world, tmp_path):
    """torchrun with 2 CPU processes (gloo) gives the same update as 1 process on the
    same global batch (SFT mode: the step is deterministic, unlike sampled rollouts)."""
    extra = {
        "algorithm.mode": "sft",
        "trainer.steps": 2,
        "eval.before": False,
        "eval.after": False,
        "trainer.lr": 0.001,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"p{n}"
        done = subprocess.run(
            torchrun_orapo(n, "train", "--out", str(outs[n]), *overrides(world, **extra)),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert json.loads((outs[n] / "summary.json").read_text())["processes"] == n
    a, b = state_dict(outs[1] / "model"), state_dict(outs[2] / "model")
    base = state_dict(Path(world[1]))
    moved = [k for k in a if not torch.equal(a[k], base[k])]
    assert moved
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


def test_two_processes_dynamic_sampling_draw_together(world, tmp_path):
    """Under 2 processes, dynamic sampling's refills stay in step (no hang, one log)."""
    extra = {
        "algorithm.mode": "grpo",
        "algorithm.dynamic_sampling": "true",
        "algorithm.max_refill_rounds": 1,
        "trainer.steps": 2,
        "eval.before": False,
        "eval.after": False,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = torchrun_orapo(2, "train", "--out", str(tmp_path / "run"), *overrides(world, **extra))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["processes"] == 2
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # 4 images x K = 2 per draw over both processes, refills included
        assert r["rollout/generated_total"] == sum(
            8 * (1 + x["dynamic/refills"]) for x in rows if x["step"] <= r["step"]
        )


def test_bad_image_is_named_or_skipped_and_counted(world, tmp_path):
    from orapo.manifest import read_manifest, write_manifest
    from orapo.train.data import ImageError
    from orapo.train.run import run_training

    manifest, _ = world
    studies = read_manifest(manifest).studies
    broken = studies[0]
    root = manifest.parent
    # A copy of the manifest whose first training study points at a missing image.
    copy = [s.to_json() for s in studies]
    copy[0]["images"] = [str(root / "images" / "missing.png")]
    for s in copy[1:]:
        s["images"] = [str(root / p) for p in s["images"]]
    path = tmp_path / "m.jsonl"
    write_manifest(path, copy)
    extra = {
        "data.manifest": str(path),
        "data.train_size": "null",
        "trainer.steps": 1,
        "eval.before": False,
        "eval.after": False,
    }
    with pytest.raises(ImageError, match=f"study '{broken.id}'.*missing.png does not exist"):
        run_training(config(world, **extra), tmp_path / "strict")
    summary = run_training(
        config(world, **{**extra, "data.skip_bad_images": True}), tmp_path / "skip"
    )
    assert summary["steps"] == 1
    assert summary["skipped_images"] == {"train": {"missing": 1}}


def test_dynamic_sampling_refills_and_budget_stops(world, tmp_path, monkeypatch):
    """DAPO's dynamic sampling keeps only groups whose rewards differ; the rollout budget
    (refills included) ends the run before trainer.steps."""
    from orapo.rewards import REWARDS
    from orapo.train.run import run_training

    returned_none = []

    def half_flat(completions, reference, **columns):
        # the same reward for both rollouts of some studies (no signal), 0 / 1 for the others;
        # a missing reward for some rollouts, refills included, which must all be counted
        out = [
            None if len(ref) % 7 == 0 and i % 2 else 0.0 if len(ref) % 3 == 0 else float(i % 2)
            for i, ref in enumerate(reference)
        ]
        returned_none.append(out.count(None))
        return out

    monkeypatch.setitem(REWARDS._items, "half_flat", lambda **_: half_flat)
    cfg = config(
        world,
        **{
            "trainer.steps": 10,
            "trainer.rollout_budget": 40,
            "algorithm.reward": "half_flat",
            "algorithm.dynamic_sampling": "true",
            "algorithm.max_refill_rounds": 2,
            "eval.before": False,
            "eval.after": False,
        },
    )
    summary = run_training(cfg, tmp_path / "dapo")
    rows = [json.loads(x) for x in (tmp_path / "dapo" / "metrics.jsonl").read_text().splitlines()]
    generated = [r["rollout/generated_total"] for r in rows]
    assert generated[-1] >= 40 and generated[-2] < 40  # stopped by the budget
    assert summary["steps"] == len(rows) < 10
    assert summary["missing_rewards"] == sum(returned_none) > 0
    draws = [round((b - a) / 8) for a, b in zip([0.0, *generated[:-1]], generated, strict=True)]
    assert draws == [1 + r["dynamic/refills"] for r in rows]  # 4 images x K = 2 per draw
    assert any(r["dynamic/refills"] > 0 for r in rows)
    for r in rows:  # a full batch of informative groups unless the refills ran out
        assert r["dynamic/informative"] == 1.0 or r["dynamic/refills"] == 2
