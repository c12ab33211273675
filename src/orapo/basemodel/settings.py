"""How the embedded demo base model is built: one documented dataclass (``base.*`` in recipes).

It lives with the base model (``orapo.train.config`` includes it as ``TrainConfig.base``), so
``orapo model build-base`` and ``orapo train`` read the same settings, and the base model's
build imports nothing from the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from orapo.config_io import check_choice, documented
from orapo.synth.spec import PROFILES

#: Answer wordings of the chest question answering (orapo.basemodel.chest_vqa).
ANSWER_MODES: tuple[str, ...] = ("report", "plain")


@dataclass
class BaseModelSettings:
    """How the embedded demo base model is built when ``model.name_or_path`` is the builtin.

    Plays the part of Qwen2.5-VL-3B in the paper: a vision-language model that has seen chest
    images (it answers questions about them) but has never written a report for one. Its
    chest task draws a pool of synthetic studies with ``pool_seed``, never the demo's studies.
    docs/demo.md.
    """

    cache_dir: str = documented(
        "Where a base model built here is cached.", default="data/base-model"
    )
    preset: str = documented("Demo architecture preset (orapo.model.demo).", default="demo")
    steps: int = documented(
        "Pre-training steps (each a batch of captions or of chest questions).", default=5000
    )
    batch_size: int = documented("Pre-training batch size.", default=32)
    lr: float = documented("Pre-training peak learning rate (warmup, then cosine).", default=2e-3)
    n_captions: int = documented("Size of the general-domain caption world.", default=3000)
    caption_share: float = documented(
        "Share of pre-training steps on general captions (the rest: chest questions).",
        default=0.25,
    )
    pool_size: int = documented("Synthetic studies in the chest question pool.", default=4000)
    pool_seed: int = documented(
        "World seed of the chest question pool; keep it apart from the seeds you train and "
        "test on.",
        default=1000,
    )
    profile: str = documented(
        "World profile of the chest question pool (orapo.synth).", default="salient"
    )
    answers: str = documented(
        "Answer wording: report (yes + the pool study's own report sentence for the finding) or "
        "plain (yes / no only).",
        default="report",
    )
    list_share: float = documented(
        "Share of chest questions that ask for the list of abnormalities (the rest ask about "
        "one observation). 0 by default: a base that lists findings already writes "
        "report-like text under the report prompt (measured: base F1 0.25, over the 0.2 the "
        "demo allows; docs/demo.md).",
        default=0.0,
    )
    seed: int = documented("Seed for the initialisation, captions and batch order.", default=0)

    def __post_init__(self) -> None:
        check_choice("base.answers", self.answers, ANSWER_MODES)
        check_choice("base.profile", self.profile, PROFILES)
        for name in ("caption_share", "list_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"base.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("steps", "batch_size", "n_captions", "pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"base.{name} must be >= 1, got {getattr(self, name)}")
