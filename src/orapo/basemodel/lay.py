"""Plain-language descriptions of chest-radiograph-like pictures, with no radiology words.

A general vision-language model can say what it sees in an X-ray-like picture ("the bright shape
in the middle is very wide", "the lower outer corner of the left dark area is white") without
knowing that this is cardiomegaly or a pleural effusion. The demo base model learns such
descriptions on pictures drawn from the synthetic world with a seed of its own (never the
studies it is later trained or tested on), so it can look at a chest image; mapping what it
sees to findings is left to OraPO. Sides are the picture's sides (a radiograph shows the
patient's right on the picture's left).

>>> import numpy as np
>>> from orapo.synth import sample_spec
>>> text = describe(sample_spec(np.random.default_rng(3)), np.random.default_rng(3))
>>> "effusion" in text or "cardiomegaly" in text
False
"""

from __future__ import annotations

import numpy as np

_SIDE = {"right": "left", "left": "right"}  # patient's side -> side of the picture
_AMOUNT = {"mild": "a little", "moderate": "clearly", "severe": "very"}


def _picture_side(side: str | None) -> str:
    if side in _SIDE:
        return f"the {_SIDE[side]} dark area"
    return "both dark areas"


def _phrases(finding, rng: np.random.Generator) -> list[str]:
    name, f = finding.name, finding
    amount = "faintly" if f.hedged else _AMOUNT.get(f.severity, "clearly")
    where = _picture_side(f.side)
    if name == "Cardiomegaly":
        return [f"The bright shape in the middle is {amount} wide."]
    if name == "Enlarged Cardiomediastinum":
        return [f"The bright band above the middle shape is {amount} wide."]
    if name == "Pleural Effusion":
        return [f"The lower outer corner of {where} is {amount} filled with white."]
    if name == "Pneumothorax":
        return [f"Along the top edge of {where} there is a darker strip with no lines."]
    if name in ("Consolidation", "Pneumonia"):
        look = "patchy white clouds" if name == "Pneumonia" else "a dense white patch"
        return [f"There are {look} in {where}."]
    if name == "Lung Opacity":
        return [f"A soft grey haze lies over part of {where}."]
    if name == "Edema":
        return ["Both dark areas look hazy and streaky around the middle."]
    if name == "Lung Lesion":
        size = "large" if f.kind == "mass" else "small"
        return [f"A {size} round white spot sits in {where}."]
    if name == "Atelectasis":
        return [f"A thin white band runs across the lower part of {where}."]
    if name == "Fracture":
        return [f"One of the curved lines over {where} has a break in it."]
    if name == "Pleural Other":
        return [f"The outer edge of {where} is thick and white."]
    if name == "Support Devices":
        kind = f.kind or "line"
        return {
            "pacemaker": ["A small white box with a thread sits near the top."],
            "central line": ["A thin white line curves down from the top."],
            "endotracheal tube": ["A white stripe runs down the middle from the top."],
            "enteric tube": ["A white stripe runs down the middle past the bottom."],
        }.get(kind, ["A thin white line runs through the picture."])
    return []


def describe(spec, rng: np.random.Generator) -> str:
    """A few plain sentences about one synthetic chest picture (``orapo.synth.StudySpec``)."""
    opener = [
        "The picture shows two dark areas on either side of a bright shape.",
        "Two dark areas sit left and right of a bright shape in the middle.",
    ][int(rng.integers(2))]
    sentences = [opener]
    for finding in spec.findings:
        sentences.extend(_phrases(finding, rng))
    if len(sentences) == 1:
        sentences.append("Nothing else stands out.")
    return " ".join(sentences)


def lay_dataset(n: int, size: int, seed: int) -> list[tuple[object, str]]:
    """``n`` (PIL image, description) pairs of fresh synthetic chest pictures."""
    from PIL import Image

    from orapo.synth import make_study

    out = []
    for i in range(n):
        study = make_study(seed, i, size)
        text = describe(study.spec, np.random.default_rng([seed, i, 7]))
        out.append((Image.fromarray(study.image).convert("RGB"), text))
    return out
