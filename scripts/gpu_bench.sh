#!/usr/bin/env bash
# One-shot GPU benchmark of the paper pair for a session that has a GPU (MetaSegNet issue #8).
#
# Runs, from the repository root, in one go (about 5-8 minutes on an H100):
#   python -m metaseg bench --device cuda --pair swin_b --size 1024 --batch B --json
# for B in 1 2 4 8 16 with bf16 autocast, channels-last and PyTorch SDPA (auto backend), plus
# a torch.compile pass at the batch sizes in COMPILE_BATCHES, the sliding-window runs
# (2048², 4096², window 1024) once at batch 4, the model FLOPs (FlopCounterMode, one forward)
# and the achieved fraction of the bf16 dense peak; then prints one summary table.
#
# Usage:   bash scripts/gpu_bench.sh [DEST_DIR]       (default: $OUT when set, else /tmp/metaseg_gpu_bench)
#          Each run's JSON and log go to WORK_DIR (/tmp/metaseg_gpu_bench/runs); DEST_DIR receives
#          three files: summary.txt, all_runs.json (run name -> bench JSON) and logs.tar.gz.
#          In a session with the device tool: run(command="bash scripts/gpu_bench.sh", timeout_s=600).
# Env:     PYTHON (python3)  BATCHES ("1 2 4 8 16")  COMPILE_BATCHES ("16"; "" = no compile pass)
#          PEAK_TFLOPS (989: H100/H200 SXM bf16 dense)  REPEATS (20)  RUN_TIMEOUT (240 s per run)
#          DEVICE (cuda)  PAIR (swin_b)  SIZE (1024)  SLIDING ("2048,4096")  -- the last four let
#          you dry-run the script on a CPU:  DEVICE=cpu PAIR=demo SIZE=64 BATCHES="1 2"
#          COMPILE_BATCHES= SLIDING=128,256 bash scripts/gpu_bench.sh /tmp/dry
#
# Text encoder: the GPU image has neither the MiniLM wheel nor hub access, so the script builds
# a randomly initialised BERT-base (12 layers, hidden 768: the paper's bert-base-uncased shape)
# with a small word-level vocabulary in /tmp and passes it with --text-encoder. Prompts are
# padded to 250 tokens either way, so only the vocabulary differs; weights do not change timing.
# Target (issue #8): >= 95 images/s (tiles_per_s) of MetaSegNet at the best batch size.
set -uo pipefail

DEST_DIR=${1:-${OUT:-/tmp/metaseg_gpu_bench}}
OUT_DIR=${WORK_DIR:-/tmp/metaseg_gpu_bench/runs}
PY=${PYTHON:-python3}
BATCHES=${BATCHES:-"1 2 4 8 16"}
COMPILE_BATCHES=${COMPILE_BATCHES-"16"}
PEAK=${PEAK_TFLOPS:-989}
REPEATS=${REPEATS:-20}
RUN_TIMEOUT=${RUN_TIMEOUT:-240}
DEVICE=${DEVICE:-cuda}
PAIR=${PAIR:-swin_b}
SIZE=${SIZE:-1024}
SLIDING=${SLIDING:-2048,4096}
TEXT_DIR=${TEXT_DIR:-/tmp/metaseg_bert_base_random}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

mkdir -p "$OUT_DIR" "$DEST_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) && DEST_DIR=$(cd "$DEST_DIR" && pwd) || exit 1
cd "$(dirname "$0")/.." || exit 1

echo "== machine"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT_DIR/gpu.txt"
fi
$PY -c "import torch, timm, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)" \
  | tee "$OUT_DIR/versions.txt" || exit 1

echo "== random BERT-base text encoder in $TEXT_DIR"
$PY - "$TEXT_DIR" <<'EOF' || exit 1
import os
import re
import sys

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from metaseg.bench import DEFAULT_PROMPT

out = sys.argv[1]
if not os.path.exists(os.path.join(out, "tokenizer.json")):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    BertModel(config).save_pretrained(out)
    words = sorted(set(re.findall(r"[a-z]+|[^\sa-z]", DEFAULT_PROMPT.lower())))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    tokenizer.save_pretrained(out)
print("text encoder folder ready:", out)
EOF

common=(--device "$DEVICE" --pair "$PAIR" --size "$SIZE" --precision bf16 --channels-last --sdpa auto
        --peak-tflops "$PEAK" --repeats "$REPEATS" --warmup 3 --text-encoder "$TEXT_DIR" --json -v)

run() {  # run NAME ARGS... : one bench process, JSON to $OUT_DIR/NAME.json, log to NAME.log
  local name=$1; shift
  echo "== $name: bench $*"
  if timeout "$RUN_TIMEOUT" $PY -m metaseg bench "${common[@]}" "$@" >"$OUT_DIR/$name.json" 2>"$OUT_DIR/$name.log"; then
    $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print('   %.1f ms/batch, %.1f img/s, ratio %.3f, %.0f MiB' % (r['metasegnet_ms'], r['tiles_per_s'], r['ratio'], r['peak_mem_mb']))" "$OUT_DIR/$name.json"
  else
    echo "   FAILED (exit $?); last log lines:"; tail -n 5 "$OUT_DIR/$name.log"; rm -f "$OUT_DIR/$name.json"
  fi
}

for B in $BATCHES; do
  if [ "$B" = 4 ]; then run "eager_b$B" --batch "$B" --sizes-sliding "$SLIDING"
  else run "eager_b$B" --batch "$B" --sizes-sliding none; fi
done
for B in $COMPILE_BATCHES; do
  run "compile_b$B" --batch "$B" --sizes-sliding none --compile --no-flops
done

echo "== summary ($DEST_DIR)"
$PY - "$OUT_DIR" "$DEST_DIR/all_runs.json" <<'EOF' | tee "$DEST_DIR/summary.txt"
import glob
import json
import os
import sys

rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    r = json.load(open(path))
    rows.append((os.path.basename(path)[:-5], r))
if not rows:
    sys.exit("no run succeeded")
with open(sys.argv[2], "w") as fh:
    json.dump({name: r for name, r in rows}, fh, indent=1)
head = f"{'run':12s} {'batch':>5s} {'meta ms':>9s} {'base ms':>9s} {'ratio':>6s} {'img/s':>7s} {'TFLOP/s':>8s} {'of peak':>7s} {'MiB':>7s}"
print(head)
for name, r in sorted(rows, key=lambda x: (x[0].split("_")[0], x[1]["batch"])):
    tf = r.get("achieved_tflops")
    mfu = r.get("mfu")
    print(f"{name:12s} {r['batch']:5d} {r['metasegnet_ms']:9.2f} {r['baseline_ms']:9.2f} {r['ratio']:6.3f} "
          f"{r['tiles_per_s']:7.1f} {tf if tf is not None else float('nan'):8.1f} "
          f"{mfu if mfu is not None else float('nan'):7.3f} {r['peak_mem_mb']:7.0f}")
flops = next((r for _, r in rows if r.get("gflops_per_image")), None)
if flops:
    g = flops["gflops_per_image"]
    print(f"GFLOPs per image: MetaSegNet {g['metasegnet']:.1f}, baseline {g['baseline']:.1f} "
          f"(components of MetaSegNet: { {k: round(v / flops['batch'] / 1e9, 1) for k, v in flops['flops']['metasegnet'].items()} })")
for name, r in rows:
    if r.get("sliding"):
        print(f"sliding ({name}): {r['sliding']} ms, windows {r['sliding_windows']}, ratio {r.get('sliding_ratio')}, "
              f"peak MiB {r['sliding_peak_mem_mb']}")
best_name, best = max(rows, key=lambda x: x[1]["tiles_per_s"])
verdict = "MET" if best["tiles_per_s"] >= 95 else "NOT met"
print(f"best: {best_name} {best['tiles_per_s']:.1f} img/s on {best.get('gpu') or best['device']} "
      f"(target >= 95: {verdict}); torch {best['torch']}")
EOF
tar czf "$DEST_DIR/logs.tar.gz" -C "$OUT_DIR" . 2>/dev/null
cat "$OUT_DIR/gpu.txt" "$OUT_DIR/versions.txt" >>"$DEST_DIR/summary.txt" 2>/dev/null
exit 0
