#!/usr/bin/env bash
# `make baseline`: the two-step baseline of `make demo`'s table on the same
# synthetic data, from scratch on the CPU (~25 min on 2 idle cores): mmdet's
# Faster R-CNN with PSDiff's slim ResNet-18 (initialised from the same
# teacher), then the ReID teacher on its detections. Kept apart from
# `make demo` so that the demo stays under 40 minutes; the demo finds its
# checkpoint and prints it beside PSDiff. Stages already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${VENV:-.venv}/bin/python}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"

DATA=data/synthetic_cuhk
NUM_IMAGES=800
TEACHER_CFG=configs/teacher/teacher_synthetic.py
TEACHER_DIR=work_dirs/teacher_synthetic
TEACHER_EMB=$TEACHER_DIR/teacher_embeddings.npz
BASELINE_CFG=configs/baseline/faster_rcnn_r18_teacher_synthetic.py
BASELINE_DIR=work_dirs/faster_rcnn_r18_teacher_synthetic

stage() { printf '\n=== [baseline] %s\n' "$*"; }
start=$(date +%s)

. scripts/prepare_synthetic.sh  # stages 1-3 (the teacher is its ReID model)

stage "Faster R-CNN -> $BASELINE_DIR"
if [ -f "$BASELINE_DIR/last_checkpoint" ]; then
  echo "trained, kept ($(cat "$BASELINE_DIR/last_checkpoint"))"
else
  "$PY" tools/train.py "$BASELINE_CFG" --work-dir "$BASELINE_DIR" \
    --cfg-options "model.detector.backbone.init_cfg.checkpoint=$TEACHER_CKPT" \
    "model.reid.checkpoint=$TEACHER_CKPT"
fi
echo "[baseline] done in $(( $(date +%s) - start )) s; make demo now prints it"
