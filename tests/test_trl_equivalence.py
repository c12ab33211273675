"""Same rollouts, same update: one ``OraPOTrainer`` step (TRL) and one orapo ``Trainer`` step in
OraPO mode on the same studies and injected completions give the same loss and gradients."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from fixed_step import K, fixed_trainer  # noqa: E402
from helpers import load_benchmark, tiny_world  # noqa: E402

ZERO_STUDIES = 2  # the batch's first two studies get reward 0 on every rollout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("trl_eq"))


def make_reward(zero_references: set[str]):
    """0 for every rollout of the listed studies (zero-reward groups, DPO negatives), else a
    value of the rollout's word count (they differ within a group)."""

    def reward(completions, reference, **_):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [
            0.0 if ref in zero_references else (len(t.split()) % 5 + 1) / 5
            for t, ref in zip(texts, reference, strict=True)
        ]

    reward.__name__ = "fixed"
    return reward


def orapo_step(manifest, model, run_dir, zero: bool, grad_accum: int = 1):
    """orapo's step (tests/fixed_step.py) with the reward above: its rollouts, loss, gradients
    by parameter name, and metrics."""
    from accelerate.state import GradientState

    GradientState._reset_state()  # a previous test's TRL run leaves its dataloader state there
    trainer = fixed_trainer(
        str(manifest), str(model), run_dir,
        **{"algorithm.mode": "orapo", "trainer.grad_accum": grad_accum},
    )  # fmt: skip
    trainer.policy.suppressed_token_ids = []  # TRL scores the full vocabulary
    params = dict(trainer.policy.model.named_parameters())
    names = [n for n, p in params.items() if p.requires_grad]
    batch = trainer.next_batch()
    zero_refs = set(batch.references[:ZERO_STUDIES]) if zero else set()
    trainer.reward_fn = make_reward(zero_refs)
    rollouts = trainer.policy.rollout(
        trainer.policy.prompt_batch(batch.images), trainer.cfg.sampling
    )
    # The texts TRL decodes from the (possibly truncated) ids, so both sides score the same.
    rollouts.texts = trainer.policy.decode(rollouts.completion_ids, rollouts.completion_mask)
    trainer.policy.rollout = lambda prompts, sampling: rollouts  # the same again in train_step
    captured = {}
    step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        captured.update({n: params[n].grad.clone() for n in names})
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    metrics = trainer.train_step(batch)
    return trainer, rollouts, zero_refs, captured, metrics


def trl_step(trainer, rollouts, zero_refs, out_dir, grad_accum: int = 1):
    """One OraPOTrainer step on the same studies with ``rollouts`` injected as TRL's
    completions: (loss, gradients by parameter name, TRL's logged metrics)."""
    from transformers import TrainerCallback

    from orapo.model.config import ModelConfig
    from orapo.model.policy import END_OF_TURN, load_policy

    bench = load_benchmark("step_vs_trl")
    dataset = bench.trl_dataset(trainer, rounds=1)
    bench.check_same_prompt(trainer.policy, dataset)
    policy = load_policy(
        ModelConfig(name_or_path=trainer.cfg.model.name_or_path, device="cpu"), trainable=True
    )
    policy.tokenizer.eos_token = END_OF_TURN  # TRL's completions (and ground truth) end there
    rows = [ids[m.bool()].tolist() for ids, m in zip(
        rollouts.completion_ids, rollouts.completion_mask, strict=True)]  # fmt: skip
    params = dict(policy.model.named_parameters())
    captured: dict[str, torch.Tensor] = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            captured.update({n: p.grad.clone() for n, p in params.items() if p.requires_grad})

    a = trainer.cfg.algorithm
    trl = bench.grpo_trainer(
        policy.model, policy.processor, dataset, make_reward(zero_refs), Capture(),
        orapo=True, output_dir=str(out_dir), use_cpu=True, bf16=False,
        per_device_train_batch_size=len(rows) // grad_accum, num_generations=K,
        max_completion_length=48,
        scale_rewards="group", epsilon=0.2, learning_rate=1e-3, weight_decay=0.0,
        max_grad_norm=0.0, optim="adamw_torch", activation_checkpointing=False, max_steps=1,
        dpo_beta=a.dpo_beta, zrr_alpha=a.zrr_alpha, w_min=a.w_min, w_max=a.w_max,
        gamma=a.gamma, logging_strategy="steps", logging_steps=1,
        gradient_accumulation_steps=grad_accum,
    )  # fmt: skip
    trl._generate_single_turn = lambda prompt_ids, *args, **kwargs: (rows, None)
    losses = []
    compute = trl._compute_loss

    def record(model, inputs):
        loss = compute(model, inputs)
        losses.append(float(loss.detach()))
        return loss

    trl._compute_loss = record
    trl.train()
    return sum(losses), captured, trl.state.log_history


@pytest.mark.slow
@pytest.mark.parametrize("zero", [True, False], ids=["zero-reward-groups", "no-zero-groups"])
def test_orapo_trainer_step_equals_orapo_step(world, tmp_path, zero):
    manifest, model = world
    trainer, rollouts, zero_refs, grads, metrics = orapo_step(
        manifest, model, tmp_path / "orapo", zero
    )
    assert (metrics["dpo/pairs"] > 0) == zero
    loss, trl_grads, logs = trl_step(trainer, rollouts, zero_refs, tmp_path / "trl")
    assert loss == pytest.approx(metrics["loss/total"], abs=1e-5)
    assert set(trl_grads) == set(grads)
    for name, g in grads.items():
        torch.testing.assert_close(trl_grads[name], g, atol=1e-5, rtol=0.0, msg=name)
    logged = logs[0]
    assert logged["zrr/raw"] == pytest.approx(metrics["zrr/raw"])
    assert logged["zrr/ema"] == pytest.approx(metrics["zrr/ema"])
    assert logged["mix/w"] == pytest.approx(metrics["mix/w"])
    if zero:
        assert logged["loss/dpo"] == pytest.approx(metrics["loss/dpo"], abs=1e-5)


@pytest.mark.slow
def test_orapo_trainer_accumulated_step_equals_orapo_step(world, tmp_path):
    """2 micro-batches on both sides (TRL shuffles the rollouts between its micro-batches, so a
    group's rollouts and DPO pairs are split differently): the same gradients."""
    manifest, model = world
    trainer, rollouts, zero_refs, grads, metrics = orapo_step(
        manifest, model, tmp_path / "orapo", zero=True, grad_accum=2
    )
    _, trl_grads, _ = trl_step(trainer, rollouts, zero_refs, tmp_path / "trl", grad_accum=2)
    for name, g in grads.items():
        torch.testing.assert_close(trl_grads[name], g, atol=1e-5, rtol=0.0, msg=name)
