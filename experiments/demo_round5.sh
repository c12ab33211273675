#!/usr/bin/env bash
# The fifth round of the demo's measurements (docs/demo.md, "Fifth round"): every command that
# produced a number there, in order. Run from the folder of round 4 (experiments/demo_round4.sh:
# data/synth, the shipped base) with orapo installed. Not run by CI.
set -euo pipefail
ORAPO=${ORAPO:-orapo}
run() { name=$1; shift; $ORAPO train --out "runs/$name" "$@"; }

# Two variants of the shipped main job, side by side (one thread each).
run R5-beta15 trainer.threads=1 eval.before=false 'algorithm.reward_options={beta: 1.5}' &
run R5-tok64 trainer.threads=1 eval.before=false sampling.max_new_tokens=64 trainer.steps=240 &
wait

# A probe for the ablation's high-ZRR setting (issue 19): plain GRPO at temperature 0.5.
run P-hizrr-t05 trainer.threads=1 algorithm.mode=grpo sampling.temperature=0.5 trainer.steps=40 \
    eval.before=false eval.after=false eval.shuffled=false trainer.eval_every=0 trainer.save_every=0

# After the ablation (docs/results.md): two stability variants of the main job, side by side.
run R5-lr1e3 trainer.threads=1 eval.before=false trainer.lr=1e-3 &
run R5-b32 trainer.threads=1 eval.before=false trainer.batch_size=32 trainer.steps=100 trainer.eval_every=20 &
wait

# The two levers the ablation favoured, on the main job: w fixed at w_max, and that with beta 1.
run R5-wmax trainer.threads=1 eval.before=false algorithm.constant_w=0.15 &
run R5-beta1-wmax trainer.threads=1 eval.before=false algorithm.constant_w=0.15 'algorithm.reward_options={beta: 1.0}' &
wait

# The main job with w fixed at w_max, as `make demo` would run it (two threads, alone, fresh folder).
(cd "$(mktemp -d)" && $ORAPO train algorithm.constant_w=0.15)

# w_max against the adaptive w on the main job with another seed (data order, sampling).
run R5-wmax-s1 trainer.threads=1 eval.before=false algorithm.constant_w=0.15 trainer.seed=1 &
run R5-adapt-s1 trainer.threads=1 eval.before=false trainer.seed=1 &
wait
