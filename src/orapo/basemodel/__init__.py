"""The embedded demo base model: a small Qwen2.5-VL-architecture captioner with no radiology.

It stands where Qwen2.5-VL-3B stands in the paper (a general vision-language model that knows
little radiology), so that ``orapo train`` on the embedded default shows OraPO teaching a model
to write reports, on this CPU, in minutes. See docs/demo.md.
"""
