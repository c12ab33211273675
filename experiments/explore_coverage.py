"""What a policy's sampled reports can teach RL: per observation, how often K rollouts name it.

A finding enters an RL policy only once a sampled rollout names it on an image that has it
(docs/demo.md, fifth and sixth rounds). This probe measures that directly, without training:
for ``--studies`` training studies it samples ``--k`` reports per image at the main job's
sampling settings, labels them with the rule labeler, and prints per observation

* ``group``: the share of studies positive for it where at least one of the K rollouts states
  it positive (GRPO can only reward a finding in such a group),
* ``hit``: the share of those studies' rollouts that state it,
* ``alarm``: the share of rollouts on studies without it that state it.

Usage (from the round-4 folder, experiments/demo_round4.sh)::

    python experiments/explore_coverage.py --model src/orapo/basemodel/shipped/base-6662a49d6161 \
        --manifest data/synth/manifest.jsonl --studies 160 --k 8

Not run by CI; docs/demo.md (sixth round) quotes its output.
"""

from __future__ import annotations

import argparse

import torch

from orapo.labeler import get_labeler
from orapo.manifest import read_manifest
from orapo.model.config import ModelConfig, SamplingConfig
from orapo.model.policy import load_policy
from orapo.observations import OBSERVATIONS, POSITIVE
from orapo.train.data import select_studies, study_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a base or a trained run's model folder")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--studies", type=int, default=160)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=16, help="images per generate call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    manifest = read_manifest(args.manifest)
    studies = select_studies(manifest, args.split, args.studies, args.seed)
    policy = load_policy(ModelConfig(name_or_path=args.model), trainable=False)
    sampling = SamplingConfig(
        k=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature
    )
    labeler = get_labeler("rule")
    texts: list[str] = []
    for i in range(0, len(studies), args.batch):
        chunk = studies[i : i + args.batch]
        images = [study_image(s, manifest.root) for s in chunk]
        texts += policy.rollout(policy.prompt_batch(images), sampling).texts
    labels = labeler.label_batch(texts)  # (studies * k) label dicts, grouped by study

    k, gold = args.k, [s.labels or {} for s in studies]
    print(f"{args.model}: {len(studies)} {args.split} studies x {k} rollouts")
    print(f"{'observation':28s} {'pos':>4s} {'group':>6s} {'hit':>6s} {'alarm':>6s}")
    for obs in OBSERVATIONS:
        pos_groups = hits = pos_rollouts = alarms = neg_rollouts = 0
        for j in range(len(studies)):
            said = [labels[j * k + r].get(obs) == POSITIVE for r in range(k)]
            if gold[j].get(obs) == POSITIVE:
                pos_groups += any(said)
                hits += sum(said)
                pos_rollouts += k
            else:
                alarms += sum(said)
                neg_rollouts += k
        n_pos = pos_rollouts // k
        print(
            f"{obs:28s} {n_pos:4d} {pos_groups / max(n_pos, 1):6.2f} "
            f"{hits / max(pos_rollouts, 1):6.2f} {alarms / max(neg_rollouts, 1):6.2f}"
        )
    print("examples:")
    for text in texts[:: max(1, len(texts) // 6)][:6]:
        print("  ", text.replace("\n", " | ")[:160])


if __name__ == "__main__":
    main()
