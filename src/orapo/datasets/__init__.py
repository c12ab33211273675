"""Real datasets into orapo manifests, and small training subsets.

``orapo data prepare DATASET --root DIR --out DIR`` converts a dataset as it is distributed
(MIMIC-CXR, CheXpert Plus, IU X-ray / Open-i; registry :data:`DATASETS`) into the manifest
format of :mod:`orapo.manifest`; ``orapo data subset`` draws the paper's 400 / 1K-study
training subsets. See ``docs/datasets.md``.
"""

from __future__ import annotations

from orapo.datasets import chexpert_plus, iu_xray, mimic  # noqa: F401  (register datasets)
from orapo.datasets.prepare import PrepareResult, prepare
from orapo.datasets.reporting import SkipLog
from orapo.datasets.sections import findings_and_impression, split_sections
from orapo.datasets.spec import (
    DATASETS,
    Candidate,
    Collected,
    DatasetSpec,
    PrepareError,
    PrepareOptions,
)
from orapo.datasets.splits import hash_split
from orapo.datasets.subset import (
    STRATEGIES,
    SubsetError,
    SubsetResult,
    draw_subset,
    make_subset,
    observation_counts,
    render_subset_summary,
)
from orapo.datasets.summary import render_summary

__all__ = [
    "DATASETS",
    "STRATEGIES",
    "Candidate",
    "Collected",
    "DatasetSpec",
    "PrepareError",
    "PrepareOptions",
    "PrepareResult",
    "SkipLog",
    "SubsetError",
    "SubsetResult",
    "draw_subset",
    "findings_and_impression",
    "hash_split",
    "make_subset",
    "observation_counts",
    "prepare",
    "render_subset_summary",
    "render_summary",
    "split_sections",
]
