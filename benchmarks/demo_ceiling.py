"""How far can the demo's training budget take a policy? Linear-probe ceilings on one world.

The main job trains on ``--n-train`` studies (1,000) and is scored by clinical F1 (positive
protocol, micro, all14) on the test split. This script asks what a policy could reach if it
learnt from the gold labels of every training image, through a linear read-out:

* ``features``: per observation, an L2-regularised logistic regression on the image features
  the model's language side receives (the merger's output for the image, flattened:
  tokens x hidden), fitted on the training images' gold labels (positive = 1), predicting the
  test images' labels. The predicted label dicts are scored like generated reports.
* ``pixels``: the same on the raw grey levels (downsampled to ``--pixel-side``): what the world
  allows a linear read-out of the image, whatever the model.
* ``normal report``: every study called normal (the report the collapsed policy writes).

Each study's first image; the first ``--n-train`` studies of the training split (the main job
takes its 1,000 after a seeded shuffle: another subset of the same size).

Full labels on every image are far more than RL gets (a scalar reward per sampled report), so
these are upper bounds for the demo's budget with this model, not predictions.

    .venv/bin/python benchmarks/demo_ceiling.py --model data/base-model/base-XXXX \
        --manifest data/synth/manifest.jsonl
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image


def image_features(policy, images: list[Image.Image], batch: int = 64) -> np.ndarray:
    """(N, tokens * hidden) merger outputs of the images, in order (call under no_grad)."""
    rows = []
    for i in range(0, len(images), batch):
        prompts = policy.prompt_batch(images[i : i + batch])
        out = policy.core.get_image_features(
            pixel_values=prompts.pixel_values,
            image_grid_thw=prompts.image_grid_thw,
            return_dict=True,
        )
        rows.extend(f.reshape(-1).float().cpu().numpy() for f in out.pooler_output)
    return np.stack(rows)


def pixel_features(images: list[Image.Image], side: int) -> np.ndarray:
    """(N, side * side) grey levels in [0, 1]."""
    grey = [np.asarray(im.convert("L").resize((side, side)), dtype=np.float32) for im in images]
    return np.stack(grey).reshape(len(images), -1) / 255.0


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, c: float) -> np.ndarray:
    """(N_test, O) 0/1 predictions of one logistic regression per observation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    pred = np.zeros((len(x_test), y_train.shape[1]), dtype=np.int64)
    for j in range(y_train.shape[1]):
        if y_train[:, j].min() == y_train[:, j].max():  # one class only: predict it
            pred[:, j] = y_train[0, j]
            continue
        clf = LogisticRegression(C=c, max_iter=2000).fit(a, y_train[:, j])
        pred[:, j] = clf.predict(b)
    return pred


def read_outs(
    model: str, manifest_path: str, n_train: int, cs: list[float], pixel_side: int
) -> list[tuple[str, float, float, float, dict[str, float]]]:
    """``(read-out, P, R, F1, per-observation F1)`` rows: the normal report, then the feature
    probes and the pixel probes for each regularisation strength in ``cs``."""
    import torch

    from orapo.images import load_images
    from orapo.manifest import read_manifest
    from orapo.metrics.clinical import binarize, clinical_scores
    from orapo.model import ModelConfig, load_policy
    from orapo.observations import OBSERVATIONS

    manifest = read_manifest(manifest_path)
    train = manifest.split("train")[:n_train]
    test = manifest.split("test")
    for name, studies in (("train", train), ("test", test)):
        if not studies:
            raise SystemExit(f"{manifest_path}: no {name} studies")
        missing = [s.id for s in studies if s.labels is None]
        if missing:
            raise SystemExit(
                f"{manifest_path}: {len(missing)} {name} studies have no gold labels "
                f"(first: {missing[0]})"
            )

    def score(pred: np.ndarray) -> tuple[float, float, float, dict[str, float]]:
        preds = [
            {o: (1 if v else None) for o, v in zip(OBSERVATIONS, row, strict=True)} for row in pred
        ]
        result = clinical_scores(preds, [s.labels for s in test], "positive", "all14")
        per = {o: result.per_observation[o].f1 for o in OBSERVATIONS}
        return result.micro.precision, result.micro.recall, result.micro.f1, per

    y_train = binarize([s.labels for s in train], "positive", "all14").astype(np.int64)
    images = [
        load_images([s.image_paths(manifest.root)[0] for s in studies]).images
        for studies in (train, test)
    ]
    policy = load_policy(ModelConfig(name_or_path=model), trainable=False)
    with torch.no_grad():
        feats = [image_features(policy, ims) for ims in images]
    pixels = [pixel_features(ims, pixel_side) for ims in images]

    normal = np.zeros((len(test), len(OBSERVATIONS)), dtype=np.int64)
    normal[:, OBSERVATIONS.index("No Finding")] = 1
    rows = [("normal report", *score(normal))]
    for kind, (x_train, x_test) in (("features", feats), ("pixels", pixels)):
        for c in cs:
            rows.append((f"{kind}, C={c}", *score(probe(x_train, y_train, x_test, c))))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="policy directory (base or trained)")
    parser.add_argument("--manifest", default="data/synth/manifest.jsonl")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--c", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    parser.add_argument("--pixel-side", type=int, default=56)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from orapo.observations import OBSERVATIONS

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = read_outs(args.model, args.manifest, args.n_train, args.c, args.pixel_side)
    print(f"model {args.model}, manifest {args.manifest}, {args.n_train} training studies at most")
    print("\n| read-out | P | R | F1 (positive, micro, all14) |\n|---|---:|---:|---:|")
    for name, p, r, f, _ in rows:
        print(f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} |")
    best = [
        max((row for row in rows if row[0].startswith(kind)), key=lambda row: row[3])
        for kind in ("features", "pixels")
    ]
    print("\nper observation F1 of the best read-outs:\n")
    print(f"| observation | {best[0][0]} | {best[1][0]} |\n|---|---:|---:|")
    for o in OBSERVATIONS:
        print(f"| {o} | {best[0][4][o]:.2f} | {best[1][4][o]:.2f} |")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
