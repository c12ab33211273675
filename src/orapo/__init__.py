"""orapo: OraPO (arXiv 2509.18600) for chest X-ray report generation.

GRPO over K sampled reports per image with a fact-level reward (FactS), plus a DPO term that
turns failed rollouts into negatives against the ground-truth report, mixed by a weight that
follows the EMA of the Zero-Reward Rate.
"""

__version__ = "0.1.0"
