#!/usr/bin/env bash
# Reproduces every figure in benchmarks/RESULTS.md (CPU). Data: ../shared/data.
# Training runs use one CPU thread so that runs are comparable whatever else shares the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/out; mkdir -p "$OUT"
HIPPO=../shared/data/hippocampus_msd
BIN=.venv/bin/napari-semiseg
$BIN benchmark $HIPPO --protocol session --volumes 10 --k 3 --seconds 60 --axis 2 \
     --methods supervised,mean-teacher --threads 1 --json $OUT/session_iso.json 2>&1 | tee $OUT/session_iso.log
$BIN benchmark $HIPPO --protocol session --volumes 10 --k 3 --seconds 60 --axis 2 --anisotropic 3 \
     --methods supervised,mean-teacher --threads 1 --json $OUT/session_aniso.json 2>&1 | tee $OUT/session_aniso.log
$BIN benchmark $HIPPO --protocol session --volumes 3 --k 3 --seconds 60 --axis 2 --warm-start --warm-minutes 5 \
     --methods supervised,mean-teacher --threads 1 --json $OUT/session_warm.json 2>&1 | tee $OUT/session_warm.log
$BIN benchmark $HIPPO --protocol dataset --minutes 10 --axis 2 --methods supervised,mean-teacher --threads 1 \
     --json $OUT/dataset.json 2>&1 | tee $OUT/dataset.log
.venv/bin/python benchmarks/throughput.py 2>&1 | tee $OUT/throughput.log
