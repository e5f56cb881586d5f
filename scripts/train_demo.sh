#!/usr/bin/env bash
# Reproduce the shipped CPU demo pair (metaseg/weights/{metasegnet,baseline}_demo.*).
#
#   bash scripts/train_demo.sh            # data + both trainings + export to metaseg/weights
#   STEP=data|train|export bash scripts/train_demo.sh   # one stage only
#
# What it does (from the repository root, ~30 min on the 2-core CPU box, both models in parallel
# with one thread each):
#   1. SynthEarth training data, seed 0 (560 train / 120 val / 120 test tiles of 256²) and the
#      held-out ablation test set, seed 12345 (240 test tiles) — seed 12345 is never trained on;
#   2. trains metasegnet_demo and baseline_demo with IDENTICAL settings (data, 256² tiles,
#      batch 2 as in the paper, 9 epochs = 2520 steps in three stages (see below), seed 0, AdamW
#      lr 3e-4 cosine, flips, itm_weight 0); only the variant differs;
#   3. copies each run's last checkpoint (step 2520) into metaseg/weights as float16 safetensors + JSON.
# The ablation table (docs/RESULTS.md) is then made by: python scripts/ablation.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-runs/data/synth_train}
TEST=${TEST:-runs/data/synth_test}
RUNS=${RUNS:-runs/demo}
STEP=${STEP:-all}
mkdir -p "$RUNS"

# Settings shared by both models (the only difference is model=...). itm_weight 0: see
# metaseg/weights/MODEL_CARD.md ("Training choices").
COMMON=(data_root="$DATA" image_size=256 batch_size=2 val_batch_size=8 max_steps=null
        time_budget_minutes=null early_stopping_patience=null max_val_samples=64 threads=1 seed=0
        device=cpu amp=false progress=false "model_overrides={itm_weight: 0.0}")

if [[ $STEP == all || $STEP == data ]]; then
  [[ -f $DATA/synthearth.json ]] || $PY -m training.synth --out "$DATA" --n 800 --size 256 --seed 0 --no-progress --json
  [[ -f $TEST/synthearth.json ]] || $PY -m training.synth --out "$TEST" --n 240 --size 256 --seed 12345 \
      --split-fractions 0,0,1 --no-progress --json
fi

if [[ $STEP == all || $STEP == train ]]; then
  # Stage 1: 3 epochs (840 steps), cosine from 3e-4 to 0. Stage 2: resume=true with epochs=6, i.e.
  # another 840 steps on the 6-epoch cosine from where it stands at step 840 (1.5e-4 -> 0): a warm
  # restart. Stage 3 likewise with epochs=9 (7.5e-5 -> 0). (Stages only because the CPU budget was
  # unknown up front; both models get all of them.)
  for stage in 1 2 3; do
    case $stage in 1) extra=(epochs=3) ;; 2) extra=(epochs=6 resume=true) ;; 3) extra=(epochs=9 resume=true) ;; esac
    for model in metasegnet_demo baseline_demo; do
      /usr/bin/time -v -o "$RUNS/$model.stage$stage.time" $PY -m training.train --config training/configs/synth.yaml \
        model=$model out_dir="$RUNS/$model" "${COMMON[@]}" "${extra[@]}" --json \
        > "$RUNS/$model.stage$stage.summary.json" 2> "$RUNS/$model.stage$stage.log" &
    done
    wait
  done
  cat "$RUNS"/*.summary.json
fi

if [[ $STEP == all || $STEP == export ]]; then
  $PY scripts/export_demo.py --runs "$RUNS"
fi
