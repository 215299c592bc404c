#!/usr/bin/env bash
# `make demo`: the main job on the built-in synthetic data, from scratch on
# the CPU. Each stage is skipped when its output is already there, so a
# second `make demo` only re-evaluates; results of every run go to a new
# timestamped folder and nothing earlier is overwritten.
#
#   1. synthetic scenes in the CUHK-SYSU release format  (data/synthetic_cuhk)
#   2. the ReID teacher on the ground-truth crops         (work_dirs/teacher_synthetic)
#   3. its embeddings e_0 of every training box           (teacher_embeddings.npz)
#   4. PSDiff on the scenes                               (work_dirs/psdiff_r50_synthetic)
#   5. search mAP / top-k / detection AP at 1, 2, 4 and 8 sampling steps
#   6. a search picture: a query and its top hits, and the boxes over the
#      sampling steps                                      (demo_<time>/search.png, steps.png)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${VENV:-.venv}/bin/python}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"

DATA=data/synthetic_cuhk
TEACHER_CFG=configs/teacher/teacher_synthetic.py
TEACHER_DIR=work_dirs/teacher_synthetic
TEACHER_EMB=$TEACHER_DIR/teacher_embeddings.npz
PSDIFF_CFG=configs/psdiff/psdiff_r50_synthetic.py
PSDIFF_DIR=work_dirs/psdiff_r50_synthetic
RUN_DIR=$PSDIFF_DIR/demo_$(date +%Y%m%d_%H%M%S)

stage() { printf '\n=== [demo] %s\n' "$*"; }
start=$(date +%s)

stage "1/6 synthetic scenes -> $DATA"
if [ -f "$DATA/annotation/Images.mat" ]; then
  echo "exists, kept"
else
  "$PY" tools/dataset_converters/make_synthetic.py --format cuhk --out "$DATA" --seed 0
fi

stage "2/6 ReID teacher -> $TEACHER_DIR"
TEACHER_CKPT=$(ls -t "$TEACHER_DIR"/iter_*.pth 2>/dev/null | head -n 1 || true)
if [ -n "$TEACHER_CKPT" ] && [ -f "$TEACHER_DIR/last_checkpoint" ]; then
  echo "trained, kept ($TEACHER_CKPT)"
else
  "$PY" tools/train.py "$TEACHER_CFG" --work-dir "$TEACHER_DIR"
fi
TEACHER_CKPT=$(cat "$TEACHER_DIR/last_checkpoint")

stage "3/6 teacher embeddings -> $TEACHER_EMB"
if [ -f "$TEACHER_EMB" ]; then
  echo "exists, kept"
else
  "$PY" tools/extract_teacher_embeddings.py "$TEACHER_CFG" "$TEACHER_CKPT" --out "$TEACHER_EMB"
fi

stage "4/6 PSDiff -> $PSDIFF_DIR"
if [ -f "$PSDIFF_DIR/last_checkpoint" ]; then
  echo "trained, kept ($(cat "$PSDIFF_DIR/last_checkpoint"))"
else
  # the config reads the teacher embeddings from $TEACHER_EMB; its backbone
  # starts from the teacher's (the stand-in for ImageNet weights)
  "$PY" tools/train.py "$PSDIFF_CFG" --work-dir "$PSDIFF_DIR" \
    --cfg-options "model.backbone.init_cfg.checkpoint=$TEACHER_CKPT"
fi
PSDIFF_CKPT=$(cat "$PSDIFF_DIR/last_checkpoint")

stage "5/6 evaluation at 1, 2, 4, 8 steps -> $RUN_DIR"
mkdir -p "$RUN_DIR"
for k in 1 2 4 8; do
  "$PY" tools/test.py "$PSDIFF_CFG" "$PSDIFF_CKPT" --work-dir "$RUN_DIR/steps_$k" \
    --out "$RUN_DIR/results_steps_$k.pkl" \
    --cfg-options "model.test_cfg.sampling_steps=$k" > "$RUN_DIR/test_steps_$k.log" 2>&1 \
    || { tail -n 30 "$RUN_DIR/test_steps_$k.log"; exit 1; }
  "$PY" tools/analysis_tools/eval_search.py "$RUN_DIR/results_steps_$k.pkl" \
    --dataset cuhk --data-root "$DATA" --score-thr 0.3 --json "$RUN_DIR/metrics_steps_$k.json" > /dev/null
done
"$PY" - "$RUN_DIR" <<'PYEOF'
import json, sys
run = sys.argv[1]
print("(detections scoring >= 0.3 kept; the protocol keeps >= 0.5, see psdiff_r50_synthetic.py)")
print(f"{'steps':>5} {'mAP':>7} {'top-1':>7} {'top-5':>7} {'det AP':>7} {'det recall':>10}")
for k in (1, 2, 4, 8):
    m = json.load(open(f'{run}/metrics_steps_{k}.json'))
    print(f"{k:>5} {100*m['mAP']:7.2f} {100*m['top1']:7.2f} {100*m['top5']:7.2f} "
          f"{100*m['det_ap']:7.2f} {100*m['det_recall']:10.2f}")
PYEOF

stage "6/6 search picture -> $RUN_DIR/search.png"
"$PY" demo/search_demo.py "$PSDIFF_CFG" "$PSDIFF_CKPT" --dataset-query "$DATA" \
  --out "$RUN_DIR/search.png" --show-steps "$RUN_DIR/steps.png"
echo "[demo] done in $(( $(date +%s) - start )) s; results in $RUN_DIR"
