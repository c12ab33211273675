"""Assemble a run: its data, its policy (building the demo base model if asked), the trainer."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orapo.manifest import Manifest, Study, read_manifest
from orapo.train.config import DEMO_BASE, TrainConfig
from orapo.train.data import check_images, select_studies

if TYPE_CHECKING:
    from rich.console import Console

    from orapo.train.loop import Trainer


@dataclass
class TrainData:
    manifest: Manifest
    train: list[Study]
    val: list[Study]
    test: list[Study]
    #: studies skipped for a bad image (data.skip_bad_images), per split and reason
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.manifest.root


def manifest_path(cfg: TrainConfig) -> Path:
    """The manifest a run reads: the recipe's, or the embedded synthetic world's."""
    if cfg.data.manifest is not None:
        return Path(cfg.data.manifest)
    return Path(cfg.data.synth.dir) / "manifest.jsonl"


def process_state():
    """accelerate's process state, set up as an Accelerator would set it up (it reads
    ``ACCELERATE_USE_CPU``; a bare ``PartialState()`` does not, and would leave every process of
    a CPU torchrun believing it is alone)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def resolve_data(cfg: TrainConfig, console) -> TrainData:
    """Read (and, for the synthetic world, first generate) the manifest; select the splits.

    Under several processes, call it inside ``main_process_first()`` so that only the main
    process generates the world and the others read it once it is complete.
    """
    path = manifest_path(cfg)
    if cfg.data.manifest is None and not path.is_file():
        from orapo.synth import generate

        s = cfg.data.synth
        console.print(f"Generating the synthetic chest X-ray world: {s.n} studies in {s.dir}")
        generate(
            s.dir,
            s.n,
            seed=s.seed,
            size=s.size,
            split_fracs=tuple(s.split_fracs),
            workers=2,
            profile=s.profile,
        )
    manifest = read_manifest(path)
    d, seed = cfg.data, cfg.trainer.seed
    splits, skipped_all = {}, {}
    for name, split, size in (
        ("train", d.train_split, d.train_size),
        ("val", d.val_split, d.val_size),
        ("test", d.test_split, d.test_size),
    ):
        studies = select_studies(manifest, split, size, seed)
        studies, skipped = check_images(studies, manifest.root, skip_bad=d.skip_bad_images)
        if skipped:
            skipped_all[name] = dict(skipped)
            console.print(
                f"[yellow]{name}: skipped {sum(skipped.values())} studies with bad images: "
                + ", ".join(f"{n} x {r}" for r, n in skipped.items())
                + "[/yellow]"
            )
        splits[name] = studies
    console.print(
        f"Data: {path} - train {len(splits['train'])}, val {len(splits['val'])}, "
        f"test {len(splits['test'])} studies"
    )
    return TrainData(manifest, **splits, skipped=skipped_all)


def resolve_model(cfg: TrainConfig, console) -> str:
    """The model directory to train: the recipe's, or the cached embedded base model."""
    if cfg.model.name_or_path != DEMO_BASE:
        return cfg.model.name_or_path
    from orapo.basemodel.build import ensure_base_model

    return str(ensure_base_model(cfg.base, console))


def available_trackers(names: list[str], console) -> list[str]:
    """Keep the trackers whose package is installed; say which were dropped."""
    packages = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    kept = []
    for name in names:
        if name not in packages:
            raise ValueError(
                f"trainer.report_to: unknown tracker {name!r}; valid: {', '.join(packages)}"
            )
        if importlib.util.find_spec(packages[name]) is None:
            console.print(f"[yellow]{name} is not installed: not logging to it[/yellow]")
            continue
        kept.append(name)
    return kept


def unsupported_sharding(acc) -> str | None:
    """Why ``acc``'s distributed setup cannot train a policy, or None.

    Rollouts call ``generate`` and scoring calls ``get_image_features`` outside the prepared
    module's forward, so every process needs whole parameters: DDP and DeepSpeed ZeRO-1/2 work;
    FSDP and ZeRO-3 shard the parameters themselves (FSDP fails with "got mixed torch.Tensor
    and DTensor").
    """
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        return "FSDP shards the parameters"
    if acc.distributed_type == DistributedType.DEEPSPEED:
        stage = acc.state.deepspeed_plugin.zero_stage
        if stage is not None and int(stage) >= 3:
            return "DeepSpeed ZeRO-3 shards the parameters"
    return None


def build_trainer(cfg: TrainConfig, run_dir: Path, data: TrainData, console: Console) -> Trainer:
    """Accelerator, policy, optimizer, scheduler, reward, ZRR controller -> Trainer."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, set_seed
    from transformers import get_scheduler

    from orapo import algorithms as alg
    from orapo.model import load_policy
    from orapo.rewards import make_reward
    from orapo.train.checkpoint import save_trainable_only
    from orapo.train.loop import Trainer

    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(t.threads)
    trackers = available_trackers(list(t.report_to), console)
    # The scheduler steps once per optimizer step (accelerate would otherwise step it once per
    # process); micro-batches accumulate through accelerate (Trainer.backward).
    # No accelerate dataloader here: gradients sync on the last micro-batch only, never because
    # some other run's dataloader (a TRL trainer in the same process) ended.
    acc = Accelerator(
        log_with=trackers or None,
        project_dir=str(run_dir),
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=t.grad_accum, adjust_scheduler=False, sync_with_dataloader=False
        ),
        step_scheduler_with_optimizer=False,
    )
    # accelerate's gradient state is shared by every Accelerator of a process and keeps the first
    # one's setting: set ours (a DeepSpeed config is checked against it after prepare).
    acc.gradient_accumulation_steps = t.grad_accum
    sharded = unsupported_sharding(acc)
    if sharded is not None:
        raise ValueError(
            f"{sharded}, but rollouts and scoring need whole parameters on every process: use "
            "DDP (configs/accelerate/ddp.yaml) or DeepSpeed ZeRO-2 "
            "(configs/accelerate/deepspeed_zero2.yaml)"
        )
    if t.batch_size % acc.num_processes:
        raise ValueError(
            f"trainer.batch_size={t.batch_size} must be divisible by the "
            f"{acc.num_processes} processes"
        )
    if t.batch_size // acc.num_processes < t.grad_accum:
        raise ValueError(
            f"trainer.batch_size={t.batch_size} over {acc.num_processes} processes leaves fewer "
            f"images per process than trainer.grad_accum={t.grad_accum} micro-batches"
        )
    set_seed(t.seed)

    policy = load_policy(cfg.model, trainable=True)
    a = cfg.algorithm
    if not policy.is_lora and a.mode != "sft" and (a.kl_beta > 0 or a.mode == "orapo"):
        policy.prepare_reference()
    optimizer = torch.optim.AdamW(
        policy.trainable_parameters(), lr=t.lr, weight_decay=t.weight_decay
    )
    scheduler = get_scheduler(
        {"constant": "constant_with_warmup"}.get(t.lr_schedule, t.lr_schedule),
        optimizer,
        num_warmup_steps=t.warmup_steps,
        num_training_steps=t.steps * t.mu,
    )
    model, optimizer, scheduler = acc.prepare(policy.model, optimizer, scheduler)
    if acc.gradient_accumulation_steps != t.grad_accum:  # a DeepSpeed config that sets its own
        raise ValueError(
            f"the accelerate config accumulates {acc.gradient_accumulation_steps} micro-batches "
            f"but trainer.grad_accum={t.grad_accum}; drop gradient_accumulation_steps from the "
            "DeepSpeed config (orapo sets it from trainer.grad_accum)"
        )
    save_trainable_only(acc)
    policy.forward_module = model
    if acc.num_processes > 1:
        # DDP wants one forward per backward: score a micro-batch's completions in one chunk.
        per_process = t.batch_size // acc.num_processes
        policy.config.logprob_chunk_size = max(
            policy.config.logprob_chunk_size, per_process * (cfg.sampling.k + 1)
        )
    reward_fn = make_reward(a.reward, **a.reward_options)
    controller = alg.ZRRController(
        alpha=a.zrr_alpha,
        w_min=a.w_min,
        w_max=a.w_max,
        gamma=a.gamma,
        mode="ema" if a.constant_w is None else "constant",
        constant_w=a.constant_w or 0.0,
    )
    if trackers:
        from orapo.config_io import to_dict

        flat = _flatten(to_dict(cfg))
        acc.init_trackers("orapo", config=flat)
    return Trainer(
        cfg, run_dir, acc, policy, optimizer, scheduler, reward_fn, controller, data, console
    )


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config -> flat {"a.b": scalar} (trackers take scalars only)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = "null" if value is None else value
        else:
            out[name] = str(value)
    return out
