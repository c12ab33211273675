"""The policy model layer: load or build a vision-language policy, sample reports, score them.

Everything the trainer, the generator and the evaluator do with the model goes through here::

    from orapo.model import ModelConfig, SamplingConfig, load_policy

    policy = load_policy(ModelConfig("runs/demo-model"), trainable=True)
    prompts = policy.prompt_batch(images)                       # B prompts
    rollouts = policy.rollout(prompts, SamplingConfig(k=8))     # B*K reports
    logp = policy.completion_logprobs(prompts, rollouts.completion_ids,
                                      rollouts.completion_mask, rollouts.prompt_index)

Names are imported lazily (PEP 562), so ``import orapo.model.cli`` does not load torch and
``orapo --help`` stays fast. See docs/model.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "LoraSettings": "orapo.model.config",
    "ModelConfig": "orapo.model.config",
    "SamplingConfig": "orapo.model.config",
    "PRESETS": "orapo.model.demo",
    "build_demo_model": "orapo.model.demo",
    "ImageLoadError": "orapo.images",
    "load_image": "orapo.images",
    "ARCHITECTURES": "orapo.model.loading",
    "ModelLoadError": "orapo.model.loading",
    "selective_log_softmax": "orapo.model.logprobs",
    "token_logprobs": "orapo.model.logprobs",
    "Policy": "orapo.model.policy",
    "PromptBatch": "orapo.model.policy",
    "Rollouts": "orapo.model.policy",
    "load_policy": "orapo.model.policy",
    "trim_completions": "orapo.model.policy",
    "ReportPrompt": "orapo.model.prompt",
    "load_prompt": "orapo.model.prompt",
    "evaluate_policy": "orapo.model.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orapo.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
