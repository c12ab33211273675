"""``orapo train --config RECIPE trainer.engine=trl``: one recipe, trained by TRL.

:func:`run_trl` is :func:`orapo.train.run.run_training` for the TRL engine::

    1. the recipe checked for fields TRL cannot honour (:func:`check_trl_fields`)
    2. data and base model exactly as orapo's engine resolves them (train/setup.py)
    3. the policy (orapo's loader: LoRA or full fine-tuning, vision tower frozen or not)
    4. the dataset: prompt (orapo's report prompt), image, reference report, gold labels
    5. the reward (orapo.rewards, by name: FactS reads ``reference`` and ``labels``)
    6. the recipe as an OraPOConfig (:func:`trl_config`) -> OraPOTrainer.train()
    7. the model saved to RUN_DIR/model; orapo's evaluation before and after (eval.*)

TRL writes its checkpoints and ``trainer_state.json`` under ``RUN_DIR/trl``; every logged row
(``zrr/raw``, ``zrr/ema``, ``mix/w``, ``loss/dpo``, TRL's own) is also appended to
``RUN_DIR/metrics.jsonl``; ``summary.json`` as orapo's engine writes it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from orapo.config_io import ConfigError, save_yaml, to_dict
from orapo.train.config import TrainConfig

#: Recipe fields the TRL engine cannot honour: (field, the only value it accepts, why).
UNSUPPORTED: tuple[tuple[str, Any, str], ...] = (
    ("algorithm.dynamic_sampling", False, "DAPO's refills run inside orapo's own trainer"),
    ("trainer.rollout_budget", 0, "TRL stops after trainer.steps optimizer steps"),
    ("trainer.eval_every", 0, "periodic validation runs in orapo's own trainer; eval.* runs"),
    ("sampling.do_sample", True, "TRL always samples"),
    ("model.max_prompt_tokens", None, "TRL does not refuse long prompts"),
    ("model.logprob_chunk_size", 16, "TRL scores per_device_train_batch_size completions at once"),
    ("model.logprob_token_chunk", 1024, "TRL's fused LM head chunks itself"),
)

#: orapo's loss reductions -> TRL's ``loss_type`` (the same mean over the global batch).
LOSS_TYPES = {
    "grpo": "grpo",
    "seq-mean-token-mean": "grpo",
    "dapo": "dapo",
    "token-mean": "dapo",
    "bnpo": "dapo",
    "dr_grpo": "dr_grpo",
    "seq-sum-constant": "dr_grpo",
}

#: orapo's ``trainer.lr_schedule`` -> transformers' ``lr_scheduler_type``.
SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_trl_fields(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` naming the first field TRL cannot honour."""
    if cfg.algorithm.mode == "sft":
        raise ConfigError(
            "algorithm.mode=sft has no meaning on trainer.engine=trl (TRL's GRPOTrainer is RL "
            "only); use trainer.engine=orapo"
        )
    for name, accepted, why in UNSUPPORTED:
        value = _get(cfg, name)
        if value != accepted:
            raise ConfigError(
                f"{name}={value!r} has no meaning on trainer.engine=trl ({why}); set "
                f"{name}={'null' if accepted is None else json.dumps(accepted)} or use "
                "trainer.engine=orapo"
            )


def trl_config(cfg: TrainConfig, run_dir: Path, num_processes: int, trackers: list[str]):
    """The recipe as an :class:`~orapo.integrations.trl.OraPOConfig` for ``num_processes``."""
    from orapo.integrations.trl import OraPOConfig

    check_trl_fields(cfg)
    a, t, s, m = cfg.algorithm, cfg.trainer, cfg.sampling, cfg.model
    rollouts = t.batch_size * s.k  # one optimizer step = batch_size images x K rollouts
    per_device, rest = divmod(rollouts, num_processes * t.grad_accum)
    if rest or per_device == 0:
        raise ConfigError(
            f"trainer.batch_size x sampling.k = {rollouts} rollouts must split evenly over "
            f"{num_processes} processes x trainer.grad_accum={t.grad_accum} micro-batches"
        )
    return OraPOConfig(
        output_dir=str(run_dir / "trl"),
        # the step: B images x K rollouts over processes and micro-batches
        max_steps=t.steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=t.grad_accum,
        num_generations=s.k,
        num_iterations=t.mu,
        # sampling
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k or 0,
        max_completion_length=s.max_new_tokens,
        # GRPO
        loss_type=LOSS_TYPES[a.loss_reduction],
        scale_rewards=a.advantage_scale,
        epsilon=a.clip_eps_low,
        epsilon_high=a.clip_eps_high,
        beta=a.kl_beta,
        # OraPO (algorithm.mode=grpo: w = 0)
        constant_w=0.0 if a.mode == "grpo" else a.constant_w,
        zrr_alpha=a.zrr_alpha,
        w_min=a.w_min,
        w_max=a.w_max,
        gamma=a.gamma,
        zero_atol=a.zero_atol,
        dpo_beta=a.dpo_beta,
        dpo_negatives=a.dpo_negatives,
        dpo_threshold=a.dpo_threshold if a.dpo_negatives == "below" else None,
        dpo_length_normalize=a.dpo_length_normalize,
        # optimisation
        learning_rate=t.lr,
        lr_scheduler_type=SCHEDULES[t.lr_schedule],
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=max(t.max_grad_norm, 0.0),
        optim="adamw_torch",
        seed=t.seed,
        bf16=m.dtype == "bfloat16",
        fp16=m.dtype == "float16",
        use_cpu=m.device == "cpu",
        activation_checkpointing=m.gradient_checkpointing,
        # checkpoints and logs
        save_strategy="steps",
        save_steps=t.save_every or t.steps,
        save_total_limit=t.keep_checkpoints,
        logging_steps=t.log_every,
        report_to=trackers or "none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def trl_dataset(studies: list, root: Path, prompt) -> Any:
    """A Hugging Face dataset of ``studies``: ``prompt`` (orapo's report prompt as
    conversational messages; TRL inserts the image), ``image`` (the frontal view),
    ``reference`` (the report: DPO's chosen, FactS's fallback) and ``labels`` (gold labels as
    JSON text, or null: FactS's reference facts)."""
    from datasets import Dataset

    from orapo.train.data import study_image

    if prompt.image_position != "before":
        raise ConfigError("model.prompt: TRL puts the image before the text; use a prompt "
                          "with image_position: before")  # fmt: skip
    messages = [] if prompt.system is None else [{"role": "system", "content": prompt.system}]
    messages.append({"role": "user", "content": prompt.instruction})
    return Dataset.from_dict(
        {
            "prompt": [messages] * len(studies),
            "image": [study_image(s, root) for s in studies],
            "reference": [s.report for s in studies],
            "labels": [None if s.labels is None else json.dumps(s.labels) for s in studies],
        }
    )


def dataset_reward(reward):
    """``reward`` reading the dataset's ``labels`` column (JSON text) as label dicts."""

    def wrapped(completions, **columns):
        labels = columns.get("labels")
        if labels is not None:
            columns["labels"] = [None if x is None else json.loads(x) for x in labels]
        return reward(completions, **columns)

    wrapped.__name__ = getattr(reward, "__name__", "reward")
    wrapped.metrics = getattr(reward, "metrics", None)
    return wrapped


def run_trl(cfg: TrainConfig, run_dir: Path, *, resume: bool = False, console=None) -> dict:
    """What ``orapo train`` does, with TRL as the engine (module docstring, steps 1-7)."""
    import torch
    from rich.console import Console
    from transformers import TrainerCallback

    from orapo.integrations.trl import OraPOTrainer
    from orapo.model import load_policy
    from orapo.model.policy import END_OF_TURN
    from orapo.rewards import make_reward
    from orapo.train.setup import available_trackers, process_state, resolve_data, resolve_model
    from orapo.train.tracking import MetricsLog, write_summary

    console = console or Console()
    started = time.perf_counter()
    check_trl_fields(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = process_state()
    with state.main_process_first():
        data = resolve_data(cfg, console)
        cfg.model.name_or_path = resolve_model(cfg, console)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    trackers = available_trackers(list(cfg.trainer.report_to), console)
    args = trl_config(cfg, run_dir, state.num_processes, trackers)
    if state.is_main_process:
        save_yaml(cfg, run_dir / "config.yaml")

    policy = load_policy(cfg.model, trainable=True)
    policy.tokenizer.eos_token = END_OF_TURN  # completions and ground truth end a chat turn
    args.generation_kwargs = {"suppress_tokens": policy.suppressed_token_ids or None}
    reward = make_reward(cfg.algorithm.reward, **cfg.algorithm.reward_options)
    log = MetricsLog(run_dir, enabled=state.is_main_process)

    class Metrics(TrainerCallback):  # every logged row -> RUN_DIR/metrics.jsonl
        def on_log(self, _args, train_state, control, logs=None, **kwargs):
            log.write(train_state.global_step, dict(logs or {}))

    trainer = OraPOTrainer(
        model=policy.model,
        reward_funcs=[dataset_reward(reward)],
        args=args,
        train_dataset=trl_dataset(data.train, data.root, policy.prompt),
        processing_class=policy.processor,
        callbacks=[Metrics()],
    )
    summary: dict[str, Any] = {"run_dir": str(run_dir), "mode": cfg.algorithm.mode, "engine": "trl"}
    if cfg.eval.before and not resume:
        summary.update(_evaluate(cfg, policy, data, run_dir, "base", state, console))
    checkpoints = sorted((run_dir / "trl").glob("checkpoint-*"))
    if resume and not checkpoints:
        raise FileNotFoundError(f"--resume: {run_dir / 'trl'} has no TRL checkpoint")
    if resume:
        log.truncate_after(int(checkpoints[-1].name.split("-")[-1]))
    trainer.train(resume_from_checkpoint=True if resume else None)
    model_dir = run_dir / "model"
    if state.is_main_process:
        policy.save(model_dir)
    state.wait_for_everyone()
    summary.update(
        model_dir=str(model_dir), steps=trainer.state.global_step, processes=state.num_processes
    )
    summary["zrr"] = trainer.controller.state_dict()
    if cfg.eval.after:
        summary.update(_evaluate(cfg, policy, data, run_dir, "final", state, console))
    if state.is_main_process:
        summary["wall_seconds"] = round(time.perf_counter() - started, 1)
        summary["status"] = "done"
        summary["config"] = to_dict(cfg)
        write_summary(run_dir, summary)
    return summary


def _evaluate(cfg, policy, data, run_dir: Path, name: str, state, console) -> dict:
    """orapo's evaluation of ``policy`` on the test split (main process; the others wait):
    ``{name: headline}`` and RUN_DIR/eval-NAME; with ``eval.shuffled`` after training, the
    grounding check as ``final_shuffled_images``."""
    from orapo.model import evaluate_policy
    from orapo.model.evaluate import write_evaluation
    from orapo.train.data import shuffle_images

    out: dict[str, Any] = {}
    if state.is_main_process:
        runs = [(name, data.test)]
        if name == "final" and cfg.eval.shuffled and len(data.test) > 1:
            runs.append(("final_shuffled_images", shuffle_images(data.test, cfg.trainer.seed)))
        for key, studies in runs:
            console.print(f"Evaluating ({key}) on {len(studies)} {cfg.data.test_split} studies")
            result = evaluate_policy(
                policy, studies, data.root, batch_size=cfg.trainer.eval_batch_size,
                max_new_tokens=cfg.eval.max_new_tokens,
                skip_bad_images=cfg.data.skip_bad_images, split=cfg.data.test_split,
            )  # fmt: skip
            folder = {"base": "eval-base", "final": "eval-final"}.get(key, "eval-final-shuffled")
            write_evaluation(result, run_dir / folder, data.root, cfg.eval.examples)
            s = result["summary"]
            out[key] = {
                "f1": s["clinical/positive/all14/micro_f1"],
                "precision": s["clinical/positive/all14/micro_precision"],
                "recall": s["clinical/positive/all14/micro_recall"],
                "protocol": "positive/all14/micro",
                "n": result["metrics"].get("n", math.nan),
            }
        policy.model.train()
    state.wait_for_everyone()
    return out
