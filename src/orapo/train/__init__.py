"""The OraPO trainer: orchestration only; the maths lives in :mod:`orapo.algorithms`."""
