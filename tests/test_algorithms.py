"""Worked values for orapo.algorithms: small cases computed by hand (in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from orapo import algorithms as alg

torch.set_num_threads(1)
NAN = math.nan
LN = math.log


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def val(x: torch.Tensor) -> float:
    return float(x.detach())


def close(actual, expected, tol=1e-9):
    assert torch.allclose(torch.as_tensor(actual, dtype=torch.float64), t(expected), atol=tol), (
        actual,
        expected,
    )


# -- group_advantages -----------------------------------------------------------------------


def test_group_advantages_one_success_in_four():
    # mean 0.25; unbiased var ((0.75)^2 + 3 (0.25)^2) / 3 = 0.25, std 0.5
    adv = alg.group_advantages(t([1.0, 0.0, 0.0, 0.0]), k=4)
    close(adv, [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001])


def test_group_advantages_equal_groups_are_zero_even_with_eps_zero():
    # last group [0, 1]: mean 0.5, unbiased var (0.25 + 0.25) / 1, A = +-0.5 / sqrt(0.5)
    adv = alg.group_advantages(t([0.0, 0.0, 0.7, 0.7, 0.0, 1.0]), k=2, eps=0.0)
    close(adv, [0.0, 0.0, 0.0, 0.0, -0.5 / math.sqrt(0.5), 0.5 / math.sqrt(0.5)])
    assert not torch.isnan(adv).any()


def test_group_advantages_missing_reward_rule():
    # valid [1, 0, 0]: mean 1/3, var ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3; the NaN sample gets 0
    s = math.sqrt(1 / 3)
    adv = alg.group_advantages(t([1.0, NAN, 0.0, 0.0]), k=4, eps=0.0)
    close(adv, [(2 / 3) / s, 0.0, -(1 / 3) / s, -(1 / 3) / s])
    # one valid reward left in a group, or none: all 0
    close(alg.group_advantages(t([NAN, 0.5, NAN, NAN]), k=2), [0.0, 0.0, 0.0, 0.0])


def test_group_advantages_batch_and_none_scales():
    r = t([1.0, 0.0, 1.0, 1.0])
    # group means [0.5, 1]; batch std of [1, 0, 1, 1] = sqrt(0.75 / 3) = 0.5
    close(alg.group_advantages(r, k=2, scale="batch", eps=0.0), [1.0, -1.0, 0.0, 0.0])
    close(alg.group_advantages(r, k=2, scale="none"), [0.5, -0.5, 0.0, 0.0])


def test_group_advantages_k1_single_rollout_is_zero():
    close(alg.group_advantages(t([0.3, 0.9]), k=1), [0.0, 0.0])


def test_group_advantages_keeps_dtype_and_has_no_grad():
    r = torch.tensor([1.0, 0.0], requires_grad=True)
    adv = alg.group_advantages(r, k=2)
    assert adv.dtype == torch.float32 and not adv.requires_grad
    assert alg.group_advantages(torch.tensor([1, 0]), k=2).dtype == torch.float32


@pytest.mark.parametrize(
    ("rewards", "k", "kwargs", "message"),
    [
        (torch.zeros(2, 2), 2, {}, "1-D"),
        (torch.zeros(5), 2, {}, "multiple of k=2"),
        (torch.zeros(4), 0, {}, "positive int"),
        (torch.zeros(4), 2, {"scale": "std"}, "valid values are: group, batch, none"),
        (torch.zeros(4), 2, {"eps": -1.0}, "eps"),
    ],
)
def test_group_advantages_rejects_bad_input(rewards, k, kwargs, message):
    with pytest.raises(ValueError, match=message):
        alg.group_advantages(rewards, k, **kwargs)


# -- zero_reward_rate -----------------------------------------------------------------------


def test_zero_reward_rate_worked():
    assert alg.zero_reward_rate(t([0, 0, 0, 1, 0, 0]), k=2) == pytest.approx(2 / 3)
    assert alg.zero_reward_rate(t([0.0] * 8), k=4) == 1.0
    assert alg.zero_reward_rate(t([0.2] * 8), k=4) == 0.0
    assert alg.zero_reward_rate(t([0.01, 0.0, 0.5, 0.0]), k=2, atol=0.05) == 0.5
    assert alg.zero_reward_rate(t([-0.0, 0.0]), k=2) == 1.0


def test_zero_reward_rate_missing_rewards():
    # group 0: valid [0] -> zero; group 1: all missing -> not counted; group 2: has a 1
    assert alg.zero_reward_rate(t([NAN, 0, NAN, NAN, 1, 0]), k=2) == 0.5
    assert math.isnan(alg.zero_reward_rate(t([NAN, NAN]), k=2))
    close(alg.zero_reward_groups(t([NAN, 0, NAN, NAN, 1, 0]), k=2).double(), [1.0, 0.0, 0.0])


def test_reward_metrics_worked():
    m = alg.reward_metrics(t([0, 0, 0.5, 1.0, NAN, 0.2]), k=2)
    assert m["reward/mean"] == pytest.approx(1.7 / 5)
    assert m["reward/missing"] == 1.0
    assert m["reward/frac_zero_std"] == 0.5  # group 0 equal, group 1 not, group 2 unscored
    assert m["zrr/raw"] == pytest.approx(1 / 3)


# -- mixing weight and the ZRR controller ---------------------------------------------------


def test_mixing_weight_worked():
    assert alg.mixing_weight(0.0) == pytest.approx(0.05)
    assert alg.mixing_weight(1.0) == pytest.approx(0.15)
    assert alg.mixing_weight(0.5) == pytest.approx(0.05 + 0.1 * 0.25)
    assert alg.mixing_weight(0.3) == pytest.approx(0.059)
    assert alg.mixing_weight(0.3, 0.0, 1.0, gamma=1.0) == pytest.approx(0.3)
    for bad in ({"ema": 1.5}, {"ema": NAN}, {"ema": 0.5, "gamma": 0.0}):
        with pytest.raises(ValueError):
            alg.mixing_weight(**bad)
    with pytest.raises(ValueError, match="w_min <= w_max"):
        alg.mixing_weight(0.5, w_min=0.2, w_max=0.1)


def test_controller_ema_convention():
    c = alg.ZRRController()
    assert c.weight() == pytest.approx(0.05)  # before any update: ema taken as 0
    assert math.isnan(c.metrics()["zrr/ema"])
    assert c.update(0.3) == pytest.approx(0.3)  # initialised with the first observation
    assert c.update(0.1) == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)
    assert c.weight() == pytest.approx(0.05 + 0.1 * 0.2**2)
    slow = alg.ZRRController(alpha=0.9)
    slow.update(0.3)
    assert slow.update(0.1) == pytest.approx(0.9 * 0.3 + 0.1 * 0.1)  # alpha weighs the past


def test_controller_skips_nan_and_round_trips_state():
    c = alg.ZRRController()
    c.update(0.4)
    c.update(NAN)
    assert c.ema == pytest.approx(0.4) and c.num_skipped == 1 and c.num_updates == 1
    state = c.state_dict()
    restored = alg.ZRRController()
    restored.load_state_dict(state)
    assert restored.update(0.0) == c.update(0.0) == pytest.approx(0.2)
    assert restored.state_dict() == c.state_dict()
    with pytest.raises(KeyError, match="num_updates"):
        restored.load_state_dict({"ema": 0.1})
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        c.update(1.5)


def test_controller_constant_mode_and_validation():
    c = alg.ZRRController(mode="constant", constant_w=0.1)
    c.update(1.0)
    assert c.weight() == 0.1 and c.metrics() == {"zrr/ema": 1.0}
    assert alg.ZRRController(mode="constant").weight() == 0.0  # pure GRPO
    with pytest.raises(ValueError, match="valid values are: ema, constant"):
        alg.ZRRController(mode="linear")
    with pytest.raises(ValueError, match="alpha"):
        alg.ZRRController(alpha=1.0)


# -- GRPO -----------------------------------------------------------------------------------


def _two_sequences():
    # seq 0 (A=+1): ratios 1.5, 0.9; seq 1 (A=-1): ratio 0.5, then one padded position
    logps = t([[LN(1.5), LN(0.9)], [LN(0.5), 0.0]]).requires_grad_()
    old = torch.zeros(2, 2, dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    return logps, old, t([1.0, -1.0]), mask


def test_grpo_per_token_loss_worked():
    logps, old, adv, mask = _two_sequences()
    loss_t, m = alg.grpo_per_token_loss(logps, old, adv, mask, eps_low=0.2, eps_high=0.2)
    # -min(1.5, 1.2) = -1.2; -min(0.9, 0.9) = -0.9; -min(-0.5, -0.8) = 0.8; padding 0
    close(loss_t.detach(), [[-1.2, -0.9], [0.8, 0.0]])
    assert m["grpo/clip_frac_high"] == pytest.approx(1 / 3)  # 1.5 > 1.2 with A > 0
    assert m["grpo/clip_frac_low"] == pytest.approx(1 / 3)  # 0.5 < 0.8 with A < 0
    assert m["grpo/clip_frac"] == pytest.approx(2 / 3)
    assert m["grpo/ratio_mean"] == pytest.approx((1.5 + 0.9 + 0.5) / 3)
    assert m["grpo/ratio_max"] == pytest.approx(1.5)
    assert m["grpo/pg_loss"] == pytest.approx((-1.2 - 0.9 + 0.8) / 3)
    kl_old = sum((r - 1) - LN(r) for r in (1.5, 0.9, 0.5)) / 3
    assert m["grpo/approx_kl_old"] == pytest.approx(kl_old)
    assert m["grpo/tokens"] == 3.0 and "grpo/kl_ref" not in m


def test_reductions_worked():
    logps, old, adv, mask = _two_sequences()
    loss_t, _ = alg.grpo_per_token_loss(logps, old, adv, mask)
    # grpo: mean(-2.1 / 2, 0.8 / 1); dapo: -1.3 / 3; dr_grpo: -1.3 / (2 * 4)
    assert val(alg.reduce_loss(loss_t, mask, "grpo")) == pytest.approx(-0.125)
    assert val(alg.reduce_loss(loss_t, mask, "dapo")) == pytest.approx(-1.3 / 3)
    assert val(alg.reduce_loss(loss_t, mask, "token-mean")) == pytest.approx(-1.3 / 3)
    dr = alg.reduce_loss(loss_t, mask, "dr_grpo", max_completion_length=4)
    assert val(dr) == pytest.approx(-0.1625)
    with pytest.raises(ValueError, match="max_completion_length"):
        alg.reduce_loss(loss_t, mask, "dr_grpo")
    with pytest.raises(ValueError, match="more than max_completion_length=1"):
        alg.reduce_loss(loss_t, mask, "dr_grpo", max_completion_length=1)
    with pytest.raises(KeyError, match="valid names are: .*dapo.*dr_grpo.*grpo"):
        alg.reduce_loss(loss_t, mask, "sum")


def test_reduction_of_a_sequence_without_tokens():
    loss_t = t([[2.0, 4.0], [9.0, 9.0]])
    mask = torch.tensor([[True, True], [False, False]])
    assert val(alg.reduce_loss(loss_t, mask, "grpo")) == pytest.approx(1.5)  # (3 + 0) / 2
    assert val(alg.reduce_loss(loss_t, mask, "dapo")) == pytest.approx(3.0)
    empty = torch.zeros(2, 2, dtype=torch.bool)
    assert val(alg.reduce_loss(loss_t, empty, "dapo")) == 0.0


def test_grpo_kl_term_worked():
    # single token: logp = -1, ref = -2: k3 = e^-1 - (-1) - 1 = e^-1; on-policy, A = 0
    logps = t([[-1.0]]).requires_grad_()
    ref = t([[-2.0]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss_t, m = alg.grpo_per_token_loss(logps, None, t([0.0]), mask, beta=0.1, ref_logps=ref)
    close(loss_t.detach(), [[0.1 * math.exp(-1)]])
    assert m["grpo/kl_ref"] == pytest.approx(math.exp(-1))
    _, m0 = alg.grpo_per_token_loss(logps, None, t([0.0]), mask, beta=0.0, ref_logps=ref)
    assert m0["grpo/kl_ref"] == pytest.approx(math.exp(-1))  # measured, not added
    with pytest.raises(ValueError, match="needs ref_logps"):
        alg.grpo_per_token_loss(logps, None, t([0.0]), mask, beta=0.1)


def test_grpo_on_policy_gradient_is_minus_advantage():
    logps = t([[-0.7, -1.3]]).requires_grad_()
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, _ = alg.grpo_loss(logps, None, t([2.0]), mask, reduction="grpo")
    loss.backward()
    close(logps.grad, [[-1.0, -1.0]])  # d/dlogp of -(ratio * A) / 2 tokens at ratio 1


def test_grpo_extreme_ratios():
    mask = torch.ones(1, 1, dtype=torch.bool)
    cases = [  # (log ratio, A, loss, gradient)
        (10.0, 1.0, -1.2, 0.0),  # clipped above: constant, no gradient
        (-10.0, -1.0, 0.8, 0.0),  # clipped below: constant, no gradient
        (10.0, -1.0, math.exp(10), math.exp(10)),  # unclipped side: -ratio * A
        (-10.0, 1.0, -math.exp(-10), -math.exp(-10)),
    ]
    for log_ratio, a, want_loss, want_grad in cases:
        logps = t([[log_ratio]]).requires_grad_()
        loss, _ = alg.grpo_loss(logps, t([[0.0]]), t([a]), mask)
        loss.backward()
        assert val(loss) == pytest.approx(want_loss, rel=1e-9)
        assert float(logps.grad) == pytest.approx(want_grad, rel=1e-9, abs=1e-12)
    logps = t([[10.0]]).requires_grad_()
    loss, _ = alg.grpo_loss(logps, t([[0.0]]), t([-1.0]), mask, delta=3.0)
    assert val(loss) == pytest.approx(3.0)  # TRL's two-sided clipping caps the ratio


def test_grpo_padding_may_hold_inf_and_nan():
    logps = t([[-1.0, math.inf], [-0.5, NAN]]).requires_grad_()
    old = t([[-1.1, -math.inf], [-0.4, NAN]])
    ref = t([[-1.0, NAN], [-0.6, math.inf]])
    mask = torch.tensor([[True, False], [True, False]])
    loss, m = alg.grpo_loss(logps, old, t([1.0, -1.0]), mask, beta=0.1, ref_logps=ref)
    loss.backward()
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in m.values())
    assert torch.isfinite(logps.grad).all()
    assert logps.grad[:, 1].abs().sum() == 0


# -- DPO ------------------------------------------------------------------------------------


def _dpo_case():
    # B=1, K=2: chosen ratio -10 - (-12) = 2; rejected ratios -20 - (-19) = -1 and 0
    return t([-10.0]), t([-12.0]), t([-20.0, -15.0]), t([-19.0, -15.0])


def softplus(x):
    return math.log1p(math.exp(x))


def test_dpo_loss_worked():
    pc, rc, pr, rr = _dpo_case()
    loss, m = alg.dpo_loss(pc, rc, pr, rr, torch.tensor([True, True]), beta=0.1)
    # h = [3, 2]: -log sigmoid(0.3), -log sigmoid(0.2)
    assert val(loss) == pytest.approx((softplus(-0.3) + softplus(-0.2)) / 2)
    assert m["dpo/pairs"] == 2.0 and m["dpo/prompts_with_pairs"] == 1.0
    assert m["dpo/chosen_reward"] == pytest.approx(0.2)
    assert m["dpo/rejected_reward"] == pytest.approx(-0.05)
    assert m["dpo/reward_margin"] == pytest.approx(0.25)
    assert m["dpo/accuracy"] == 1.0
    assert m["dpo/chosen_logps"] == -10.0 and m["dpo/rejected_logps"] == -17.5
    loss1, m1 = alg.dpo_loss(pc, rc, pr, rr, torch.tensor([False, True]), beta=0.1)
    assert val(loss1) == pytest.approx(softplus(-0.2)) and m1["dpo/pairs"] == 1.0


def test_dpo_prompt_without_negatives_contributes_nothing():
    pc = t([-10.0, -3.0])
    rc = t([-12.0, -1.0])
    pr = t([-20.0, -15.0, -5.0, -6.0])
    rr = t([-19.0, -15.0, -5.0, -6.0])
    loss, m = alg.dpo_loss(pc, rc, pr, rr, torch.tensor([True, True, False, False]), beta=0.1)
    assert val(loss) == pytest.approx((softplus(-0.3) + softplus(-0.2)) / 2)
    assert m["dpo/prompts_with_pairs"] == 0.5


def test_dpo_no_pairs_is_zero_with_zero_gradient():
    pc = t([-10.0]).requires_grad_()
    pr = t([math.inf, NAN]).requires_grad_()  # non-negatives may hold anything
    loss, m = alg.dpo_loss(pc, t([-12.0]), pr, t([0.0, 0.0]), torch.tensor([False, False]))
    assert val(loss) == 0.0 and loss.requires_grad
    loss.backward()
    assert pc.grad.item() == 0.0 and torch.equal(pr.grad, torch.zeros(2, dtype=torch.float64))
    assert m["dpo/pairs"] == 0.0 and math.isnan(m["dpo/reward_margin"])


def test_dpo_length_normalisation_worked():
    # chosen: 2 tokens, policy sum -4, ref sum -6 -> per-token ratio +1
    # rejected: 4 tokens (1 padded), policy sum -6, ref sum -3 -> per-token ratio -1
    pc, rc = t([[-2.0, -2.0]]), t([[-3.0, -3.0]])
    cmask = torch.ones(1, 2, dtype=torch.bool)
    pr, rr = t([[-2.0, -2.0, -2.0, 9.0]]), t([[-1.0, -1.0, -1.0, 9.0]])
    rmask = torch.tensor([[True, True, True, False]])
    neg = torch.tensor([True])
    loss, _ = alg.dpo_loss_from_tokens(pc, rc, cmask, pr, rr, rmask, neg, beta=0.5)
    assert val(loss) == pytest.approx(softplus(-0.5 * (2 + 3)))  # sums: h = 2 - (-3)
    norm, _ = alg.dpo_loss_from_tokens(
        pc, rc, cmask, pr, rr, rmask, neg, beta=0.5, length_normalize=True
    )
    assert val(norm) == pytest.approx(softplus(-0.5 * (1 + 1)))  # means: h = 1 - (-1)
    close(alg.sequence_logps(pr, rmask), [-6.0])
    close(alg.sequence_logps(pr, rmask, average=True), [-2.0])


def test_dpo_rejects_shape_mismatch():
    pc, rc, pr, rr = _dpo_case()
    with pytest.raises(ValueError, match="B\\*K entries"):
        alg.dpo_loss(pc, rc, pr, rr[:1], torch.tensor([True, True]))
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        alg.dpo_loss(pc, t([1.0, 2.0]), pr, rr, torch.tensor([True, True]))


def test_select_negatives_rules():
    r = t([0.0, 0.3, NAN, 1.0, 0.01])
    assert alg.select_negatives(r).tolist() == [True, False, False, False, False]
    assert alg.select_negatives(r, atol=0.05).tolist() == [True, False, False, False, True]
    assert alg.select_negatives(r, "all").tolist() == [True] * 5
    below = alg.select_negatives(r, "below", threshold=0.5)
    assert below.tolist() == [True, True, False, False, True]
    with pytest.raises(ValueError, match="threshold is required"):
        alg.select_negatives(r, "below")
    with pytest.raises(ValueError, match="valid values are: zero-reward, all, below"):
        alg.select_negatives(r, "failed")


# -- the OraPO mix --------------------------------------------------------------------------


def test_orapo_loss_worked():
    g, d = t(2.0).requires_grad_(), t(10.0).requires_grad_()
    loss, m = alg.orapo_loss(g, d, 0.25)
    assert val(loss) == pytest.approx(0.75 * 2 + 0.25 * 10)
    loss.backward()
    assert g.grad.item() == pytest.approx(0.75) and d.grad.item() == pytest.approx(0.25)
    assert m == {"loss/grpo": 2.0, "loss/dpo": 10.0, "loss/total": 4.0, "mix/w": 0.25}
    pure, m0 = alg.orapo_loss(g, t(NAN), 0.0)
    assert pure is g and m0["loss/total"] == 2.0  # w = 0 never touches the DPO term
    assert alg.orapo_loss(g, None, 0.0)[0] is g
    assert alg.orapo_loss(t(NAN), d, 1.0)[0] is d
    with pytest.raises(ValueError, match="needs a dpo_loss"):
        alg.orapo_loss(g, None, 0.1)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        alg.orapo_loss(g, d, 1.5)


@pytest.mark.parametrize("module", [alg, alg.advantages])
def test_docstring_examples_run(module):
    import doctest

    result = doctest.testmod(module, raise_on_error=False, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_informative_groups_spread_nan_and_atol():
    from orapo.algorithms import informative_groups

    nan = float("nan")
    r = torch.tensor([1.0, 1.0, 0.0, 0.3, nan, 0.7, nan, nan, 0.5, 0.52])
    assert informative_groups(r, 2).tolist() == [False, True, False, False, True]
    assert informative_groups(r, 2, atol=0.05).tolist() == [False, True, False, False, False]
    with pytest.raises(ValueError):
        informative_groups(r, 2, atol=-1.0)
