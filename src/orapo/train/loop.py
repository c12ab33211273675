"""The OraPO training loop, top to bottom. Orchestration only: the maths is in orapo.algorithms.

One step, :meth:`Trainer.train_step` (mode ``orapo``; ``grpo`` is the same with w = 0, ``sft``
skips to the NLL, :meth:`Trainer.sft_step`)::

    1. studies -> images -> K rollouts each
    2. rewards (FactS) -> ZRR over the global batch -> its EMA -> w
    3. group advantages; failed rollouts (the DPO rejected)
    4. reference log-probs (no grad) of rollouts and ground-truth reports
    5. per micro-batch (:meth:`Trainer.loss`): policy log-probs of both (one forward)
       -> (1 - w) * GRPO(rollouts) + w * DPO(ground truth vs failed rollouts), each term
       weighted by the micro-batch's share of the global batch (:func:`share_weights`)
       -> backward; then clip -> optimizer and scheduler step
    6. metrics (docs/algorithms.md, metric glossary)

With ``algorithm.dynamic_sampling`` (DAPO), groups whose K rewards are all equal are replaced by
groups of new images right after the ZRR is measured (:meth:`Trainer.dynamic_sample`).

Runs under accelerate: the same code on CPU, one GPU, or several processes with
``accelerate launch`` (each process takes its slice of every step's images; rewards are gathered
so the Zero-Reward Rate and its EMA are global and identical on every process).

Micro-batches and processes: each loss is a mean over some units (GRPO: the reduction's tokens or
sequences, :data:`REDUCTION_UNITS`; DPO: pairs; SFT: tokens). A micro-batch's mean is weighted
by its share of the units of the global batch (all micro-batches of all processes), so
``grad_accum`` micro-batches on P processes apply the update of one micro-batch holding the
whole batch on one process (tests/test_accumulation.py). Accumulation goes through accelerate's
``accumulate`` (no gradient sync before the last micro-batch; DeepSpeed steps only there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from orapo import algorithms as alg
from orapo.errors import UserError
from orapo.manifest import Study
from orapo.model.policy import PromptBatch, Rollouts
from orapo.train.checkpoint import load_checkpoint, save_checkpoint
from orapo.train.config import TrainConfig
from orapo.train.data import EpochSampler, study_image
from orapo.train.tracking import MetricsLog

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.console import Console

    from orapo.model.policy import Policy
    from orapo.rewards.common import RewardFunction


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left intact."""


@dataclass
class MicroBatch:
    """Completions of some of a step's images, scored together: rollouts first, then (when the
    DPO term is on) the images' ground-truth reports."""

    prompts: PromptBatch  # of these images
    ids: torch.Tensor  # (n, T)
    mask: torch.Tensor  # (n, T)
    index: torch.Tensor  # (n,) prompt of each completion
    rollout_rows: torch.Tensor  # (n_rollouts,) rows of these rollouts in the step's B*K
    n_rollouts: int
    t_rollouts: int
    ref: torch.Tensor | None = None
    old: torch.Tensor | None = None
    #: weights of its GRPO and DPO means (:func:`share_weights`); 1.0 alone on one process
    weights: tuple[float, float] = (1.0, 1.0)

    @property
    def inputs(self) -> tuple:
        return (self.prompts, self.ids, self.mask, self.index)


#: What each GRPO loss reduction (``algorithm.loss_reduction``) is a mean over: its denominator.
REDUCTION_UNITS: dict[str, str] = {
    "grpo": "sequences",
    "seq-mean-token-mean": "sequences",
    "dr_grpo": "sequences",  # sum / (N * L_max): per sequence, L_max is a constant
    "seq-sum-constant": "sequences",
    "dapo": "tokens",
    "token-mean": "tokens",
    "bnpo": "tokens",
}


def share_weights(local: torch.Tensor, total: torch.Tensor, world: int) -> list[list[float]]:
    """Weights that turn micro-batch means into the global batch's mean.

    local ``(M, U)``: the units (e.g. GRPO tokens, DPO pairs) of this process's M micro-batches
    for U losses; total ``(U,)``: the units of the global batch (all processes). Returns
    ``w[m][u] = local[m, u] * world * M / total[u]`` (0 where total is 0): accelerate divides each
    micro-batch's loss by M and data parallelism averages over ``world`` processes, so
    ``sum_m w[m][u] * mean_m / (world * M)`` summed over processes is the global mean. One
    micro-batch on one process: exactly 1.0.

    >>> share_weights(torch.tensor([[3, 1], [1, 0]]), torch.tensor([8, 1]), world=2)
    [[1.5, 4.0], [0.5, 0.0]]
    """
    m = local.shape[0]
    return [
        [
            float(u) * world * m / float(t) if float(t) > 0 else 0.0
            for u, t in zip(row, total, strict=True)
        ]
        for row in local.tolist()
    ]


def split_evenly(b: int, parts: int) -> list[list[int]]:
    """``range(b)`` in exactly ``parts`` contiguous groups whose sizes differ by at most one.

    >>> split_evenly(7, 3)
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    if b < parts:
        raise ValueError(f"{b} images cannot fill trainer.grad_accum={parts} micro-batches")
    sizes = [b // parts + (i < b % parts) for i in range(parts)]
    starts = [sum(sizes[:i]) for i in range(parts)]
    return [list(range(s, s + n)) for s, n in zip(starts, sizes, strict=True)]


def _mean_metrics(acc: dict[str, float], new: dict[str, float], j: int) -> dict[str, float]:
    """Running mean of micro-batch metrics (j = index of ``new``); a value the same in every
    micro-batch (``mix/w``) stays exactly that value."""
    if j == 0:
        return dict(new)
    return {
        key: v if acc.get(key, v) == v else (acc.get(key, v) * j + v) / (j + 1)
        for key, v in new.items()
    }


@dataclass
class Batch:
    """The images and targets of one process's share of a step."""

    studies: list[Study]
    images: list[Any]

    @property
    def references(self) -> list[str]:
        return [s.report for s in self.studies]

    @property
    def labels(self) -> list[dict | None]:
        return [s.labels for s in self.studies]


def repeat_each(items: list, k: int) -> list:
    """[a, b] -> [a]*k + [b]*k, matching the (B*K,) group order of rollouts."""
    return [x for x in items for _ in range(k)]


def pad_cat(a: torch.Tensor, b: torch.Tensor, value: int) -> torch.Tensor:
    """Concatenate (N1, T1) and (N2, T2) along dim 0, right-padding to max(T1, T2)."""
    t = max(a.shape[1], b.shape[1])
    a = torch.nn.functional.pad(a, (0, t - a.shape[1]), value=value)
    b = torch.nn.functional.pad(b, (0, t - b.shape[1]), value=value)
    return torch.cat([a, b])


class TrainingData(Protocol):
    """What the trainer reads of a run's data (``orapo.train.setup.TrainData``)."""

    train: list[Study]
    val: list[Study]

    @property
    def root(self) -> Path: ...


@dataclass
class Draw:
    """One batch of studies with their rollouts and (this process's) rewards."""

    batch: Batch
    rollouts: Rollouts
    rewards: torch.Tensor  # (B*K,), NaN = failed


class _Replay:
    """Stands in for the policy in ``evaluate_policy``: hands back reports already generated (by
    every process), in study order, so the main process scores them as one process would."""

    def __init__(self, policy: Policy, reports: list[str]) -> None:
        self.source, self.prompt = policy.source, policy.prompt
        self._reports = iter(reports)

    def generate_reports(self, images: list[Any], **_: Any) -> list[str]:
        return [next(self._reports) for _ in images]


class Trainer:
    """Holds the run's parts; :meth:`fit` is the loop. Build with
    ``orapo.train.setup.build_trainer``."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        accelerator: Accelerator,
        policy: Policy,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        reward_fn: RewardFunction,
        controller: alg.ZRRController,
        data: TrainingData,
        console: Console,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.acc = accelerator
        self.policy = policy
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.reward_fn = reward_fn
        self.controller = controller
        self.data = data
        self.console = console
        self.sampler = EpochSampler(len(data.train), cfg.trainer.seed)
        self.step = 0
        self.log = MetricsLog(run_dir, enabled=accelerator.is_main_process)
        self.reward_failures: dict[str, int] = {}
        self.missing_rewards = 0  # over all processes, refills included
        self.rollouts_generated = 0  # over all processes, refills included
        self.grad_norm: float | None = None

    # ------------------------------------------------------------------ one step
    def next_batch(self) -> Batch:
        """This process's slice of the next global batch of training studies."""
        b, world, rank = self.cfg.trainer.batch_size, self.acc.num_processes, self.acc.process_index
        idx = self.sampler.take(b)[rank * (b // world) : (rank + 1) * (b // world)]
        studies = [self.data.train[i] for i in idx]
        return Batch(studies, [study_image(s, self.data.root) for s in studies])

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One step of the module docstring (``sft`` mode: :meth:`sft_step`)."""
        if self.cfg.algorithm.mode == "sft":
            return self.sft_step(batch)
        cfg, a, policy = self.cfg, self.cfg.algorithm, self.policy
        k = cfg.sampling.k
        started = time.perf_counter()

        # 1. Rollouts: K reports per image.
        prompts = policy.prompt_batch(batch.images)
        rollouts = policy.rollout(prompts, cfg.sampling)
        t_rollout = time.perf_counter() - started

        # 2. Rewards; the Zero-Reward Rate over the global batch, its EMA, the mixing weight w.
        rewards, all_rewards = self.score(rollouts, batch)  # (B*K,) here, (world*B*K,) global
        reward_details = self.reward_details()  # e.g. FactS precision / recall of this draw
        self.controller.update(alg.zero_reward_rate(all_rewards, k, atol=a.zero_atol))
        w = 0.0 if a.mode == "grpo" else self.controller.weight()
        refills = 0
        if a.dynamic_sampling:  # DAPO: keep the groups whose rewards differ, refill the rest
            batch, prompts, rollouts, rewards, refills = self.dynamic_sample(
                batch, rollouts, rewards
            )

        # 3. Group advantages (GRPO) and the failed rollouts (DPO's rejected).
        advantages = alg.group_advantages(rewards, k, scale=a.advantage_scale)  # (B*K,)
        threshold = a.dpo_threshold if a.dpo_negatives == "below" else None
        negatives = alg.select_negatives(  # (B*K,) bool
            rewards, a.dpo_negatives, threshold=threshold, atol=a.zero_atol
        )

        # 4. What each micro-batch scores: its rollouts, then (DPO on) its ground-truth reports;
        #    reference (KL, DPO) and rollout-policy (mu > 1) log-probs without gradient.
        chosen_ids, chosen_mask = (
            policy.encode_completions(batch.references, max_tokens=cfg.sampling.max_new_tokens)
            if w > 0
            else (None, None)
        )
        micro = [
            self.micro_batch(prompts, rollouts, chosen_ids, chosen_mask, images)
            for images in self.micro_batches(len(batch.studies))
        ]
        with torch.no_grad():
            for mb in micro:
                if a.kl_beta > 0 or w > 0:
                    mb.ref = policy.completion_logprobs(*mb.inputs, reference=True)
                if cfg.trainer.mu > 1:
                    mb.old = policy.completion_logprobs(*mb.inputs)
        self.weigh(micro, negatives)

        # 5. (1 - w) * GRPO + w * DPO, accumulated over micro-batches; mu updates per batch.
        #    Metrics are means over every inner iteration and micro-batch.
        metrics: dict[str, float] = {}
        for i in range(cfg.trainer.mu):
            for j, mb in enumerate(micro):
                loss, loss_metrics = self.loss(mb, advantages, negatives, w)
                self.backward(loss, last=j == len(micro) - 1)
                metrics = _mean_metrics(metrics, loss_metrics, i * len(micro) + j)
            self.optimizer_step()

        # 6. What the step did (docs/algorithms.md, metric glossary).
        metrics.update(alg.reward_metrics(all_rewards, k, atol=a.zero_atol))
        metrics.update(reward_details)
        metrics.update(self.controller.metrics())
        metrics["reward/missing_total"] = float(self.missing_rewards)
        metrics["rollout/mean_length"] = float(rollouts.completion_mask.sum(1).float().mean())
        metrics["rollout/truncated"] = float(rollouts.truncated.float().mean())
        metrics["rollout/generated_total"] = float(self.rollouts_generated)
        if a.dynamic_sampling:
            informative = alg.informative_groups(rewards, k, atol=a.zero_atol)
            metrics["dynamic/refills"] = float(refills)
            metrics["dynamic/informative"] = float(informative.float().mean())
        metrics["time/rollout"] = t_rollout
        metrics["time/step"] = time.perf_counter() - started
        return metrics

    def loss(
        self, mb: MicroBatch, advantages: torch.Tensor, negatives: torch.Tensor, w: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The OraPO loss of one micro-batch and its metrics (``loss/*``, ``grpo/*``, ``dpo/*``,
        ``mix/w``): GRPO on its rollouts; with ``w > 0``, DPO of its ground-truth reports
        against its failed rollouts."""
        a, max_tokens = self.cfg.algorithm, self.cfg.sampling.max_new_tokens
        logps = self.policy.completion_logprobs(*mb.inputs)  # (n + b, T): rollouts, then chosen
        n, t, rows = mb.n_rollouts, mb.t_rollouts, mb.rollout_rows
        rollout_logps, rollout_mask = logps[:n, :t], mb.mask[:n, :t]  # (n, t)
        l_grpo, m_grpo = alg.grpo_loss(
            rollout_logps,
            None if mb.old is None else mb.old[:n, :t],
            advantages[rows],
            rollout_mask,
            reduction=a.loss_reduction,
            max_completion_length=max_tokens,
            eps_low=a.clip_eps_low,
            eps_high=a.clip_eps_high,
            beta=a.kl_beta,
            ref_logps=None if a.kl_beta == 0 else mb.ref[:n, :t],
        )
        l_dpo, m_dpo = None, {}
        if w > 0:
            l_dpo, m_dpo = alg.dpo_loss_from_tokens(
                logps[n:],  # (b, T) chosen: the ground-truth reports
                mb.ref[n:],
                mb.mask[n:],
                rollout_logps,  # (n, t) rejected candidates: the rollouts
                mb.ref[:n, :t],
                rollout_mask,
                negatives[rows],
                beta=a.dpo_beta,
                length_normalize=a.dpo_length_normalize,
            )
        loss, m_mix = alg.orapo_loss(l_grpo, l_dpo, w)  # metrics: this micro-batch's means
        g, d = mb.weights
        if (g, d) != (1.0, 1.0):  # its share of the global batch (one process, one part: 1)
            loss, _ = alg.orapo_loss(l_grpo * g, None if l_dpo is None else l_dpo * d, w)
        return loss, {**m_grpo, **m_dpo, **m_mix}

    def weigh(self, micro: list[MicroBatch], negatives: torch.Tensor) -> None:
        """Set each micro-batch's GRPO and DPO weights from the units of the global batch
        (every process calls this together)."""
        per_tokens = REDUCTION_UNITS[self.cfg.algorithm.loss_reduction] == "tokens"
        local = torch.tensor(
            [
                [
                    int(mb.mask[: mb.n_rollouts, : mb.t_rollouts].sum())
                    if per_tokens
                    else mb.n_rollouts,
                    int(negatives[mb.rollout_rows].sum()),
                ]
                for mb in micro
            ],
            dtype=torch.float64,
            device=self.policy.device,
        )  # (M, 2): GRPO units, DPO pairs
        total = self.acc.gather(local.sum(0)[None]).sum(0)  # (2,)
        for mb, (g, d) in zip(
            micro, share_weights(local, total, self.acc.num_processes), strict=True
        ):
            mb.weights = (g, d)

    def score(self, rollouts: Rollouts, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards of ``batch``'s rollouts: this process's ``(B*K,)`` and the global batch's,
        gathered (every process calls this together); NaN where the reward failed. Counts the
        rollouts generated and the missing rewards of the run (the one place that does)."""
        k = rollouts.k
        raw = self.reward_fn(
            rollouts.texts,
            reference=repeat_each(batch.references, k),
            labels=repeat_each(batch.labels, k),
        )
        rewards = alg.rewards_to_tensor(raw).to(self.policy.device)
        everyone = self.acc.gather(rewards)
        self.rollouts_generated += len(everyone)
        self.missing_rewards += int(torch.isnan(everyone).sum())
        return rewards, everyone

    def reward_details(self) -> dict[str, float]:
        """The reward's own metrics of its last call, when it has them (``FactsReward``:
        ``reward/facts_precision``, ``_recall``, ``_f_beta``, ``_failed``; this process's
        rollouts)."""
        metrics = getattr(self.reward_fn, "metrics", None)
        return dict(metrics()) if callable(metrics) else {}

    def dynamic_sample(
        self, batch: Batch, rollouts: Rollouts, rewards: torch.Tensor
    ) -> tuple[Batch, PromptBatch, Rollouts, torch.Tensor, int]:
        """DAPO's dynamic sampling: a batch of B groups whose K rewards are not all equal.

        Draws up to ``algorithm.max_refill_rounds`` more batches of new studies while this
        process (or any other: they draw together, so their data samplers stay in step) has
        fewer than B informative groups; a batch still short is filled up with equal-reward
        groups of the first draw (zero advantage: only the DPO term learns from them).
        Returns (batch, prompts, rollouts, rewards, refills).
        """
        a, k, b = self.cfg.algorithm, rollouts.k, len(batch.studies)

        def informative(draw: Draw) -> list[int]:  # its groups with a reward spread
            spread = alg.informative_groups(draw.rewards, k, atol=a.zero_atol)
            return spread.nonzero().flatten().tolist()

        first = Draw(batch, rollouts, rewards)
        draws = [first]
        useful = [informative(first)]
        while len(draws) <= a.max_refill_rounds and self.any_process_short(
            sum(map(len, useful)) < b
        ):
            extra = self.next_batch()
            extra_rollouts = self.policy.rollout(
                self.policy.prompt_batch(extra.images), self.cfg.sampling
            )
            draws.append(Draw(extra, extra_rollouts, self.score(extra_rollouts, extra)[0]))
            useful.append(informative(draws[-1]))
        # The first B informative groups in draw order, then equal-reward ones of the first draw.
        picks = [(draw, g) for draw, groups in zip(draws, useful, strict=True) for g in groups][:b]
        taken = {g for draw, g in picks if draw is first}
        picks += [(first, g) for g in range(b) if g not in taken][: b - len(picks)]

        new = Batch(
            [draw.batch.studies[g] for draw, g in picks],
            [draw.batch.images[g] for draw, g in picks],
        )
        prompts = self.policy.prompt_batch(new.images)
        merged = Rollouts.merge(
            [(draw.rollouts, g) for draw, g in picks], prompts, self.policy.pad_token_id
        )
        merged_rewards = torch.cat([draw.rewards[draw.rollouts.group(g)] for draw, g in picks])
        return new, prompts, merged, merged_rewards, len(draws) - 1

    def any_process_short(self, short: bool) -> bool:
        """Whether ``short`` holds on any process (all processes call this together)."""
        flag = torch.tensor([float(short)], device=self.policy.device)
        return float(self.acc.gather(flag).max()) > 0

    def sft_step(self, batch: Batch) -> dict[str, float]:
        """The SFT ablation: next-token loss on the ground-truth reports."""
        started = time.perf_counter()
        prompts = self.policy.prompt_batch(batch.images)
        ids, mask = self.policy.encode_completions(
            batch.references, max_tokens=self.cfg.sampling.max_new_tokens
        )
        parts = self.micro_batches(len(batch.studies))
        # Token mean over the global batch, whatever the processes and micro-batches.
        global_tokens = float(self.acc.gather(mask.sum().reshape(1)).sum())
        normalizer = global_tokens / (self.acc.num_processes * len(parts))
        metrics: dict[str, float] = {"loss/sft": 0.0, "sft/tokens": 0.0}
        for j, images in enumerate(parts):
            sub = prompts if len(parts) == 1 else prompts.select(images)
            sel = torch.tensor(images, device=ids.device)
            index = torch.arange(len(images), device=ids.device)
            logps = self.policy.completion_logprobs(sub, ids[sel], mask[sel], index)
            loss, m = alg.sft_loss(logps, mask[sel], normalizer)
            self.backward(loss, last=j == len(parts) - 1)
            metrics["loss/sft"] += m["loss/sft"] / len(parts)
            metrics["sft/tokens"] += m["sft/tokens"]
        self.optimizer_step()
        metrics["time/step"] = time.perf_counter() - started
        return metrics

    def micro_batches(self, b: int) -> list[list[int]]:
        """This process's B images in ``trainer.grad_accum`` micro-batches (:func:`split_evenly`;
        accelerate counts one backward per micro-batch)."""
        return split_evenly(b, self.cfg.trainer.grad_accum)

    def micro_batch(
        self,
        prompts: PromptBatch,
        rollouts: Rollouts,
        chosen_ids: torch.Tensor | None,
        chosen_mask: torch.Tensor | None,
        images: list[int],
    ) -> MicroBatch:
        """The completions of images ``images``: their K rollouts each, then their ground truth."""
        k = rollouts.k
        rows = torch.tensor(
            [i * k + j for i in images for j in range(k)], device=prompts.input_ids.device
        )
        ids, mask = rollouts.completion_ids[rows], rollouts.completion_mask[rows]
        index = torch.arange(len(images), device=ids.device).repeat_interleave(k)
        t = ids.shape[1]
        if chosen_ids is not None:
            sel = torch.tensor(images, device=ids.device)
            ids = pad_cat(ids, chosen_ids[sel], self.policy.pad_token_id)
            mask = pad_cat(mask, chosen_mask[sel], 0)
            index = torch.cat([index, torch.arange(len(images), device=ids.device)])
        return MicroBatch(prompts.select(images), ids, mask, index, rows, len(rows), t)

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        """Backward of one micro-batch's loss (accelerate divides it by ``grad_accum``) inside
        accelerate's ``accumulate``: gradients are synchronised, and DeepSpeed steps, only on the
        last micro-batch of an optimizer step."""
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss is {float(loss.detach())} at step {self.step + 1}; nothing was "
                f"applied. The last good checkpoint is in {self.run_dir / 'checkpoints'}. "
                "Lower trainer.lr, check the rewards, or raise trainer.max_grad_norm clipping."
            )
        with self.acc.accumulate(self.policy.forward_module):
            if self.acc.sync_gradients != last:
                raise RuntimeError(
                    "accelerate's gradient accumulation is out of step with the micro-batches "
                    f"(sync_gradients={self.acc.sync_gradients} on a {'last' if last else 'middle'}"
                    " micro-batch)"
                )
            self.acc.backward(loss)

    def optimizer_step(self) -> None:
        if self.cfg.trainer.max_grad_norm > 0:
            norm = self.acc.clip_grad_norm_(
                self.policy.trainable_parameters(), self.cfg.trainer.max_grad_norm
            )
            if norm is not None:  # DeepSpeed clips itself and may not report a norm
                self.grad_norm = float(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ state
    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "zrr": self.controller.state_dict(),
            "reward_failures": self.reward_failures,
            "missing_rewards": self.missing_rewards,
            "rollouts_generated": self.rollouts_generated,
        }

    def save(self) -> Path:
        return save_checkpoint(
            self.acc,
            self.run_dir,
            self.step,
            self.trainer_state(),
            keep=self.cfg.trainer.keep_checkpoints,
        )

    def resume(self, path: Path) -> None:
        state = load_checkpoint(self.acc, path)
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        self.controller.load_state_dict(state["zrr"])
        self.reward_failures = dict(state.get("reward_failures", {}))
        self.missing_rewards = int(state.get("missing_rewards", 0))
        self.rollouts_generated = int(state.get("rollouts_generated", 0))
        if hasattr(self.reward_fn, "failures"):
            self.reward_fn.failures.update(self.reward_failures)
        self.log.truncate_after(self.step)

    # ------------------------------------------------------------------ evaluation
    def validate(self, studies: list[Study], split: str) -> dict[str, Any]:
        """Greedy reports on ``studies``, scored; ``{}`` on all but the main process.

        One process generates and scores them all. Several processes each generate the reports
        of every ``world``-th study (:meth:`generate_share`); the main process gathers them in
        study order and scores the whole set, as one process would (same metrics:
        tests/test_validate_sharded.py).
        """
        from rich.progress import Progress

        from orapo.model import evaluate_policy

        result: dict[str, Any] = {}
        world, rank = self.acc.num_processes, self.acc.process_index
        options = {
            "batch_size": self.cfg.trainer.eval_batch_size,
            "max_new_tokens": self.cfg.eval.max_new_tokens,
            "skip_bad_images": self.cfg.data.skip_bad_images,
            "split": split,
        }
        with Progress(console=self.console, transient=True, disable=rank != 0) as bar:
            task = bar.add_task(f"evaluate ({split})", total=len(studies))
            if world == 1:
                result = evaluate_policy(
                    self.policy,
                    studies,
                    self.data.root,
                    progress=lambda n: bar.update(task, advance=n),
                    **options,
                )
            else:
                from accelerate.utils import gather_object

                started = time.perf_counter()
                mine = self.generate_share(studies, range(rank, len(studies), world), bar, task)
                everyone = sorted(gather_object(mine))  # [(study index, report)] of all
                if self.acc.is_main_process:
                    replay = _Replay(self.policy, [report for _, report in everyone])
                    result = evaluate_policy(replay, studies, self.data.root, **options)
                    seconds = time.perf_counter() - started
                    n = result["metrics"]["n"]
                    result["metrics"]["timing"] = {
                        "seconds": seconds,
                        "seconds_per_report": seconds / n,
                        "processes": world,
                    }
                    result["summary"]["eval/seconds_per_report"] = seconds / n
        self.acc.wait_for_everyone()
        self.policy.model.train()
        return result

    def generate_share(
        self, studies: list[Study], share: range, bar: Any, task: Any
    ) -> list[tuple[int, str]]:
        """Greedy reports of ``studies[i]`` for i in ``share``: ``[(i, report)]``, in order,
        without the studies whose image is skipped (``data.skip_bad_images``)."""
        from orapo.images import load_images

        size = self.cfg.trainer.eval_batch_size
        index = list(share)
        out: list[tuple[int, str]] = []
        for start in range(0, len(index), size):
            chunk = index[start : start + size]
            paths = [studies[i].image_paths(self.data.root)[0] for i in chunk]
            loaded = load_images(paths, skip_bad=self.cfg.data.skip_bad_images)
            if loaded.images:
                reports = self.policy.generate_reports(
                    loaded.images, max_new_tokens=self.cfg.eval.max_new_tokens, batch_size=size
                )
                out += [(chunk[k], r) for k, r in zip(loaded.kept, reports, strict=True)]
            bar.update(task, advance=len(chunk) * self.acc.num_processes)
        return out

    # ------------------------------------------------------------------ the loop
    def budget_spent(self) -> bool:
        """``trainer.rollout_budget`` rollouts (all processes, refills included) generated."""
        budget = self.cfg.trainer.rollout_budget
        return bool(budget) and self.rollouts_generated >= budget

    def fit(self) -> None:
        from orapo.train.progress import TrainProgress

        cfg = self.cfg.trainer
        with TrainProgress(cfg.steps, self.step, enabled=self.acc.is_main_process) as bar:
            try:
                while self.step < cfg.steps and not self.budget_spent():
                    metrics = self.train_step(self.next_batch())
                    self.step += 1
                    metrics["lr"] = self.scheduler.get_last_lr()[0]
                    if self.grad_norm is not None:
                        metrics["grad/norm"] = self.grad_norm
                    self.reward_failures = dict(getattr(self.reward_fn, "failures", {}))
                    metrics["reward/failures_total"] = float(sum(self.reward_failures.values()))
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                        val = self.validate(self.data.val, self.cfg.data.val_split)
                        if val:
                            metrics["val/f1"] = val["summary"]["clinical/positive/all14/micro_f1"]
                    if self.step % cfg.log_every == 0 or "val/f1" in metrics:
                        self.log.write(self.step, metrics)
                        self.acc.log(metrics, step=self.step)
                    bar.update(self.step, metrics)
                    if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                        self.save()
            except KeyboardInterrupt:
                if self.step > 0:
                    path = self.save()
                    self.console.print(
                        f"[yellow]Interrupted: checkpoint of step {self.step} saved in {path}; "
                        f"continue with --resume {self.run_dir}[/yellow]"
                    )
                raise


__all__ = ["NonFiniteLossError", "Trainer"]
