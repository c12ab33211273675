#!/usr/bin/env bash
# The fourth round of the demo's measurements (docs/demo.md, "Fourth round"): every command that
# produced a number there, in order. Run from an empty folder with orapo installed; each step
# takes minutes to tens of minutes on a 2-core CPU (times in docs/demo.md). Not run by CI.
set -euo pipefail
ORAPO=${ORAPO:-orapo}

# Worlds: the main job's (seed 0) and one drawn with a seed the main job never sees (seed 1).
$ORAPO data synth --out data/synth --n 1700 --seed 0
$ORAPO data synth --out data/synth-seed1 --n 1700 --seed 1
$ORAPO data synth --out data/synth-realistic --n 1700 --seed 0 --profile realistic

# Bases (captions + chest questions on a pool drawn with seed 1000; no report text).
$ORAPO model build-base --out bases base.steps=3000 base.list_share=0.15      # A: with the list question
$ORAPO model build-base --out bases base.steps=5000 base.list_share=0          # B: the shipped base (defaults)
$ORAPO model build-base --out bases base.steps=5000 base.list_share=0 base.answers=plain  # C: yes/no wording

# Main-job variants on each base (same world, same trainer; BASE = bases/base-<key>).
run() { name=$1; shift; $ORAPO train --out "runs/$name" "$@"; }
run A-s160 model.name_or_path=bases/base-16ab35f956ee trainer.steps=160
run A-beta1 model.name_or_path=bases/base-16ab35f956ee trainer.steps=80 eval.before=false \
    'algorithm.reward_options={beta: 1.0}'
run B-s160c model.name_or_path=bases/base-6662a49d6161 trainer.steps=160 trainer.lr_schedule=cosine
run C-s160c model.name_or_path=bases/base-7e367341b0f1 trainer.steps=160 trainer.lr_schedule=cosine

# Variants of the shipped main job (one thread each, run side by side).
run B-beta1 trainer.threads=1 eval.before=false 'algorithm.reward_options={beta: 1.0}'
run B-beta1.2 'algorithm.reward_options={beta: 1.2}'
run B-k16 trainer.threads=1 eval.before=false sampling.k=16 trainer.steps=100 trainer.eval_every=20

# The shipped main job (what `make demo` runs), then the trained model on the other world.
run main
$ORAPO evaluate --model runs/main/model --data data/synth-seed1/manifest.jsonl --split test \
    -o runs/main/eval-seed1

# What the base's image features allow at best (linear read-out of all 14 gold labels).
python "$(dirname "$0")/../benchmarks/demo_ceiling.py" \
    --model "$(python -c 'from orapo.basemodel.build import find_base_model; from orapo.basemodel.settings import BaseModelSettings as B; print(find_base_model(B()))')" \
    --manifest data/synth/manifest.jsonl
