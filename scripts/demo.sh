#!/usr/bin/env bash
# `make demo`: the main job on the built-in synthetic data, from scratch on
# the CPU. Each stage is skipped when its output is already there, so a
# second `make demo` only re-evaluates; results of every run go to a new
# timestamped folder and nothing earlier is overwritten.
#
#   1. synthetic scenes in the CUHK-SYSU release format  (data/synthetic_cuhk)
#   2. the ReID teacher on the ground-truth crops         (work_dirs/teacher_synthetic)
#   3. its embeddings e_0 of every training box           (teacher_embeddings.npz)
#   4. PSDiff on the scenes                               (work_dirs/psdiff_r18_synthetic)
#   5. search mAP / top-k / detection AP at 1, 2, 4 and 8 sampling steps, at
#      the protocol's 0.5 score threshold, beside the two-step baseline
#      (Faster R-CNN + the teacher) when `make baseline` has trained it
#   6. a search picture: a query and its top hits, and the boxes over the
#      sampling steps                                      (demo_<time>/search.png, steps.png)
#
# DEMO_VARIANT=quick (`make demo-quick`): the same stages and table in
# minutes, on their own data and work dirs (data/synthetic_cuhk_quick,
# work_dirs/*_quick; nothing of the full demo's is read or written): 300
# scenes, the same teacher, PSDiff for 500 iterations
# (configs/psdiff/psdiff_r18_synthetic_quick.py), evaluated at 1 and 8 steps,
# no baseline. A check that the chain runs; its numbers are not the demo's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${VENV:-.venv}/bin/python}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"

VARIANT=${DEMO_VARIANT:-full}
# the quick variant's data, configs and work dirs are the full ones + _quick
case "$VARIANT" in
  full) NAME=demo; Q=""; NUM_IMAGES=800; STEPS="1 2 4 8" ;;
  quick) NAME=demo-quick; Q=_quick; NUM_IMAGES=300; STEPS="1 8" ;;
  *) echo "DEMO_VARIANT=$VARIANT: expected full or quick" >&2; exit 1 ;;
esac
DATA=data/synthetic_cuhk$Q
TEACHER_CFG=configs/teacher/teacher_synthetic$Q.py
TEACHER_DIR=work_dirs/teacher_synthetic$Q
PSDIFF_CFG=configs/psdiff/psdiff_r18_synthetic$Q.py
PSDIFF_DIR=work_dirs/psdiff_r18_synthetic$Q
BASELINE_CFG=configs/baseline/faster_rcnn_r18_teacher_synthetic.py
BASELINE_DIR=work_dirs/faster_rcnn_r18_teacher_synthetic
if [ "$VARIANT" = quick ]; then
  BASELINE_DIR=""  # not part of the quick variant
fi
TEACHER_EMB=$TEACHER_DIR/teacher_embeddings.npz
RUN_DIR=$PSDIFF_DIR/demo_$(date +%Y%m%d_%H%M%S)

stage() { printf '\n=== [%s] %s\n' "$NAME" "$*"; }
start=$(date +%s)

. scripts/prepare_synthetic.sh  # stages 1-3

stage "PSDiff -> $PSDIFF_DIR"
if [ -f "$PSDIFF_DIR/last_checkpoint" ]; then
  echo "trained, kept ($(cat "$PSDIFF_DIR/last_checkpoint"))"
else
  # the config reads the teacher embeddings from $TEACHER_EMB; its backbone
  # starts from the teacher's (the stand-in for ImageNet weights)
  "$PY" tools/train.py "$PSDIFF_CFG" --work-dir "$PSDIFF_DIR" \
    --cfg-options "model.backbone.init_cfg.checkpoint=$TEACHER_CKPT"
fi
PSDIFF_CKPT=$(cat "$PSDIFF_DIR/last_checkpoint")

# test_and_score CFG CKPT NAME KEY=VALUE: tools/test.py into $RUN_DIR/NAME
# (results_NAME.pkl, test_NAME.log), then the protocol's scores
# (metrics_NAME.json, detections >= 0.5)
test_and_score() {
  "$PY" tools/test.py "$1" "$2" --work-dir "$RUN_DIR/$3" \
    --out "$RUN_DIR/results_$3.pkl" \
    --cfg-options "$4" > "$RUN_DIR/test_$3.log" 2>&1 \
    || { tail -n 30 "$RUN_DIR/test_$3.log"; exit 1; }
  "$PY" tools/analysis_tools/eval_search.py "$RUN_DIR/results_$3.pkl" \
    --dataset cuhk --data-root "$DATA" --score-thr 0.5 --json "$RUN_DIR/metrics_$3.json" > /dev/null
}

stage "evaluation at ${STEPS// /, } steps (score >= 0.5, the protocol's) -> $RUN_DIR"
mkdir -p "$RUN_DIR"
for k in $STEPS; do
  test_and_score "$PSDIFF_CFG" "$PSDIFF_CKPT" "steps_$k" "model.test_cfg.sampling_steps=$k"
done
# the CUHK-SYSU occlusion / low-resolution query subsets, at 8 steps (scenes
# written before the generator had them have no subset files: skipped)
for sub in occlusion resolution; do
  file=Occlusion.mat; [ "$sub" = resolution ] && file=Resolution.mat
  if [ -f "$DATA/annotation/test/subset/$file" ]; then
    "$PY" tools/analysis_tools/eval_search.py "$RUN_DIR/results_steps_8.pkl" \
      --dataset cuhk --data-root "$DATA" --score-thr 0.5 --subset "$sub" \
      --json "$RUN_DIR/metrics_steps_8_$sub.json" > /dev/null
  fi
done
if [ -n "$BASELINE_DIR" ] && [ -f "$BASELINE_DIR/last_checkpoint" ]; then
  BASELINE_CKPT=$(cat "$BASELINE_DIR/last_checkpoint")
  test_and_score "$BASELINE_CFG" "$BASELINE_CKPT" baseline "model.reid.checkpoint=$TEACHER_CKPT"
fi
"$PY" - "$RUN_DIR" "$STEPS" "$VARIANT" <<'PYEOF'
import json, os, sys
from mmpsearch.evaluation.results_io import safe_load_pickle
run, steps, quick = sys.argv[1], [int(k) for k in sys.argv[2].split()], sys.argv[3] == 'quick'
n = len(safe_load_pickle(f'{run}/results_steps_1.pkl')['query'])
if quick:
    print("QUICK VARIANT (make demo-quick): 300 scenes, PSDiff trained 500 iterations "
          "instead of 4,500; a check that the chain runs, below make demo's numbers")
print(f"CUHK-SYSU protocol on the synthetic test split: gallery 100, {n} queries, "
      "detections scoring >= 0.5, test seed 0")
print(f"{'model':<28} {'mAP':>6} {'top-1':>6} {'top-5':>6} {'det AP':>7} {'recall':>7}")
rows = [(f'PSDiff, {k} DDIM step' + ('s' if k > 1 else ''), f'{run}/metrics_steps_{k}.json')
        for k in steps]
rows.append(('two-step baseline', f'{run}/metrics_baseline.json'))
for name, path in rows:
    if not os.path.exists(path):
        print(f"{name:<28} " + ("(not in the quick variant)" if quick
                                else "(not trained: make baseline)"))
        continue
    m = json.load(open(path))
    print(f"{name:<28} {100*m['mAP']:6.1f} {100*m['top1']:6.1f} {100*m['top5']:6.1f} "
          f"{100*m['det_ap']:7.1f} {100*m['det_recall']:7.1f}")
for sub in ('occlusion', 'resolution'):
    path = f'{run}/metrics_steps_8_{sub}.json'
    if os.path.exists(path):
        m = json.load(open(path))
        print(f"{'PSDiff, 8 steps, ' + sub:<28} {100*m['mAP']:6.1f} {100*m['top1']:6.1f} "
              f"{100*m['top5']:6.1f}  (the {sub} query subset)")
PYEOF

stage "search picture -> $RUN_DIR/search.png"
"$PY" demo/search_demo.py "$PSDIFF_CFG" "$PSDIFF_CKPT" --dataset-query "$DATA" \
  --out "$RUN_DIR/search.png" --show-steps "$RUN_DIR/steps.png"
echo "[$NAME] done in $(( $(date +%s) - start )) s; results in $RUN_DIR"
