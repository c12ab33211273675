"""Micro-batches and processes apply the update of one batch (issue 16, item 3).

Each loss of a step is a mean over units of the global batch (GRPO's tokens or sequences, DPO's
pairs, SFT's tokens): ``grad_accum=2`` and 2 processes (gloo) give the gradient of
``grad_accum=1`` on 1 process, for GRPO (``dapo``: a token mean over micro-batches of different
lengths) and OraPO (DPO pairs spread unevenly). Rollouts and rewards are fixed functions of the
studies (tests/fixed_step.py), so every run sees the same global batch.
"""

from __future__ import annotations

import pytest
import torch

from fixed_step import applied_gradients, fixed_trainer, torchrun
from helpers import tiny_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"))


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    moved = 0
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
        moved += bool(w.abs().max() > 0)
    assert moved > len(want) // 2  # not vacuous


@pytest.mark.parametrize("mode", ["grpo", "orapo", "sft"])
def test_grad_accum_2_applies_the_update_of_1(world, tmp_path, mode):
    manifest, model = map(str, world)
    runs = {}
    for parts in (1, 2):
        trainer = fixed_trainer(
            manifest,
            model,
            tmp_path / f"ga{parts}",
            **{"algorithm.mode": mode, "trainer.grad_accum": parts},
        )
        runs[parts] = applied_gradients(trainer)
    _assert_same(runs[2][0], runs[1][0])
    if mode == "orapo":  # the DPO term is on, and its pairs differ between micro-batches
        assert runs[1][1]["mix/w"] > 0 and runs[1][1]["dpo/pairs"] > 0


def test_accumulation_syncs_and_steps_only_on_the_last_micro_batch(world, tmp_path):
    """Through accelerate's ``accumulate``: the first micro-batch's backward runs without
    gradient sync (DeepSpeed does not step there), the last with it; one optimizer step per
    inner iteration; ``mu > 1`` metrics are means over every inner iteration."""
    manifest, model = map(str, world)
    trainer = fixed_trainer(
        manifest,
        model,
        tmp_path / "run",
        **{
            "algorithm.mode": "grpo",
            "trainer.grad_accum": 2,
            "trainer.mu": 2,
            "trainer.lr": 0.01,
            "trainer.warmup_steps": 0,
        },
    )
    syncs, steps, seen = [], [], []
    backward, step, loss = trainer.acc.backward, trainer.optimizer.step, trainer.loss
    trainer.acc.backward = lambda x: (syncs.append(trainer.acc.sync_gradients), backward(x))
    trainer.optimizer.step = lambda: (steps.append(len(syncs)), step())

    def record(*args):
        out = loss(*args)
        seen.append(out[1])
        return out

    trainer.loss = record
    metrics = trainer.train_step(trainer.next_batch())
    assert syncs == [False, True, False, True] and steps == [2, 4]
    assert len(seen) == 4  # mu = 2 iterations x 2 micro-batches
    ratios = [m["grpo/ratio_mean"] for m in seen]
    assert ratios[:2] == pytest.approx([1.0, 1.0]) and abs(ratios[2] - 1) > 1e-4
    assert metrics["grpo/ratio_mean"] == pytest.approx(sum(ratios) / 4)


def test_split_evenly_needs_one_image_per_micro_batch():
    from orapo.train.loop import split_evenly

    assert split_evenly(4, 2) == [[0, 1], [2, 3]]
    assert split_evenly(5, 1) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="grad_accum=3"):
        split_evenly(2, 3)


def test_two_processes_apply_the_update_of_one(world, tmp_path):
    """2 CPU processes (gloo, started by torchrun) give the gradient of 1 process on the same
    global batch, for GRPO and OraPO."""
    manifest, model = map(str, world)
    got = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}" / "grads.pt"
        out.parent.mkdir()
        done = torchrun(n, manifest, model, str(out), "grpo", "orapo")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        got[n] = torch.load(out)
        assert got[n]["processes"] == n
    for mode in ("grpo", "orapo"):
        _assert_same(got[2][mode], got[1][mode])


def test_every_loss_reduction_says_what_it_averages_over():
    from orapo.algorithms.grpo import REDUCTIONS
    from orapo.train.loop import REDUCTION_UNITS

    assert set(REDUCTION_UNITS) == set(REDUCTIONS.names())
    assert set(REDUCTION_UNITS.values()) == {"tokens", "sequences"}
