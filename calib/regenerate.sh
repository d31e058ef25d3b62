#!/usr/bin/env bash
# Regenerate the calibrated schedules ffexport ships (see calib/README.md). Run from anywhere; takes a
# few minutes on a 2-core CPU. Writes ffexport/calibrate/schedules/qwen2vl-tiny/<bucket>.json (package
# data: `ffexport build` finds them) and calib/reports/qwen2vl-tiny/<bucket>/fidelity.{json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
for bucket in 8x112x112 16x224x224; do
  ffexport calibrate --model qwen2vl-tiny --bucket "$bucket" --synthetic 40 --seed 0 \
    --out "ffexport/calibrate/schedules/qwen2vl-tiny/$bucket.json" \
    --report "calib/reports/qwen2vl-tiny/$bucket" --report-synthetic 10 --overwrite
done
