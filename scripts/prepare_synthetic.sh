# Stages 1-3 of `make demo` and `make baseline`, sourced by both: the
# synthetic scenes, the ReID teacher, its embeddings of every training box.
# Each is skipped when its output exists. Expects PY, DATA, TEACHER_CFG,
# TEACHER_DIR, TEACHER_EMB and stage() from the caller; sets TEACHER_CKPT.
stage "1/6 synthetic scenes -> $DATA"
if [ -f "$DATA/annotation/Images.mat" ]; then
  echo "exists, kept"
else
  "$PY" tools/dataset_converters/make_synthetic.py --format cuhk --out "$DATA" \
    --num-images 800 --num-ids 200 --seed 0
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

