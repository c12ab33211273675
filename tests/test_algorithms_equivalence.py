"""Equivalence: readable loop versions and TRL 1.16's code against the vectorised functions,
on random inputs (float64, agreement to 1e-9 unless a peer logs in float32), and gradients
(where they flow, and where they must not)."""

from __future__ import annotations

import collections
import math
import statistics
import types

import pytest
import torch

from orapo import algorithms as alg

torch.set_num_threads(1)
F64 = torch.float64
SEEDS = range(5)


def random_rewards(gen: torch.Generator, b: int, k: int) -> torch.Tensor:
    """Rewards with the cases that matter: all-zero groups, ties, a few missing (NaN)."""
    r = torch.rand(b * k, generator=gen, dtype=F64)
    r[torch.rand(b * k, generator=gen) < 0.3] = 0.0
    r.view(b, k)[0] = 0.0  # one all-zero group
    r[torch.rand(b * k, generator=gen) < 0.1] = math.nan
    return r


# -- loop versions --------------------------------------------------------------------------


def loop_advantages(rewards: list[float], k: int, scale: str, eps: float) -> list[float]:
    out = []
    valid_all = [x for x in rewards if not math.isnan(x)]
    batch_std = statistics.stdev(valid_all) if len(valid_all) > 1 else 0.0
    for g in range(len(rewards) // k):
        group = rewards[g * k : (g + 1) * k]
        valid = [x for x in group if not math.isnan(x)]
        mean = sum(valid) / len(valid) if valid else 0.0
        std = {"group": statistics.stdev(valid) if len(valid) > 1 else 0.0, "batch": batch_std}
        for x in group:
            if math.isnan(x):
                out.append(0.0)
            elif scale == "none":
                out.append(x - mean)
            else:
                d = std[scale] + eps
                out.append((x - mean) / d if d > 0 else 0.0)
    return out


def loop_grpo(logps, old, ref, adv, mask, eps_low, eps_high, beta, reduction, max_len):
    n, t = len(logps), len(logps[0])
    per_seq, total, count = [], 0.0, 0
    for i in range(n):
        seq_sum, seq_count = 0.0, 0
        for j in range(t):
            if not mask[i][j]:
                continue
            ratio = math.exp(logps[i][j] - old[i][j])
            clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
            loss = -min(ratio * adv[i], clipped * adv[i])
            d = ref[i][j] - logps[i][j]
            loss += beta * (math.exp(d) - d - 1)
            seq_sum, seq_count = seq_sum + loss, seq_count + 1
        per_seq.append(seq_sum / max(seq_count, 1))
        total, count = total + seq_sum, count + seq_count
    if reduction == "grpo":
        return sum(per_seq) / n
    if reduction == "dapo":
        return total / max(count, 1)
    return total / (n * max_len)


def loop_dpo(pc, rc, pr, rr, negatives, beta):
    b, k = len(pc), len(pr) // len(pc)
    losses = []
    for i in range(b):
        for j in range(k):
            if negatives[i * k + j]:
                h = (pc[i] - rc[i]) - (pr[i * k + j] - rr[i * k + j])
                losses.append(math.log1p(math.exp(-beta * h)))  # -log sigmoid(beta h)
    return sum(losses) / len(losses) if losses else 0.0


# -- advantages, ZRR, controller ------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_loop(seed, scale):
    gen = torch.Generator().manual_seed(seed)
    k = [2, 4, 8, 3, 5][seed]
    r = random_rewards(gen, b=6, k=k)
    ours = alg.group_advantages(r, k, scale=scale, eps=1e-4)
    expected = loop_advantages(r.tolist(), k, scale, 1e-4)
    assert torch.allclose(ours, torch.tensor(expected, dtype=F64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl_transcription(seed, scale):
    """TRL computes advantages inside GRPOTrainer._generate_and_score_completions, which needs
    a trainer; its helper ``nanstd`` is callable, so the lines around it are transcribed here."""
    from trl.trainer.utils import nanstd

    gen = torch.Generator().manual_seed(seed)
    k = 4
    rewards = random_rewards(gen, b=5, k=k)
    mean_grouped = torch.nanmean(rewards.view(-1, k), dim=1).repeat_interleave(k, dim=0)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, k), dim=1).repeat_interleave(k, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    trl_adv = rewards - mean_grouped
    if scale != "none":
        trl_adv = trl_adv / (std + 1e-4)
    trl_adv = torch.nan_to_num(trl_adv, nan=0.0)
    ours = alg.group_advantages(rewards, k, scale=scale)
    # nanstd's Bessel factor count / (count - 1) divides int tensors, so it is float32: ~1e-8
    assert torch.allclose(ours, trl_adv, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_zero_reward_rate_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    k, atol = 4, [0.0, 0.05][seed % 2]
    r = random_rewards(gen, b=9, k=k)
    groups = [r.tolist()[g * k : (g + 1) * k] for g in range(9)]
    counted = [[x for x in g if not math.isnan(x)] for g in groups]
    counted = [g for g in counted if g]
    expected = sum(all(abs(x) <= atol for x in g) for g in counted) / len(counted)
    assert alg.zero_reward_rate(r, k, atol=atol) == pytest.approx(expected, abs=1e-12)


def test_controller_matches_loop_on_random_sequence():
    gen = torch.Generator().manual_seed(0)
    zrrs = torch.rand(50, generator=gen, dtype=F64).tolist()
    for alpha in (0.5, 0.9, 0.0):
        c = alg.ZRRController(alpha=alpha, w_min=0.05, w_max=0.15, gamma=2.0)
        ema = None
        for z in zrrs:
            ema = z if ema is None else alpha * ema + (1 - alpha) * z
            c.update(z)
            assert c.ema == pytest.approx(ema, abs=1e-12)
            assert c.weight() == pytest.approx(0.05 + 0.10 * ema**2.0, abs=1e-12)


# -- GRPO -----------------------------------------------------------------------------------


def random_rollouts(seed: int, n: int = 6, t: int = 7):
    gen = torch.Generator().manual_seed(seed)
    logps = -torch.rand(n, t, generator=gen, dtype=F64) * 3
    old = logps + torch.randn(n, t, generator=gen, dtype=F64) * 0.3
    ref = logps + torch.randn(n, t, generator=gen, dtype=F64) * 0.3
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    lengths[0] = 1  # a single-token sequence
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)  # right padding
    adv = torch.randn(n, generator=gen, dtype=F64)
    return logps, old, ref, adv, mask


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("reduction", ["grpo", "dapo", "dr_grpo"])
def test_grpo_matches_loop(seed, reduction):
    logps, old, ref, adv, mask = random_rollouts(seed)
    eps_low, eps_high, beta, max_len = 0.2, 0.28, 0.04, 9
    ours, _ = alg.grpo_loss(
        logps, old, adv, mask, reduction=reduction, max_completion_length=max_len,
        eps_low=eps_low, eps_high=eps_high, beta=beta, ref_logps=ref,
    )  # fmt: skip
    expected = loop_grpo(
        logps.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(),
        eps_low, eps_high, beta, reduction, max_len,
    )  # fmt: skip
    assert float(ours) == pytest.approx(expected, abs=1e-9)


class _Accelerator:
    """Single-process stand-in for accelerate.Accelerator (identity gathers)."""

    num_processes = 1
    device = torch.device("cpu")

    def reduce(self, x, reduction="sum"):
        return x

    def gather(self, x):
        return x

    gather_for_metrics = gather


def _trl_grpo_self(logps, loss_type, beta, eps_low, eps_high, max_len):
    """What GRPOTrainer._compute_loss reads from self; the model gives fixed log-probs."""
    return types.SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0,
        aux_loss_enabled=False,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=types.SimpleNamespace(
            use_bias_correction_kl=False, delta=None, steps_per_generation=1
        ),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        _metrics={"train": collections.defaultdict(list)},
        accelerator=_Accelerator(),
        max_completion_length=max_len,
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("trl_type", "ours_name"),
    [("grpo", "grpo"), ("bnpo", "dapo"), ("dapo", "dapo"), ("dr_grpo", "dr_grpo")],
)
def test_grpo_matches_trl(seed, trl_type, ours_name):
    """TRL has no standalone GRPO loss function: we call GRPOTrainer._compute_loss unbound, with
    a minimal stand-in for the trainer whose 'model' returns fixed per-token log-probs."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    logps, old, ref, adv, mask = random_rollouts(seed)
    n, t = logps.shape
    beta, eps_low, eps_high, max_len = 0.04, 0.2, 0.28, 9
    trainer = _trl_grpo_self(logps, trl_type, beta, eps_low, eps_high, max_len)
    inputs = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, t, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    trl_loss = GRPOTrainer._compute_loss(trainer, None, inputs)
    ours, m = alg.grpo_loss(
        logps, old, adv, mask, reduction=ours_name, max_completion_length=max_len,
        eps_low=eps_low, eps_high=eps_high, beta=beta, ref_logps=ref,
    )  # fmt: skip
    assert float(ours) == pytest.approx(float(trl_loss), abs=1e-9)
    logged = trainer._metrics["train"]
    assert m["grpo/kl_ref"] == pytest.approx(logged["kl"][0], abs=1e-9)
    for ours_key, trl_key in [
        ("grpo/clip_frac_low", "clip_ratio/low_mean"),
        ("grpo/clip_frac_high", "clip_ratio/high_mean"),
        ("grpo/clip_frac", "clip_ratio/region_mean"),
    ]:  # TRL counts these in float32
        assert m[ours_key] == pytest.approx(logged[trl_key][0], abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_grpo_gradients_flow_only_into_policy_valid_tokens(seed):
    logps, old, ref, adv, mask = random_rollouts(seed)
    logps.requires_grad_()
    old.requires_grad_()
    ref.requires_grad_()
    adv.requires_grad_()
    loss, _ = alg.grpo_loss(logps, old, adv, mask, beta=0.1, ref_logps=ref)
    loss.backward()
    assert old.grad is None and ref.grad is None and adv.grad is None
    assert torch.all(logps.grad[~mask] == 0)
    assert torch.count_nonzero(logps.grad[mask]) > 0


@pytest.mark.parametrize("reduction", ["grpo", "dapo", "dr_grpo"])
def test_grpo_gradcheck(reduction):
    logps, old, ref, adv, mask = random_rollouts(3, n=3, t=4)
    old = logps + 0.05  # ratios near 1: away from the clip kinks, where gradcheck is defined

    def f(x):
        loss, _ = alg.grpo_loss(
            x, old, adv, mask, reduction=reduction, max_completion_length=4, beta=0.1,
            ref_logps=ref,
        )  # fmt: skip
        return loss

    assert torch.autograd.gradcheck(f, (logps.clone().requires_grad_(),))


# -- DPO ------------------------------------------------------------------------------------


def random_pairs(seed: int, b: int = 3, k: int = 4, t: int = 6):
    gen = torch.Generator().manual_seed(seed)
    pc = -torch.rand(b, t, generator=gen, dtype=F64) * 3
    rc = pc + torch.randn(b, t, generator=gen, dtype=F64) * 0.3
    pr = -torch.rand(b * k, t, generator=gen, dtype=F64) * 3
    rr = pr + torch.randn(b * k, t, generator=gen, dtype=F64) * 0.3
    cmask = torch.rand(b, t, generator=gen) > 0.3
    rmask = torch.rand(b * k, t, generator=gen) > 0.3
    cmask[:, 0] = rmask[:, 0] = True
    negatives = torch.rand(b * k, generator=gen) > 0.4
    negatives[:k] = False  # a prompt without negatives
    negatives[k] = True
    return pc, rc, cmask, pr, rr, rmask, negatives


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length_normalize", [False, True])
def test_dpo_matches_loop(seed, length_normalize):
    pc, rc, cmask, pr, rr, rmask, neg = random_pairs(seed)
    ours, _ = alg.dpo_loss_from_tokens(
        pc, rc, cmask, pr, rr, rmask, neg, beta=0.1, length_normalize=length_normalize
    )

    def seq(x, m):
        total = [
            sum(v for v, keep in zip(row, mr, strict=True) if keep)
            for row, mr in zip(x, m, strict=True)
        ]
        lengths = [sum(mr) for mr in m]
        return [s / n for s, n in zip(total, lengths, strict=True)] if length_normalize else total

    c, r = cmask.tolist(), rmask.tolist()
    expected = loop_dpo(
        seq(pc.tolist(), c), seq(rc.tolist(), c), seq(pr.tolist(), r), seq(rr.tolist(), r),
        neg.tolist(), 0.1,
    )  # fmt: skip
    assert float(ours) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("trl_type", "length_normalize"), [("sigmoid", False), ("sigmoid_norm", True)]
)
def test_dpo_matches_trl(seed, trl_type, length_normalize):
    """TRL has no standalone DPO loss function: we call DPOTrainer._compute_loss unbound, with a
    stand-in trainer and a 'model' returning fixed per-token log-probs, on our pairs laid out
    as TRL's [chosen; rejected] batch (one row per pair, the chosen repeated)."""
    from trl.trainer.dpo_trainer import DPOTrainer

    pc, rc, cmask, pr, rr, rmask, neg = random_pairs(seed)
    b, k = pc.shape[0], pr.shape[0] // pc.shape[0]
    t = pc.shape[1]
    bi, kj = neg.view(b, k).nonzero(as_tuple=True)
    ri = bi * k + kj
    p = len(bi)
    token_logps = torch.cat([pc[bi], pr[ri]])  # (2P, T)
    token_mask = torch.cat([cmask[bi], rmask[ri]])  # (2P, T)
    outputs = types.SimpleNamespace(
        log_probs=torch.where(token_mask, token_logps, 0.0),
        entropy=torch.zeros(2 * p, t),
        mean_logits=torch.zeros(2 * p, t),
        is_top1=torch.zeros(2 * p, t, dtype=torch.bool),
    )
    trainer = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[trl_type],
        loss_weights=[1.0],
        beta=0.1,
        use_weighting=False,
        _metrics={"train": collections.defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {  # completion_mask has one prompt column, shifted away by TRL
        "input_ids": torch.zeros(2 * p, t + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * p, t + 1, dtype=torch.long),
        "completion_mask": torch.cat(
            [torch.zeros(2 * p, 1, dtype=torch.long), token_mask.long()], 1
        ),
        "ref_chosen_logps": alg.sequence_logps(rc, cmask)[bi],
        "ref_rejected_logps": alg.sequence_logps(rr, rmask)[ri],
    }
    trl_loss = DPOTrainer._compute_loss(trainer, lambda **kw: outputs, inputs, False)
    ours, m = alg.dpo_loss_from_tokens(
        pc, rc, cmask, pr, rr, rmask, neg, beta=0.1, length_normalize=length_normalize
    )
    assert float(ours) == pytest.approx(float(trl_loss), abs=1e-9)
    if not length_normalize:  # TRL logs unnormalised rewards even for sigmoid_norm
        logged = trainer._metrics["train"]
        for ours_key, trl_key in [
            ("dpo/chosen_reward", "rewards/chosen"),
            ("dpo/rejected_reward", "rewards/rejected"),
            ("dpo/reward_margin", "rewards/margins"),
            ("dpo/accuracy", "rewards/accuracies"),
            ("dpo/chosen_logps", "logps/chosen"),
            ("dpo/rejected_logps", "logps/rejected"),
        ]:
            assert m[ours_key] == pytest.approx(logged[trl_key][0], abs=1e-9)


def test_dpo_gradients_flow_only_into_policy_pairs():
    pc, rc, cmask, pr, rr, rmask, neg = random_pairs(0)
    b, k = pc.shape[0], pr.shape[0] // pc.shape[0]
    seqs = [
        alg.sequence_logps(x, m) for x, m in ((pc, cmask), (rc, cmask), (pr, rmask), (rr, rmask))
    ]
    leaves = [s.detach().requires_grad_() for s in seqs]
    loss, _ = alg.dpo_loss(*leaves, neg, beta=0.1)
    loss.backward()
    policy_c, ref_c, policy_r, ref_r = leaves
    assert ref_c.grad is None and ref_r.grad is None
    assert torch.all(policy_r.grad[~neg] == 0) and torch.all(policy_r.grad[neg] > 0)
    has_pair = neg.view(b, k).any(dim=1)
    assert torch.all(policy_c.grad[~has_pair] == 0) and torch.all(policy_c.grad[has_pair] < 0)


def test_dpo_gradcheck():
    pc, rc, cmask, pr, rr, rmask, neg = random_pairs(1)

    def f(chosen, rejected):
        loss, _ = alg.dpo_loss_from_tokens(
            chosen, rc, cmask, rejected, rr, rmask, neg, beta=0.5, length_normalize=True
        )
        return loss

    assert torch.autograd.gradcheck(f, (pc.clone().requires_grad_(), pr.clone().requires_grad_()))


def test_orapo_mix_gradient_is_the_weighted_sum():
    logps, old, ref, adv, mask = random_rollouts(0, n=4, t=5)
    leaf = logps.clone().requires_grad_()
    g, _ = alg.grpo_loss(leaf, old, adv, mask)
    d, _ = alg.dpo_loss(
        leaf[:2].sum(-1),
        ref[:2].sum(-1),
        leaf.sum(-1),
        ref.sum(-1),
        torch.ones(4, dtype=torch.bool),
    )
    grad_g = torch.autograd.grad(g, leaf, retain_graph=True)[0]
    grad_d = torch.autograd.grad(d, leaf, retain_graph=True)[0]
    mixed, _ = alg.orapo_loss(g, d, 0.15)
    grad_mix = torch.autograd.grad(mixed, leaf)[0]
    assert torch.allclose(grad_mix, 0.85 * grad_g + 0.15 * grad_d, atol=1e-12)
