"""The embedded synthetic chest X-ray world: images, reports and gold labels.

A study is a :class:`StudySpec` (anatomy + findings) drawn by :func:`sample_spec`, drawn as a
radiograph by :func:`render_image` and described by :func:`write_report`, whose labels follow
from the sentences it wrote. :func:`generate` writes a whole dataset (PNG images, manifest,
contact sheet). Vocabulary and prevalences are data files beside this module
(``phrases.yaml``, ``world.yaml``); ``docs/synth.md`` documents the world.

>>> import numpy as np
>>> spec = sample_spec(np.random.default_rng(0))
>>> render_image(spec, 112, np.random.default_rng(1)).shape
(112, 112)
"""

from __future__ import annotations

from orapo.synth.generate import (
    generate,
    iter_studies,
    make_study,
    split_counts,
    study_rngs,
)
from orapo.synth.render import render_density, render_image
from orapo.synth.report import aggregate_labels, load_phrases, write_report, write_report_sentences
from orapo.synth.spec import (
    DEFAULT_PROFILE,
    PROFILES,
    SUPPORTED,
    Anatomy,
    Finding,
    StudySpec,
    load_profile,
    load_world,
    sample_spec,
)

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "SUPPORTED",
    "Anatomy",
    "Finding",
    "StudySpec",
    "aggregate_labels",
    "generate",
    "iter_studies",
    "load_phrases",
    "load_profile",
    "load_world",
    "make_study",
    "render_density",
    "render_image",
    "sample_spec",
    "split_counts",
    "study_rngs",
    "write_report",
    "write_report_sentences",
]
