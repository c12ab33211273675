"""The training recipe: one dataclass tree, documented once per field.

A recipe YAML under ``configs/`` fills any subset of these fields; ``orapo train --config
RECIPE section.field=value ...`` overrides them; the resolved tree is saved as
``RUN_DIR/config.yaml``. ``orapo train --describe`` prints every field with its default and help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from orapo.basemodel.settings import BaseModelSettings
from orapo.config_io import check_choice, check_literals, documented
from orapo.model.config import LoraSettings, ModelConfig, SamplingConfig
from orapo.synth.spec import PROFILES

#: ``model.name_or_path`` value meaning "the embedded demo base model, built and cached".
DEMO_BASE = "builtin:demo-base"


@dataclass
class SynthSettings:
    """The embedded synthetic world, generated when ``data.manifest`` is null."""

    dir: str = documented(
        "Folder of the synthetic world (generated if absent).", default="data/synth"
    )
    n: int = documented("Total studies over all splits.", default=1700)
    seed: int = documented("World seed.", default=0)
    size: int = documented("Image side in pixels.", default=112)
    profile: str = documented(
        "World profile: salient (findings drawn strongly on a quiet patient; the demo's) or "
        "realistic (subtler). docs/synth.md.",
        default="salient",
    )

    def __post_init__(self) -> None:
        check_choice("data.synth.profile", self.profile, PROFILES)

    split_fracs: list[float] = documented(
        "Train/val/test fractions.", default_factory=lambda: [0.7, 0.1, 0.2]
    )


@dataclass
class DataConfig:
    manifest: str | None = documented(
        "Manifest to train and evaluate on; null uses the embedded synthetic world.", default=None
    )
    synth: SynthSettings = field(default_factory=SynthSettings)
    train_split: str = documented("Split the policy trains on.", default="train")
    train_size: int | None = documented(
        "Use only the first N training studies (after a seeded shuffle); null = all. "
        "The paper's data-efficient settings are 400 and 1000.",
        default=1000,
    )
    val_split: str = documented("Split for periodic validation.", default="val")
    val_size: int | None = documented(
        "Studies used for periodic validation; null = all.", default=64
    )
    test_split: str = documented("Split for the before/after evaluation.", default="test")
    test_size: int | None = documented(
        "Studies used for before/after evaluation; null = all.", default=None
    )
    skip_bad_images: bool = documented(
        "Skip (and count) studies whose image is missing or unreadable instead of stopping.",
        default=False,
    )


@dataclass
class AlgorithmConfig:
    mode: Literal["orapo", "grpo", "sft"] = documented(
        "orapo: (1-w) GRPO + w DPO with w from the ZRR EMA; grpo: w = 0; sft: supervised "
        "next-token loss on the ground-truth reports (the paper's SFT ablation).",
        default="orapo",
    )
    reward: str = documented("Reward by registry name: facts, bleu, rouge_l.", default="facts")
    reward_options: dict = documented(
        "Keyword options for the reward (e.g. {beta: 2.0, labeler: rule}).", default_factory=dict
    )
    advantage_scale: Literal["group", "batch", "none"] = documented(
        "Advantage normalisation: group std (GRPO), batch std, or none (Dr. GRPO).",
        default="group",
    )
    loss_reduction: str = documented(
        "GRPO token reduction: grpo (seq-mean-token-mean), dapo (token-mean), dr_grpo.",
        default="dapo",
    )
    clip_eps_low: float = documented("PPO clip range below 1.", default=0.2)
    clip_eps_high: float = documented("PPO clip range above 1.", default=0.2)
    kl_beta: float = documented(
        "Weight of the k3 KL to the reference in the GRPO loss.", default=0.0
    )
    dpo_beta: float = documented("DPO temperature beta.", default=0.1)
    dpo_negatives: str = documented(
        "Which rollouts are DPO negatives: zero-reward (paper), all, below.",
        default="zero-reward",
    )
    dpo_threshold: float = documented("Reward threshold for dpo_negatives=below.", default=0.5)
    dpo_length_normalize: bool = documented(
        "Use mean instead of summed token log-probs in DPO.", default=False
    )
    zrr_alpha: float = documented("EMA momentum of the Zero-Reward Rate (paper: 0.5).", default=0.5)
    w_min: float = documented("Mixing weight at ZRR EMA 0 (paper: 0.05).", default=0.05)
    w_max: float = documented("Mixing weight at ZRR EMA 1 (paper: 0.15).", default=0.15)
    gamma: float = documented("Sharpening exponent of the mapping (paper: 2.0).", default=2.0)
    constant_w: float | None = documented(
        "Ablation: a fixed mixing weight instead of the ZRR-driven one.", default=None
    )
    zero_atol: float = documented("A reward counts as zero when |r| <= zero_atol.", default=0.0)
    dynamic_sampling: bool = documented(
        "DAPO's dynamic sampling: drop groups whose K rewards are all equal and refill the "
        "batch with groups of new images (the ZRR is still measured on the first draw).",
        default=False,
    )
    max_refill_rounds: int = documented(
        "Dynamic sampling: extra draws of batch_size images per step at most; a batch still "
        "short after them is filled up with equal-reward groups of the first draw.",
        default=3,
    )

    def __post_init__(self) -> None:
        """Choice fields against their registries, so a typo fails when the recipe is read
        (not at the first training step), naming the valid values."""
        from orapo import algorithms as alg
        from orapo.rewards import REWARDS

        check_literals(self, "algorithm")
        check_choice("algorithm.reward", self.reward, REWARDS.names())
        check_choice("algorithm.loss_reduction", self.loss_reduction, alg.REDUCTIONS.names())
        check_choice("algorithm.dpo_negatives", self.dpo_negatives, alg.NEGATIVE_RULES)


@dataclass
class TrainerConfig:
    steps: int = documented("Optimizer steps.", default=120)
    batch_size: int = documented("Images per step (each gets K rollouts).", default=16)
    grad_accum: int = documented(
        "Micro-batches per optimizer step: each process's images in exactly this many groups "
        "(at least one image each); every loss stays the global batch's mean (docs/training.md).",
        default=1,
    )
    mu: int = documented(
        "Policy updates per batch of rollouts (GRPO's inner iterations; 1 = on-policy).",
        default=1,
    )
    lr: float = documented("Peak learning rate.", default=5e-4)
    lr_schedule: Literal["constant", "linear", "cosine"] = documented(
        "Schedule after warmup.", default="constant"
    )
    warmup_steps: int = documented("Linear warmup steps.", default=5)
    weight_decay: float = documented("AdamW weight decay.", default=0.0)
    max_grad_norm: float = documented("Gradient clipping norm (<= 0 disables).", default=1.0)
    rollout_budget: int = documented(
        "Stop once this many rollouts have been generated over all processes, refills "
        "included (0 = no budget; the run then ends after `steps`).",
        default=0,
    )
    seed: int = documented("Seed of data order, sampling and initialisation.", default=0)
    eval_every: int = documented("Validate every N steps (0 = only at the end).", default=40)
    save_every: int = documented("Checkpoint every N steps (0 = only at the end).", default=40)
    keep_checkpoints: int = documented("How many periodic checkpoints to keep.", default=2)
    log_every: int = documented("Write metrics every N steps.", default=1)
    report_to: list[str] = documented(
        "Trackers through accelerate: tensorboard, wandb, mlflow (when installed).",
        default_factory=lambda: ["tensorboard"],
    )
    threads: int | None = documented("torch CPU threads (null = torch's default).", default=None)
    eval_batch_size: int = documented("Batch size of greedy generation in evaluation.", default=64)
    engine: Literal["orapo", "trl"] = documented(
        "Training engine: orapo (this package's trainer) or trl (TRL's GRPOTrainer with the "
        "OraPO term, orapo.integrations.trl; docs/trl.md). Fields one engine cannot honour are "
        "an error naming them.",
        default="orapo",
    )

    #: Trackers ``report_to`` may name (each used only when its package is installed).
    TRACKERS: ClassVar[tuple[str, ...]] = ("tensorboard", "wandb", "mlflow")

    def __post_init__(self) -> None:
        check_literals(self, "trainer")
        for name in self.report_to:
            check_choice("trainer.report_to", name, self.TRACKERS)


@dataclass
class EvalConfig:
    before: bool = documented(
        "Evaluate the base policy on the test split before training.", default=True
    )
    after: bool = documented("Evaluate the trained policy on the test split.", default=True)
    shuffled: bool = documented(
        "Also evaluate the trained policy with the test images shuffled among the studies "
        "(the grounding check: a model that reads the image scores clearly lower).",
        default=True,
    )
    max_new_tokens: int = documented("Greedy generation length in evaluation.", default=128)
    examples: int = documented("Example studies in the HTML page.", default=8)


@dataclass
class TrainConfig:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)
    base: BaseModelSettings = field(default_factory=BaseModelSettings)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path=DEMO_BASE))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.algorithm.mode != "sft" and self.sampling.k < 2:
            raise ValueError(
                "GRPO and OraPO need at least 2 rollouts per image: set sampling.k >= 2"
            )
        if not 0.0 <= self.algorithm.w_min <= self.algorithm.w_max <= 1.0:
            raise ValueError("need 0 <= algorithm.w_min <= algorithm.w_max <= 1")
        if self.algorithm.max_refill_rounds < 0 or self.trainer.rollout_budget < 0:
            raise ValueError("algorithm.max_refill_rounds and trainer.rollout_budget must be >= 0")
        if self.trainer.batch_size % self.trainer.grad_accum:
            raise ValueError("trainer.batch_size must be a multiple of trainer.grad_accum")


__all__ = [
    "AlgorithmConfig",
    "BaseModelSettings",
    "DEMO_BASE",
    "DataConfig",
    "EvalConfig",
    "LoraSettings",
    "ModelConfig",
    "SamplingConfig",
    "SynthSettings",
    "TrainConfig",
    "TrainerConfig",
]
