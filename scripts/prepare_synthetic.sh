# Stages 1-3 of `make demo` and `make baseline`, sourced by both: the
# synthetic scenes, the ReID teacher, its embeddings of every training box.
# Each is skipped when its output exists. Expects PY, DATA, TEACHER_CFG,
# TEACHER_DIR, TEACHER_EMB, NUM_IMAGES (800; 300 for `make demo-quick`) and
# stage() from the caller; sets TEACHER_CKPT.
stage "scenes -> $DATA"
if [ -f "$DATA/annotation/Images.mat" ]; then
  n=$(ls "$DATA/Image/SSM" | wc -l)
  if [ "$n" != "$NUM_IMAGES" ]; then
    echo "$DATA holds $n scenes, not the $NUM_IMAGES of this benchmark (an older demo's?);" \
      "move it away (and $TEACHER_DIR and the trainings on it in work_dirs/) and rerun" >&2
    exit 1
  fi
  echo "exists, kept"
else
  "$PY" tools/dataset_converters/make_synthetic.py --format cuhk --out "$DATA" \
    --num-images "$NUM_IMAGES" --num-ids 200 --seed 0
fi

stage "ReID teacher -> $TEACHER_DIR"
TEACHER_CKPT=$(ls -t "$TEACHER_DIR"/iter_*.pth 2>/dev/null | head -n 1 || true)
if [ -n "$TEACHER_CKPT" ] && [ -f "$TEACHER_DIR/last_checkpoint" ]; then
  echo "trained, kept ($TEACHER_CKPT)"
else
  "$PY" tools/train.py "$TEACHER_CFG" --work-dir "$TEACHER_DIR"
fi
TEACHER_CKPT=$(cat "$TEACHER_DIR/last_checkpoint")

stage "teacher embeddings -> $TEACHER_EMB"
if [ -f "$TEACHER_EMB" ]; then
  echo "exists, kept"
else
  "$PY" tools/extract_teacher_embeddings.py "$TEACHER_CFG" "$TEACHER_CKPT" --out "$TEACHER_EMB"
fi

