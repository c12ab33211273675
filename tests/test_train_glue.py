"""The glue of one training step, not just its parts: with fixed rollouts and rewards, the
gradient ``Trainer.train_step`` accumulates equals ``(1 - w) * grad(GRPO) + w * grad(DPO)``
computed from the pure functions of ``orapo.algorithms`` on the same policy (over micro-batches,
each mean weighted by its share of the batch's units: sequences or tokens, and DPO pairs)."""

from __future__ import annotations

import pytest
import torch

from fixed_step import tiny_trainer
from helpers import tiny_world
from orapo import algorithms as alg
from orapo.model.policy import Rollouts

pytestmark = pytest.mark.slow

K = 2
#: B = 4 groups of K = 2: all zero (two DPO negatives), a spread, one zero, all equal.
REWARDS = [0.0, 0.0, 0.5, 1.0, 0.0, 0.3, 1.0, 1.0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"))


def make_trainer(world, run_dir, **extra):
    manifest, model = world
    extra = {"sampling.max_new_tokens": 8, **extra}
    return tiny_trainer(str(manifest), str(model), run_dir, **extra)


def grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"trainer.grad_accum": 2, "algorithm.loss_reduction": "grpo", "algorithm.kl_beta": 0.1},
        {"algorithm.dpo_length_normalize": "true", "algorithm.dpo_negatives": "all"},
    ],
    ids=["dapo", "grad-accum-2-grpo-kl", "dpo-normalised-all"],
)
def test_step_gradient_is_the_mix_of_the_pure_losses(world, tmp_path, extra):
    trainer = make_trainer(world, tmp_path / "run", **extra)
    cfg, a, policy = trainer.cfg, trainer.cfg.algorithm, trainer.policy
    batch = trainer.next_batch()
    prompts = policy.prompt_batch(batch.images)
    torch.manual_seed(0)
    fixed: Rollouts = policy.rollout(prompts, cfg.sampling)
    policy.rollout = lambda prompts, sampling: fixed  # the step samples nothing new
    trainer.reward_fn = lambda completions, **columns: list(REWARDS)
    params = policy.trainable_parameters()
    captured: list[torch.Tensor] = []

    def capture_instead_of_stepping() -> None:
        captured.extend(torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params)
        trainer.optimizer.zero_grad(set_to_none=True)

    trainer.optimizer_step = capture_instead_of_stepping
    metrics = trainer.train_step(batch)

    # The same step from the pure functions: ZRR -> w, advantages, negatives, the two losses.
    rewards = alg.rewards_to_tensor(REWARDS)
    w = alg.mixing_weight(alg.zero_reward_rate(rewards, K))  # the controller's first EMA
    assert metrics["mix/w"] == pytest.approx(w) and 0 < w < 1
    advantages = alg.group_advantages(rewards, K, scale=a.advantage_scale)
    negatives = alg.select_negatives(rewards, a.dpo_negatives)
    chosen_ids, chosen_mask = policy.encode_completions(
        batch.references, max_tokens=cfg.sampling.max_new_tokens
    )
    parts = trainer.micro_batches(len(batch.studies))
    rows_of = [torch.tensor([i * K + j for i in images for j in range(K)]) for images in parts]
    per_token = a.loss_reduction == "dapo"
    units = [float(fixed.completion_mask[r].sum()) if per_token else len(r) for r in rows_of]
    pairs = [float(negatives[r].sum()) for r in rows_of]
    g_grpo = [torch.zeros_like(p) for p in params]
    g_dpo = [torch.zeros_like(p) for p in params]
    for images, rows, u, n_pairs in zip(parts, rows_of, units, pairs, strict=True):
        sub = prompts.select(images)
        ids, mask = fixed.completion_ids[rows], fixed.completion_mask[rows]
        rollout_index = torch.arange(len(images)).repeat_interleave(K)
        chosen = (chosen_ids[images], chosen_mask[images], torch.arange(len(images)))
        logps = policy.completion_logprobs(sub, ids, mask, rollout_index)  # (n, T)
        chosen_logps = policy.completion_logprobs(sub, *chosen)  # (b, Tc)
        with torch.no_grad():
            ref = policy.completion_logprobs(sub, ids, mask, rollout_index, reference=True)
            chosen_ref = policy.completion_logprobs(sub, *chosen, reference=True)
        l_grpo, _ = alg.grpo_loss(
            logps,
            None,
            advantages[rows],
            mask,
            reduction=a.loss_reduction,
            max_completion_length=cfg.sampling.max_new_tokens,
            eps_low=a.clip_eps_low,
            eps_high=a.clip_eps_high,
            beta=a.kl_beta,
            ref_logps=ref if a.kl_beta > 0 else None,
        )
        norm = a.dpo_length_normalize
        l_dpo, _ = alg.dpo_loss(
            alg.sequence_logps(chosen_logps, chosen[1], norm),
            alg.sequence_logps(chosen_ref, chosen[1], norm),
            alg.sequence_logps(logps, mask, norm),
            alg.sequence_logps(ref, mask, norm),
            negatives[rows],
            beta=a.dpo_beta,
        )
        for total, g in zip(g_grpo, grads(l_grpo, params), strict=True):
            total += 0 if g is None else g * u / sum(units)
        for total, g in zip(g_dpo, grads(l_dpo, params), strict=True):
            total += 0 if g is None else g * n_pairs / sum(pairs)

    assert len(captured) == len(params)
    changed = 0
    for got, gg, gd in zip(captured, g_grpo, g_dpo, strict=True):
        want = (1 - w) * gg + w * gd
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        changed += bool(want.abs().max() > 0)
    assert changed > len(params) // 2  # the check is not vacuous: most parameters get a gradient
    assert any(bool(g.abs().max() > 0) for g in g_dpo)  # and the DPO term contributes


def test_rollouts_merge_takes_groups_in_order_and_pads():
    def rollouts(ids: list[list[int]], texts: list[str], truncated: bool = True) -> Rollouts:
        t = torch.tensor(ids)
        flags = torch.tensor([False] * len(ids)) if truncated else None
        return Rollouts(None, K, t, (t > 0).long(), texts, flags)  # type: ignore[arg-type]

    a = rollouts([[1, 2, 0], [3, 0, 0], [4, 5, 6], [7, 0, 0]], ["a0", "a1", "a2", "a3"])
    b = rollouts([[8], [9]], ["b0", "b1"], truncated=False)
    assert a.group(1) == slice(2, 4)
    merged = Rollouts.merge([(b, 0), (a, 1)], prompts="P", pad_token_id=0)  # type: ignore[arg-type]
    assert merged.prompts == "P" and merged.k == K
    assert merged.completion_ids.tolist() == [[8, 0, 0], [9, 0, 0], [4, 5, 6], [7, 0, 0]]
    assert merged.completion_mask.tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]]
    assert merged.texts == ["b0", "b1", "a2", "a3"]
    assert merged.truncated is None  # b has none
    assert Rollouts.merge([(a, 1), (a, 0)], "P", 0).truncated.tolist() == [False] * 4  # type: ignore[arg-type, union-attr]


def test_step_logs_the_reward_details_and_each_metric_once(world, tmp_path):
    """FactS's own metrics (precision, recall, F_beta of the step's rollouts) reach the log;
    ``mix/w`` is the weight the loss used (0 under pure GRPO, whatever the controller holds)."""
    trainer = make_trainer(world, tmp_path / "run", **{"algorithm.mode": "grpo"})
    metrics = trainer.train_step(trainer.next_batch())
    for key in ("precision", "recall", "f_beta", "failed"):
        assert f"reward/facts_{key}" in metrics
    assert metrics["reward/facts_failed"] == 0.0
    assert metrics["mix/w"] == 0.0 and trainer.controller.weight() > 0
    assert metrics["zrr/raw"] == trainer.controller.ema  # the first step's EMA is its ZRR
    assert metrics["reward/missing_total"] == 0.0
    assert metrics["rollout/generated_total"] == 4 * K
