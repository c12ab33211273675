"""FactS with an LLM: atomic-fact extraction and entailment through any OpenAI-compatible server.

The paper extracts atomic clinical facts with GPT-4 and checks them against the 14 CheXpert
observations. :class:`LLMLabeler` does that with any server that speaks
``/v1/chat/completions`` (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp, ...): one request per
distinct report lists its facts as JSON, each fact naming its observation and state; the facts
map to the same 14-way labels the rule labeler gives (``orapo.labeler.Labeler`` interface), so
the FactS reward and the clinical metrics take either.

Modules: :mod:`~orapo.llm.prompt` (prompts are versioned data in ``prompts/``),
:mod:`~orapo.llm.client` (HTTP, faults, retries), :mod:`~orapo.llm.parse` (JSON repair and
schema), :mod:`~orapo.llm.facts` (entailment rules), :mod:`~orapo.llm.cache` (SQLite),
:mod:`~orapo.llm.stats` (tokens, cost, fallbacks), :mod:`~orapo.llm.labeler` (the pipeline),
:mod:`~orapo.llm.fake_server` (a loopback fake model for tests, benchmarks and demos).
``docs/llm.md`` is the user guide.

Labeler names (``orapo.labeler.LABELERS``, which imports this package only when one is built):
``"llm"`` (:class:`LLMLabeler`) and ``"hybrid"`` (the model only where the rule labeler is
uncertain or finds nothing).
"""

from __future__ import annotations

from orapo.llm.cache import AnswerCache, cache_key, normalize_report
from orapo.llm.client import (
    AttemptError,
    ChatClient,
    CircuitBreaker,
    LLMConfigError,
    LLMError,
    LLMFallbackError,
    RetryPolicy,
    call_with_retries,
)
from orapo.llm.facts import AtomicFact, facts_from_labels, facts_to_labels
from orapo.llm.labeler import Extraction, LLMLabeler, hybrid_labeler, needs_llm
from orapo.llm.parse import ParsedAnswer, ParseError, parse_answer, parse_json, validate_facts
from orapo.llm.prompt import Prompt, load_prompt
from orapo.llm.stats import LLMStats

__all__ = [
    "AnswerCache",
    "AtomicFact",
    "AttemptError",
    "ChatClient",
    "CircuitBreaker",
    "Extraction",
    "LLMConfigError",
    "LLMError",
    "LLMFallbackError",
    "LLMLabeler",
    "LLMStats",
    "ParseError",
    "ParsedAnswer",
    "Prompt",
    "RetryPolicy",
    "cache_key",
    "call_with_retries",
    "facts_from_labels",
    "facts_to_labels",
    "hybrid_labeler",
    "load_prompt",
    "needs_llm",
    "normalize_report",
    "parse_answer",
    "parse_json",
    "validate_facts",
]
