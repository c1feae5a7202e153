#!/usr/bin/env bash
# Reproduces every figure in benchmarks/RESULTS.md (CPU). Data: ../shared/data.
# Each training run uses one CPU thread, and two runs go side by side on a 2-core machine,
# so that every method gets the same compute whatever else is running.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/out; mkdir -p "$OUT"
HIPPO=../shared/data/hippocampus_msd
BIN=.venv/bin/napari-semiseg
SESSION="--protocol session --volumes 10 --k 3 --seconds 60 --axis 2 --methods supervised,mean-teacher --threads 1"
$BIN benchmark $HIPPO $SESSION --json $OUT/session_iso.json > $OUT/session_iso.log 2>&1 &
$BIN benchmark $HIPPO $SESSION --anisotropic 3 --json $OUT/session_aniso.json > $OUT/session_aniso.log 2>&1 &
wait
$BIN benchmark $HIPPO --protocol dataset --minutes 10 --axis 2 --methods supervised,mean-teacher --threads 1 \
     --json $OUT/dataset.json > $OUT/dataset.log 2>&1 &
$BIN benchmark $HIPPO --protocol session --volumes 3 --k 3 --seconds 60 --axis 2 --warm-start --warm-minutes 5 \
     --methods supervised,mean-teacher --threads 1 --json $OUT/session_warm.json > $OUT/session_warm.log 2>&1 &
wait
# these two need the machine to themselves
.venv/bin/python benchmarks/throughput.py > $OUT/throughput.log 2>&1
xvfb-run -a .venv/bin/python benchmarks/responsiveness.py --seconds 30 > $OUT/responsiveness.log 2>&1
# bf16 autocast + channels-last against fp32 at equal work (fixed steps): does the speed cost Dice?
$BIN benchmark $HIPPO --protocol session --volumes 3 --k 3 --iterations 400 --axis 2 --methods mean-teacher \
     --threads 1 --precision fp32 --set channels_last=false --json $OUT/precision_fp32.json > $OUT/precision_fp32.log 2>&1 &
$BIN benchmark $HIPPO --protocol session --volumes 3 --k 3 --iterations 400 --axis 2 --methods mean-teacher \
     --threads 1 --precision bf16 --json $OUT/precision_bf16.json > $OUT/precision_bf16.log 2>&1 &
wait
# slice choice: K-1 evenly spaced, then the teacher's most uncertain slice halfway through
$BIN benchmark $HIPPO --protocol session --volumes 10 --k 3 --seconds 60 --axis 2 --selection uncertainty \
     --methods mean-teacher --threads 1 --json $OUT/session_uncertainty.json > $OUT/session_uncertainty.log 2>&1
