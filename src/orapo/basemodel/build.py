"""Build, pre-train and cache the embedded demo base model.

1. A demo Qwen2.5-VL-architecture model (orapo.model.build_demo_model) whose byte-level BPE
   tokenizer is trained on captions and report text: the tokenizer knows the words, as Qwen's
   does, but the model has never been trained to write them.
2. Supervised pre-training on two tasks, alternating batches:
   - the general caption world (orapo.basemodel.scenes) with the caption prompt: it learns to
     look at an image and describe it in sentences;
   - radiology report text under the report prompt, shown with a blank image (text without
     its images): it learns how reports are written, but has never seen a chest X-ray with one,
     so nothing ties what it writes to what an image shows. It cannot read a chest X-ray.
3. Saved with the report prompt recorded, cached under a key of its settings: a second run (or
   another recipe with the same base settings) reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from orapo.train.config import BaseModelSettings

BASE_FORMAT = "orapo-demo-base-v3"
DONE_FILE = "base_model.json"


def cache_key(settings: BaseModelSettings) -> str:
    payload = {k: v for k, v in asdict(settings).items() if k != "cache_dir"}
    payload["format"] = BASE_FORMAT
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def ensure_base_model(
    settings: BaseModelSettings, reports: Sequence[tuple[Path, str]], console
) -> Path:
    """The cached base model directory for ``settings``, built first if absent."""
    target = Path(settings.cache_dir) / f"base-{cache_key(settings)}"
    if (target / DONE_FILE).is_file():
        console.print(f"Base model: {target} (cached)")
        return target
    console.print(f"Building the demo base model in {target} (cached for later runs)")
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    record = pretrain_base(settings, reports, work / "model", console)
    shutil.copytree(work / "model", target, dirs_exist_ok=False) if not target.exists() else None
    shutil.rmtree(work, ignore_errors=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    (target / DONE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return target


def caption_prompt_path() -> str:
    return str(resources.files("orapo.basemodel") / "caption_v1.yaml")


def pretrain_base(
    settings: BaseModelSettings, reports: Sequence[tuple[Path, str]], out_dir: Path, console
) -> dict:
    """Build the untrained demo model, pre-train it, save it to ``out_dir``.

    reports: (chest image path, report text) of the training split; only the text is used
    (each report is shown with a blank image).
    """
    import torch
    from PIL import Image
    from rich.progress import Progress

    from orapo.algorithms import sft_loss
    from orapo.basemodel.scenes import caption_dataset
    from orapo.model import (
        LoraSettings,
        ModelConfig,
        build_demo_model,
        load_image,
        load_policy,
        load_prompt,
    )
    from orapo.model.demo import get_preset

    preset = get_preset(settings.preset)
    captions = caption_dataset(settings.n_captions, preset.image_size, settings.seed)
    untrained = out_dir.parent / "untrained"
    build_demo_model(
        untrained,
        [c for _, c in captions] + [text for _, text in reports],
        preset=settings.preset,
        seed=settings.seed,
    )
    policy = load_policy(
        ModelConfig(
            name_or_path=str(untrained),
            lora=LoraSettings(enabled=False, train_vision=True),
            prompt=caption_prompt_path(),
        ),
        trainable=True,
    )
    caption_prompt, report_prompt = policy.prompt, load_prompt()
    size = load_image(reports[0][0]).size if reports else (preset.image_size,) * 2
    blank = Image.new("RGB", size)
    report_texts = [text for _, text in reports]
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=settings.lr)
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(1.0, s / settings.steps)))
        ),
    )
    order = random.Random(settings.seed)
    losses = []
    with Progress(console=console, transient=False) as bar:
        task = bar.add_task("pre-train base", total=settings.steps)
        for step in range(settings.steps):
            if step % 2 == 0 or not reports:  # general captioning
                batch = order.sample(captions, settings.batch_size)
                policy.set_prompt(caption_prompt)
            else:  # radiology text without its images
                batch = [(blank, text) for text in order.sample(report_texts, settings.batch_size)]
                policy.set_prompt(report_prompt)
            prompts = policy.prompt_batch([im for im, _ in batch])
            ids, mask = policy.encode_completions([c for _, c in batch], max_tokens=160)
            index = torch.arange(len(batch), device=ids.device)
            loss, _ = sft_loss(policy.completion_logprobs(prompts, ids, mask, index), mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(task, advance=1, description=f"pre-train base, loss {losses[-1]:.3f}")
    policy.set_prompt(report_prompt)
    policy.save(out_dir)
    shutil.rmtree(untrained, ignore_errors=True)
    tail = losses[-20:]
    return {
        "format": BASE_FORMAT,
        "settings": asdict(settings),
        "final_loss": sum(tail) / len(tail),
        "parameters": policy.num_parameters(),
    }
