"""Build, pre-train, ship and cache the embedded demo base model.

1. A demo Qwen2.5-VL-architecture model (orapo.model.build_demo_model) whose byte-level BPE
   tokenizer is trained on captions, the chest questions and answers, and the report text of
   the question pool: the tokenizer knows the words, as Qwen's does.
2. Supervised pre-training on two kinds of batches, mixed at random (``caption_share``):
   - the general caption world (orapo.basemodel.scenes) with the caption prompt: it learns to
     look at an image and describe it in sentences;
   - chest visual question answering (orapo.basemodel.chest_vqa) on a pool of synthetic
     studies drawn with a seed of their own: it learns to see chest findings, and the
     radiology words for them, one question at a time. It never sees a report written for an
     image, nor any of the demo's studies.
3. Saved with the report prompt recorded and a build record (``base_model.json``: settings,
   seed, steps, data, wall time, held-out VQA accuracy per observation).

Where a run finds its base (:func:`ensure_base_model`): the cache folder, then the base shipped
inside the package (``orapo/basemodel/shipped/``, built by ``orapo model build-base``), then a
fresh build into the cache. A folder is named by a key of the settings, so a recipe that asks
for other settings never gets a base built with these.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from orapo.basemodel.settings import BaseModelSettings

BASE_FORMAT = "orapo-demo-base-v4"
DONE_FILE = "base_model.json"
#: Image side of the chest question pool; the demo world's (orapo.train.config.SynthSettings).
POOL_IMAGE_SIZE = 112
#: Held-out studies for the build record's VQA accuracy (drawn with the pool's seed + 1; fewer
#: for a smaller pool).
HELD_OUT = 600


def cache_key(settings: BaseModelSettings) -> str:
    payload = {k: v for k, v in asdict(settings).items() if k != "cache_dir"}
    payload["format"] = BASE_FORMAT
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def shipped_dir() -> Path:
    """The folder of bases shipped inside the package."""
    return Path(str(resources.files("orapo.basemodel") / "shipped"))


def find_base_model(settings: BaseModelSettings) -> Path | None:
    """A complete base model for ``settings`` in the cache or shipped with the package."""
    name = f"base-{cache_key(settings)}"
    for folder in (Path(settings.cache_dir), shipped_dir()):
        if (folder / name / DONE_FILE).is_file():
            return folder / name
    return None


def ensure_base_model(settings: BaseModelSettings, console) -> Path:
    """The base model directory for ``settings``: cached, shipped, or built now and cached."""
    found = find_base_model(settings)
    if found is not None:
        console.print(f"Base model: {found}")
        return found
    target = Path(settings.cache_dir) / f"base-{cache_key(settings)}"
    console.print(
        f"Building the demo base model in {target} ({settings.steps} steps; no shipped base "
        "matches these base.* settings)"
    )
    return build_base_model(settings, target, console)


def build_base_model(settings: BaseModelSettings, target: Path, console) -> Path:
    """Pre-train a base with ``settings`` into ``target`` (complete, or absent on failure)."""
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    record = pretrain_base(settings, work / "model", console)
    record["seconds"] = round(time.perf_counter() - started, 1)
    (work / "model" / DONE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    (work / "model").rename(target)  # the record is inside: a folder with it is complete
    shutil.rmtree(work, ignore_errors=True)
    return target


def caption_prompt_path() -> str:
    return str(resources.files("orapo.basemodel") / "caption_v1.yaml")


def pretrain_base(settings: BaseModelSettings, out_dir: Path, console) -> dict:
    """Build the untrained demo model, pre-train it, save it to ``out_dir``; the build record."""
    import numpy as np
    import torch
    from rich.progress import Progress
    from transformers import get_cosine_schedule_with_warmup

    from orapo.algorithms import sft_loss
    from orapo.basemodel.chest_vqa import VqaSampler, draw_pool, load_vocab, vqa_accuracy
    from orapo.basemodel.scenes import caption_dataset
    from orapo.model import LoraSettings, ModelConfig, build_demo_model, load_policy, load_prompt
    from orapo.model.demo import get_preset

    preset = get_preset(settings.preset)
    console.print(f"Drawing the chest question pool: {settings.pool_size} studies")
    pool = draw_pool(settings.pool_size, settings.pool_seed, settings.profile, POOL_IMAGE_SIZE)
    vocab = load_vocab()
    sampler = VqaSampler(pool, vocab, mode=settings.answers, list_share=settings.list_share)
    captions = caption_dataset(settings.n_captions, preset.image_size, settings.seed)
    order = np.random.default_rng(settings.seed)
    tokenizer_texts = (
        [c for _, c in captions]
        + [q for q in vocab.questions.values()]
        + [a for _, _, a in sampler.batch(order, 2000)]
        + [s.report for s in pool]  # text only: the tokenizer, never the model, reads it
    )
    untrained = out_dir.parent / "untrained"
    build_demo_model(untrained, tokenizer_texts, preset=settings.preset, seed=settings.seed)
    policy = load_policy(
        ModelConfig(
            name_or_path=str(untrained),
            lora=LoraSettings(enabled=False, train_vision=True),
            prompt=caption_prompt_path(),
        ),
        trainable=True,
    )
    caption_prompt = load_prompt(caption_prompt_path())
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=settings.lr)
    schedule = get_cosine_schedule_with_warmup(
        optimizer, max(1, settings.steps // 20), settings.steps
    )
    losses: list[float] = []
    with Progress(console=console, transient=False) as bar:
        task = bar.add_task("pre-train base", total=settings.steps)
        for step in range(1, settings.steps + 1):
            if order.random() < settings.caption_share:  # general captioning
                picks = order.choice(len(captions), settings.batch_size, replace=False)
                batch = [(captions[i][0], caption_prompt, captions[i][1]) for i in picks]
            else:  # chest questions
                batch = sampler.batch(order, settings.batch_size)
            prompts = policy.prompt_batch([im for im, _, _ in batch], [p for _, p, _ in batch])
            ids, mask = policy.encode_completions([a for _, _, a in batch], max_tokens=160)
            index = torch.arange(len(batch), device=ids.device)
            loss, _ = sft_loss(policy.completion_logprobs(prompts, ids, mask, index), mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(task, advance=1, description=f"pre-train base, loss {losses[-1]:.3f}")
            if step % max(1, settings.steps // 10) == 0:  # a line also in logs without a bar
                recent = losses[-max(1, settings.steps // 10) :]
                console.print(f"step {step}/{settings.steps}: loss {sum(recent) / len(recent):.3f}")
    policy.model.eval()
    n_held_out = min(HELD_OUT, settings.pool_size)
    held_out = draw_pool(n_held_out, settings.pool_seed + 1, settings.profile, POOL_IMAGE_SIZE)
    with torch.no_grad():
        accuracy = vqa_accuracy(policy, held_out, vocab)
    console.print(f"held-out VQA balanced accuracy: {accuracy.get('mean', float('nan')):.3f}")
    policy.set_prompt(load_prompt())
    policy.save(out_dir)
    shutil.rmtree(untrained, ignore_errors=True)
    tail = losses[-50:]
    return {
        "format": BASE_FORMAT,
        "key": cache_key(settings),
        "settings": asdict(settings),
        "command": build_command(settings),
        "data": {
            "captions": settings.n_captions,
            "chest_pool": {
                "studies": settings.pool_size,
                "seed": settings.pool_seed,
                "profile": settings.profile,
                "answers": settings.answers,
                "vocabulary": vocab.version,
            },
            "held_out": {"studies": n_held_out, "seed": settings.pool_seed + 1},
            "report_text": "none (the tokenizer also reads the pool's report text)",
        },
        "final_loss": sum(tail) / len(tail),
        "vqa_balanced_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "parameters": policy.num_parameters(),
    }


def build_command(settings: BaseModelSettings) -> str:
    """The ``orapo model build-base`` command that rebuilds a base with ``settings``."""
    default = BaseModelSettings()
    flags = [
        f"base.{k}={v}"
        for k, v in asdict(settings).items()
        if k != "cache_dir" and getattr(default, k) != v
    ]
    return " ".join(["orapo model build-base --out DIR", *flags])
