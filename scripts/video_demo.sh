#!/usr/bin/env bash
# `make video-demo`: search a person in two synthetic videos with the demo's
# PSDiff checkpoint (`make demo`, or `make demo-quick`'s when only it is
# there), on the CPU:
#   1. two 48-frame synthetic videos and a query image  (data/synthetic_videos)
#   2. index both at 2 fps                              (work_dirs/video_demo/index)
#      (a second run finds them indexed and adds nothing)
#   3. search the query: ranked appearances with times, hits.json / .csv and
#      a contact sheet                                  (work_dirs/video_demo/hits_<time>)
# STEPS=k sets the sampling steps (default 8, the config's).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${VENV:-.venv}/bin/python}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
CFG=configs/psdiff/psdiff_r18_synthetic.py
LAST=work_dirs/psdiff_r18_synthetic/last_checkpoint
if [ ! -f "$LAST" ]; then
  CFG=configs/psdiff/psdiff_r18_synthetic_quick.py
  LAST=work_dirs/psdiff_r18_synthetic_quick/last_checkpoint
fi
if [ ! -f "$LAST" ]; then
  echo "no PSDiff checkpoint: run 'make demo' (or 'make demo-quick') first" >&2
  exit 1
fi
CKPT=$(cat "$LAST")
DATA=data/synthetic_videos
OUT=work_dirs/video_demo
OPTS=(--cfg-options "model.test_cfg.sampling_steps=${STEPS:-8}")
start=$(date +%s)
if [ ! -f "$DATA/annotations.json" ]; then
  "$PY" tools/dataset_converters/make_synthetic_videos.py --out "$DATA"
fi
"$PY" tools/index_gallery.py "$CFG" "$CKPT" \
  --videos "$DATA/video_0.mp4" "$DATA/video_1.mp4" --fps 2 \
  --out "$OUT/index" "${OPTS[@]}"
BOX=$("$PY" -c "import json; print(*json.load(open('$DATA/annotations.json'))['query']['box'])")
# shellcheck disable=SC2086
"$PY" tools/search_index.py "$OUT/index" "$CFG" "$CKPT" \
  --query-img "$DATA/query.jpg" --query-box $BOX --topk 10 \
  --out "$OUT/hits_$(date +%Y%m%d_%H%M%S)" "${OPTS[@]}"
echo "video demo: $(( $(date +%s) - start )) s"
