#!/usr/bin/env bash
# The quick native-resolution check of issue 11: supervised on CHASE_DB1 Image_01L alone for 3 minutes
# of one core, predicted on Image_11L, Dice of the vessels against the first observer.
#   bash benchmarks/chase_quick.sh [BIN] [OUT]     (BIN: the napari-semiseg to measure)
set -euo pipefail
BIN=${1:-.venv/bin/napari-semiseg}
OUT=${2:-benchmarks/out/chase_quick}
C=../shared/data/chase_db1
mkdir -p "$OUT"
"$BIN" train $C/images/Image_01L.jpg --labels $C/manual/Image_01L_1stHO.png --labeled all --method supervised \
    --minutes 3 --threads 1 --device cpu --out "$OUT/run" > "$OUT/train.log" 2>&1
"$BIN" predict "$OUT/run" $C/images/Image_11L.jpg --out "$OUT/Image_11L.tif" > "$OUT/predict.log" 2>&1
"$BIN" evaluate "$OUT/Image_11L.tif" $C/manual/Image_11L_1stHO.png --json "$OUT/metrics.json" | tail -3
grep -h "iterations in" "$OUT/train.log" || true
