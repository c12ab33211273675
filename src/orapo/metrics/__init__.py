"""Evaluation metrics: clinical efficacy over label dicts, and text similarity over reports.

* :mod:`orapo.metrics.clinical`: precision / recall / F1 between predicted and reference
  label dicts under a named protocol (``positive``, ``uncertain-positive``), three averages
  (``micro``, ``macro``, ``example``) and two observation sets (``all14``, ``top5``).
* :mod:`orapo.metrics.tables`: the terminal table and the per-observation markdown table.
* :mod:`orapo.metrics.text`: BLEU-1..4, ROUGE-L and CIDEr-D.

docs/metrics.md defines every number, the zero-denominator rule and how ours relate to the
papers' numbers.
"""

from orapo.metrics.clinical import (
    AVERAGES,
    POSITIVE_STATES,
    PRF,
    PROTOCOLS,
    ClinicalMetrics,
    ClinicalResult,
    binarize,
    clinical_report,
    clinical_scores,
    confusion_counts,
    prf_from_counts,
)
from orapo.metrics.tables import format_clinical_table, per_observation_markdown
from orapo.metrics.text import TEXT_METRICS, bleu, cider_d, rouge_l, text_metrics, tokenize

__all__ = [
    "AVERAGES",
    "POSITIVE_STATES",
    "PROTOCOLS",
    "PRF",
    "TEXT_METRICS",
    "ClinicalMetrics",
    "ClinicalResult",
    "binarize",
    "bleu",
    "cider_d",
    "clinical_report",
    "clinical_scores",
    "confusion_counts",
    "format_clinical_table",
    "per_observation_markdown",
    "prf_from_counts",
    "rouge_l",
    "text_metrics",
    "tokenize",
]
