#!/usr/bin/env bash
# The sixth round of the demo's measurements (docs/demo.md, "Sixth round"): every command that
# produced a number there, in order. Run from the folder of round 4 (experiments/demo_round4.sh:
# data/synth, the shipped base) with orapo installed. Not run by CI.
set -euo pipefail
ORAPO=${ORAPO:-orapo}
run() { name=$1; shift; $ORAPO train --out "runs/$name" "$@"; }

# The DPO term against every rollout of the group (the paper's "all GRPO rollouts serve as
# negatives"), with the shipped adaptive w, two seeds side by side (one thread each).
run R6-all trainer.threads=1 eval.before=false algorithm.dpo_negatives=all &
run R6-all-s1 trainer.threads=1 eval.before=false algorithm.dpo_negatives=all trainer.seed=1 &
wait

# The same with w fixed at w_max, and at twice w_max.
run R6-wmax-all trainer.threads=1 eval.before=false algorithm.dpo_negatives=all algorithm.constant_w=0.15 &
run R6-w30-all trainer.threads=1 eval.before=false algorithm.dpo_negatives=all algorithm.constant_w=0.3 &
wait

# More updates from the same rollouts (batch 8 x 400 steps); FactS beta 1 with another seed.
run R6-b8 trainer.threads=1 eval.before=false trainer.batch_size=8 trainer.steps=400 trainer.eval_every=80 trainer.save_every=80 &
run R6-beta1-s1 trainer.threads=1 eval.before=false 'algorithm.reward_options={beta: 1.0}' trainer.seed=1 &
wait

# Length-normalised DPO (per-token mean log-probs, TRL's sigmoid_norm) against every rollout:
# with the adaptive w and with w fixed at w_max. Both stopped by hand at steps 154 and 153
# (validation F1 0.22 and 0.25 at step 120: far below every other variant).
run R6-norm-all trainer.threads=1 eval.before=false algorithm.dpo_negatives=all algorithm.dpo_length_normalize=true &
run R6-norm-all-wmax trainer.threads=1 eval.before=false algorithm.dpo_negatives=all algorithm.dpo_length_normalize=true algorithm.constant_w=0.15 &
wait

# What the shipped base's sampled reports name before any RL (experiments/explore_coverage.py).
python "$(dirname "$0")/explore_coverage.py" --model "$(python -c 'import orapo, pathlib; print(pathlib.Path(orapo.__file__).parent)')/basemodel/shipped/base-6662a49d6161" \
    --manifest data/synth/manifest.jsonl --studies 160 --k 8

# w fixed at w_max (the recipe with the best mean so far) with two more seeds (data order and
# sampling), side by side.
run R6-wmax-s2 trainer.threads=1 eval.before=false algorithm.constant_w=0.15 trainer.seed=2 &
run R6-wmax-s3 trainer.threads=1 eval.before=false algorithm.constant_w=0.15 trainer.seed=3 &
wait

# Round 4's base A (with the list question; base F1 0.253, over the 0.2 the demo allows): what
# its sampled reports name, then the shipped main job on it.
python "$(dirname "$0")/explore_coverage.py" --model bases/base-16ab35f956ee \
    --manifest data/synth/manifest.jsonl --studies 160 --k 8
run R6-A trainer.threads=1 model.name_or_path=bases/base-16ab35f956ee &
run R6-A-s1 trainer.threads=1 eval.before=false model.name_or_path=bases/base-16ab35f956ee trainer.seed=1 &
wait

# Exploration: a higher sampling temperature for the whole run, two seeds side by side.
run R6-t13 trainer.threads=1 eval.before=false sampling.temperature=1.3 &
run R6-t13-s1 trainer.threads=1 eval.before=false sampling.temperature=1.3 trainer.seed=1 &
wait
