"""OraPO inside TRL: ``OraPOTrainer(GRPOTrainer)`` and ``OraPOConfig(GRPOConfig)``.

TRL does everything it does for GRPO (generation, vLLM in both modes, rewards, advantages, the
GRPO loss, DeepSpeed / FSDP through accelerate, checkpoints, logging); this class adds only
what OraPO adds, with the formulas of :mod:`orapo.algorithms`:

1. per generation batch (:meth:`OraPOTrainer._generate_and_score_completions`, after TRL's):
   the Zero-Reward Rate of the rewards of all processes, its EMA and the mixing weight ``w``
   (:class:`~orapo.algorithms.ZRRController`), and the DPO negatives (failed rollouts,
   :func:`~orapo.algorithms.select_negatives`); the ground-truth report of each prompt (dataset
   column ``chosen_column``) is tokenised as a completion;
2. per micro-batch (:meth:`OraPOTrainer._compute_loss`): TRL's GRPO loss, then the policy
   log-probs of the ground-truth reports (one forward of the prompts that have a negative)
   and the reference log-probs of those reports and of the negatives (no grad) ->
   :func:`~orapo.algorithms.dpo_loss` -> :func:`~orapo.algorithms.orapo_loss`:
   ``(1 - w) L_GRPO + w L_DPO``.

Generation is TRL's, untouched. Metrics go through TRL's logging: ``zrr/raw``, ``zrr/ema``,
``mix/w`` (once per generation batch), ``loss/grpo``, ``loss/dpo``, ``dpo/*`` (per micro-batch).

Choices (docs/trl.md):

1. The reference. TRL builds no reference model when its KL ``beta`` is 0; the DPO term needs
   one, so the trainer asks TRL to build it (``beta`` is non-zero while ``GRPOTrainer.__init__``
   runs, then 0 again): a frozen copy loaded from the model's path (full fine-tuning), or the
   adapter-disabled model (a new PEFT adapter; a copy of an existing adapter under the name
   ``ref``). With ``beta > 0`` the rollouts' reference log-probs are TRL's own.
2. DPO pairs and processes. TRL may spread one prompt's K rollouts over processes and shuffles
   them within a generation batch; every rollout carries its prompt's id and ground truth, a
   pair is (a negative rollout, its prompt's ground truth) wherever the rollout lands, and the
   DPO mean is over the pairs of the whole generation batch: each micro-batch's sum is divided
   as TRL divides ``loss_type="dapo"``'s token sum (global count / processes, rescaled to one
   accumulation window). One process and one micro-batch: the pair mean of
   :func:`~orapo.algorithms.dpo_loss`, as orapo's own trainer.
3. Log-probs are TRL's: at the sampling temperature, vision placeholders not removed
   (orapo's own trainer removes them from the distribution, docs/model.md).
4. The ZRR is measured on TRL's combined reward (the weighted sum of the reward functions; a
   completion every function failed is missing), once per generation batch, training only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import use_adapter

from orapo import algorithms as alg

#: Where the ZRR controller's state is saved inside each TRL checkpoint folder.
CONTROLLER_FILE = "orapo_zrr.json"


@dataclass
class OraPOConfig(GRPOConfig):
    """``GRPOConfig`` plus OraPO's fields (the paper's values by default)."""

    chosen_column: str = field(
        default="reference",
        metadata={"help": "Dataset column with each prompt's ground-truth report (DPO chosen)."},
    )
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO temperature beta."})
    dpo_negatives: str = field(
        default="zero-reward",
        metadata={"help": "Which rollouts are DPO negatives: zero-reward (paper), all, below."},
    )
    dpo_threshold: float | None = field(
        default=None, metadata={"help": "Reward threshold for dpo_negatives='below' (only)."}
    )
    dpo_length_normalize: bool = field(
        default=False, metadata={"help": "Mean instead of summed token log-probs in DPO."}
    )
    zrr_alpha: float = field(
        default=0.5, metadata={"help": "EMA momentum of the Zero-Reward Rate (paper: 0.5)."}
    )
    w_min: float = field(default=0.05, metadata={"help": "w at ZRR EMA 0 (paper: 0.05)."})
    w_max: float = field(default=0.15, metadata={"help": "w at ZRR EMA 1 (paper: 0.15)."})
    gamma: float = field(default=2.0, metadata={"help": "Sharpening exponent (paper: 2.0)."})
    constant_w: float | None = field(
        default=None,
        metadata={"help": "A fixed mixing weight instead of the ZRR-driven one (0: pure GRPO)."},
    )
    zero_atol: float = field(
        default=0.0, metadata={"help": "A reward counts as zero when |r| <= zero_atol."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dpo_negatives not in alg.NEGATIVE_RULES:
            raise ValueError(
                f"dpo_negatives: {self.dpo_negatives!r} is not one of "
                f"{', '.join(alg.NEGATIVE_RULES)}"
            )
        if (self.dpo_negatives == "below") != (self.dpo_threshold is not None):
            raise ValueError("dpo_threshold is required for dpo_negatives='below' and only for it")
        if self.dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be > 0, got {self.dpo_beta}")
        self.make_controller()  # validates zrr_alpha, w_min, w_max, gamma, constant_w

    def make_controller(self) -> alg.ZRRController:
        """A fresh ZRR controller with these settings."""
        constant = self.constant_w is not None
        return alg.ZRRController(
            alpha=self.zrr_alpha,
            w_min=self.w_min,
            w_max=self.w_max,
            gamma=self.gamma,
            mode="constant" if constant else "ema",
            constant_w=self.constant_w if constant else 0.0,
        )


def combined_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TRL's reward of each completion: ``(N, F), (F,) -> (N,)`` weighted sum over the reward
    functions that scored it, NaN where every function failed (TRL's unscorable rule)."""
    total = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    return total.masked_fill(torch.isnan(rewards_per_func).all(dim=1), math.nan)


class OraPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with OraPO's DPO term mixed in by the ZRR-driven weight ``w``.

    Use it as ``GRPOTrainer`` with an :class:`OraPOConfig` and a dataset that has, besides
    ``prompt`` (and ``image``), the ground-truth report column ``args.chosen_column``.
    """

    _tag_names = ["trl", "grpo", "orapo"]

    def __init__(self, model: Any, reward_funcs: Any, args: OraPOConfig, **kwargs: Any) -> None:
        if not isinstance(args, OraPOConfig):
            raise TypeError(f"OraPOTrainer needs an OraPOConfig, got {type(args).__name__}")
        self.controller = args.make_controller()
        kl_beta = args.beta
        dpo_on = args.w_max > 0 if args.constant_w is None else args.constant_w > 0
        if kl_beta == 0.0 and dpo_on:
            args.beta = 1.0  # choice 1: TRL builds its reference only when beta != 0
        try:
            super().__init__(model, reward_funcs, args=args, **kwargs)
        finally:
            args.beta = kl_beta
        self.beta = kl_beta
        self._mix_w = self.controller.weight()
        self._rewards_per_func: torch.Tensor | None = None
        self._keep_logps = False
        self._kept_logps: torch.Tensor | None = None

    # ------------------------------------------------------------------ per generation batch
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """TRL's rewards (all processes), kept for the ZRR and the negatives."""
        per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = per_func
        return per_func

    def _generate_and_score_completions(self, inputs):
        """TRL's generation batch, plus ZRR -> EMA -> w, the negatives and the ground truth."""
        output = super()._generate_and_score_completions(inputs)
        args, device = self.args, self.accelerator.device
        mode = "train" if self.model.training else "eval"
        k = self.num_generations if mode == "train" else self.num_generations_eval
        rewards = combined_rewards(self._rewards_per_func, self.reward_weights)  # (world*n,)
        zrr = alg.zero_reward_rate(rewards.cpu(), k, atol=args.zero_atol)
        if mode == "train":
            self.controller.update(zrr)
        self._mix_w = self.controller.weight()
        negatives = alg.select_negatives(
            rewards, args.dpo_negatives, threshold=args.dpo_threshold, atol=args.zero_atol
        )  # (world*n,) bool
        n, rank = len(inputs), self.accelerator.process_index
        local = slice(rank * n, (rank + 1) * n)
        chosen_ids, chosen_mask = self.encode_chosen([x[args.chosen_column] for x in inputs])
        output["dpo_negative"] = negatives[local].to(device)
        output["prompt_group"] = torch.arange(rank * n, (rank + 1) * n, device=device) // k
        output["chosen_ids"], output["chosen_mask"] = chosen_ids, chosen_mask
        output["num_pairs_in_batch"] = negatives.sum().to(device)  # 0-d: TRL's shuffle keeps it
        metrics = self._metrics[mode]
        metrics["zrr/raw"].append(zrr)
        metrics["zrr/ema"].append(self.controller.metrics()["zrr/ema"])
        metrics["mix/w"].append(self._mix_w)
        metrics["dpo/pairs_per_batch"].append(float(negatives.sum()))
        return output

    def encode_chosen(self, reports: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth reports as completions: ``(n, Tc)`` ids, each ending with the
        tokenizer's end-of-sequence token (how TRL's completions end), cut to
        ``max_completion_length``, right-padded; ``(n, Tc)`` mask."""
        tok = self._tokenizer
        rows = [
            tok(r, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            + [tok.eos_token_id]
            for r in reports
        ]
        rows = [r[: self.max_completion_length] for r in rows]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        device = self.accelerator.device
        return ids.to(device), mask.to(device)

    # ------------------------------------------------------------------ per micro-batch
    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._keep_logps:  # the policy's forward inside TRL's GRPO loss
            self._kept_logps = out[0]
        return out

    def _compute_loss(self, model, inputs):
        """``(1 - w) * TRL's GRPO loss + w * DPO`` of this micro-batch."""
        self._keep_logps = True
        try:
            l_grpo = super()._compute_loss(model, inputs)
        finally:
            self._keep_logps = False
        rollout_logps, self._kept_logps = self._kept_logps, None  # (n, T) with grad
        w = self._mix_w
        if w == 0.0:
            return l_grpo
        args, mode = self.args, "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        negatives = inputs["dpo_negative"].bool()  # (n,)
        rows = negatives.nonzero().flatten()  # (P,) this micro-batch's pairs
        groups, first = _first_of_each(inputs["prompt_group"][rows])  # (G,), (G,) rows
        chosen_rows = rows[first]
        pair_chosen = torch.searchsorted(groups, inputs["prompt_group"][rows])  # (P,) into G

        # Policy log-probs of the ground truth (grad); reference of ground truth and negatives.
        c_ids, c_mask = inputs["chosen_ids"][chosen_rows], inputs["chosen_mask"][chosen_rows]
        avg = args.dpo_length_normalize
        if len(rows):
            c_logps = self._score(model, inputs, chosen_rows, c_ids, c_mask)  # (G, Tc)
            with torch.no_grad():
                if "ref_per_token_logps" in inputs:  # TRL's own (KL beta > 0)
                    ref_c = self._reference_logps(inputs, chosen_rows, c_ids, c_mask)  # (G, Tc)
                    ref_r = inputs["ref_per_token_logps"][rows]  # (P, T)
                else:  # one forward: the negatives, then the ground truth
                    ids, both = _pad_cat(
                        [inputs["completion_ids"][rows], c_ids], [mask[rows], c_mask]
                    )
                    ref = self._reference_logps(inputs, torch.cat([rows, chosen_rows]), ids, both)
                    ref_r = ref[: len(rows), : mask.size(1)]  # (P, T)
                    ref_c = ref[len(rows) :, : c_ids.size(1)]  # (G, Tc)
            chosen = alg.sequence_logps(c_logps, c_mask, avg)[pair_chosen]  # (P,)
            ref_chosen = alg.sequence_logps(ref_c, c_mask, avg)[pair_chosen]
            rejected = alg.sequence_logps(rollout_logps[rows], mask[rows], avg)  # (P,)
            ref_rejected = alg.sequence_logps(ref_r, mask[rows], avg)
            mean, m_dpo = alg.dpo_loss(
                chosen, ref_chosen, rejected, ref_rejected,
                torch.ones_like(rows, dtype=torch.bool), beta=args.dpo_beta,
            )  # fmt: skip
        else:  # no pair here: exactly 0, on the graph (every process runs the same backward)
            mean, m_dpo = rollout_logps.sum() * 0.0, {}
        # Choice 2: this micro-batch's pair sum over the generation batch's pairs, as TRL's dapo.
        normalizer = inputs["num_pairs_in_batch"].clamp(min=1) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps
            normalizer = normalizer / self.args.steps_per_generation
        l_dpo = mean * len(rows) / normalizer
        loss, _ = alg.orapo_loss(l_grpo, l_dpo, w)
        self._log_loss_metrics(mode, l_grpo, mean, len(rows), m_dpo)
        return loss

    def _log_loss_metrics(
        self, mode: str, l_grpo: torch.Tensor, mean: torch.Tensor, pairs: int, m_dpo: dict
    ) -> None:
        """``loss/grpo`` (TRL's, mean over processes), ``loss/dpo`` (mean over the pairs of all
        processes) and the pair-weighted means of :func:`~orapo.algorithms.dpo_loss`'s metrics."""
        device, metrics = self.accelerator.device, self._metrics[mode]
        metrics["loss/grpo"].append(self.accelerator.gather(l_grpo.detach()).mean().item())
        keys = ["dpo/chosen_reward", "dpo/rejected_reward", "dpo/reward_margin", "dpo/accuracy"]
        local = [float(mean.detach()) * pairs] + [m_dpo.get(key, 0.0) * pairs for key in keys]
        sums = self.accelerator.reduce(
            torch.tensor([*local, float(pairs)], dtype=torch.float64, device=device), "sum"
        ).tolist()
        if sums[-1] > 0:
            metrics["loss/dpo"].append(sums[0] / sums[-1])
            for key, total in zip(keys, sums[1:-1], strict=True):
                metrics[key].append(total / sums[-1])

    def _score(self, model, inputs, rows, completion_ids, completion_mask) -> torch.Tensor:
        """``(len(rows), Tc)`` per-token log-probs of ``completion_ids`` after the prompts (and
        images) of ``rows``, through TRL's own scoring forward."""
        ids, attention, extra = _rows_with_completions(
            inputs, rows, completion_ids, completion_mask
        )
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model, ids, attention, completion_ids.size(1), **extra
        )
        return logps

    def _reference_logps(self, inputs, rows, completion_ids, completion_mask) -> torch.Tensor:
        """:meth:`_score` under the reference: TRL's reference model, or the policy with its
        adapter disabled (or its frozen ``ref`` adapter) under PEFT."""
        if self.ref_model is not None:
            return self._score(self.ref_model, inputs, rows, completion_ids, completion_mask)
        unwrapped = self.accelerator.unwrap_model(self.model)
        adapter = "ref" if "ref" in getattr(unwrapped, "peft_config", {}) else None
        with use_adapter(unwrapped, adapter_name=adapter):
            return self._score(self.model, inputs, rows, completion_ids, completion_mask)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}"
            )
            with open(os.path.join(folder, CONTROLLER_FILE), "w", encoding="utf-8") as fh:
                json.dump(self.controller.state_dict(), fh)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = None if checkpoint is None else os.path.join(checkpoint, CONTROLLER_FILE)
        if path is not None and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                self.controller.load_state_dict(json.load(fh))
            self._mix_w = self.controller.weight()


def _first_of_each(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct ``values`` ``(G,)`` and the position of each one's first occurrence.

    >>> _first_of_each(torch.tensor([7, 3, 7, 5]))
    (tensor([3, 5, 7]), tensor([1, 3, 0]))
    """
    groups, inverse = torch.unique(values, sorted=True, return_inverse=True)
    positions = torch.arange(len(values), device=values.device)
    first = torch.full_like(groups, len(values)).scatter_reduce(
        0, inverse, positions, reduce="amin"
    )
    return groups, first


def _pad_cat(ids: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Completions of different widths ``(n_i, T_i)`` stacked, right-padded with 0 (masked)."""
    width = max(x.size(1) for x in ids)

    def stack(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(x, (0, width - x.size(1))) for x in parts])

    return stack(ids), stack(masks)


#: Per-row inputs of TRL's generation batch that the scoring forward does not handle here.
_UNSUPPORTED = ("pixel_attention_mask", "spatial_shapes", "num_tiles", "image_sizes",
                "image_position_ids")  # fmt: skip


def _rows_with_completions(
    inputs: dict[str, Any], rows: torch.Tensor, completion_ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Input ids, attention mask and multimodal inputs of ``completion_ids`` ``(R, Tc)`` after
    the prompts of rows ``rows`` of a TRL micro-batch (text-only, or Qwen-VL-style images:
    ``pixel_values`` rows per ``image_grid_thw``)."""
    unsupported = [key for key in _UNSUPPORTED if inputs.get(key) is not None]
    if unsupported:
        raise NotImplementedError(
            f"OraPOTrainer scores the ground truth of text-only and Qwen-VL-style models; this "
            f"model's inputs have {', '.join(unsupported)}"
        )
    prompt_ids, prompt_mask = inputs["prompt_ids"][rows], inputs["prompt_mask"][rows]
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, mask.to(prompt_mask.dtype)], dim=1)
    extra: dict[str, Any] = {}
    p = prompt_ids.size(1)
    for key in ("token_type_ids", "mm_token_type_ids"):
        if inputs.get(key) is not None:
            prompt_part = inputs[key][rows, :p]
            extra[key] = torch.cat([prompt_part, prompt_part.new_zeros(completion_ids.shape)], 1)
    if inputs.get("pixel_values") is not None:
        grid, per_row = inputs["image_grid_thw"], list(inputs["num_images"])
        first_image = [sum(per_row[:r]) for r in range(len(per_row) + 1)]
        patches = grid.prod(dim=-1).tolist()
        first_patch = [sum(patches[:i]) for i in range(len(patches) + 1)]
        images = [i for r in rows.tolist() for i in range(first_image[r], first_image[r + 1])]
        extra["pixel_values"] = torch.cat(
            [inputs["pixel_values"][first_patch[i] : first_patch[i + 1]] for i in images]
        )
        extra["image_grid_thw"] = grid[images]
        extra["num_images"] = [per_row[r] for r in rows.tolist()]
    return ids, attention, extra


__all__ = ["CONTROLLER_FILE", "OraPOConfig", "OraPOTrainer", "combined_rewards"]
