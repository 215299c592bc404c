#!/usr/bin/env bash
# `make gpu-check`: every GPU path of the project in one short run (a few
# minutes on a GPU: tiny synthetic data, tiny models; the point is that each
# path runs, not accuracy):
#
#   1. versions: torch, its CUDA, the GPU, mmcv and its ops' CUDA version
#      (scripts/mmcv_check.py: must be torch's on a GPU)
#   2. tiny synthetic CUHK-SYSU scenes, a tiny ReID teacher (10 iterations)
#      and its embeddings
#   3. PSDiff-synthetic, 20 iterations, then validation (search mAP)
#   4. the same with --amp                                      (CUDA only)
#   5. DiffPS on a tiny random SD (tests/data/configs/diffps_sd21_synthetic.py),
#      20 iterations, with --amp on CUDA
#   6. the gpu-marked tests (tests/test_gpu)                    (CUDA only)
#   7. tools/analysis_tools/benchmark.py at 1 and 8 steps beside the
#      two-step baseline (on CUDA also the R-50 configs at 800x1333)
#
# Every step runs even when an earlier one failed (those that need its output
# are skipped); a summary ends the run, and the exit code is 1 if any failed.
#
#   DEVICE=cuda    cuda (default) or cpu: `make gpu-check DEVICE=cpu` runs
#                  the same steps on the CPU, minus the CUDA-only ones
#                  (AmpOptimWrapper needs a GPU), so that this script is
#                  never dead code
#   PY=...         the interpreter (default: $VENV/bin/python if there, else
#                  python3)
#   WORK=dir       where data, logs and work dirs go (default: a new
#                  folder under /tmp; nothing outside it is written)
#   WHEELS=dir     install the OpenMMLab packages from this folder, offline,
#                  when they are not importable (below)
#   DRY_RUN=1      print the steps' commands, run nothing
#
# A fresh GPU machine (its own Python and CUDA torch, nvcc, no OpenMMLab
# packages, no internet) gets them as wheels in a git-ignored folder, e.g.
# .gpu_wheels/, prepared on a machine with the registry, for the GPU
# machine's Python version and platform (3.12, manylinux x86_64 here):
#
#   pip download -d .gpu_wheels --python-version 3.12 \
#       --platform manylinux2014_x86_64 --only-binary=:all: \
#       mmengine==0.10.7 mmdet==3.3.0 mmpretrain==1.2.0 \
#       -r requirements/runtime.txt pytest hypothesis \
#       addict packaging Pillow pyyaml yapf   # mmcv's own dependencies
#   (drop any torch / nvidia-* wheels it pulled in: the GPU machine keeps
#   its own torch)
#
# mmcv 2.1.0 has no wheel for a recent torch: build one against the GPU
# machine's torch and CUDA (torch's ABI), with nvcc, where they are, once:
#
#   FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST=9.0 \
#       pip wheel --no-build-isolation --no-deps mmcv==2.1.0 -w .gpu_wheels
#
# or put its source there (pip download --no-binary :all: --no-deps
# mmcv==2.1.0 -d .gpu_wheels) and this script builds it into WHEELS when
# mmcv is missing: FORCE_CUDA=1, for the visible GPU's architecture only,
# MAX_JOBS = the cores; that build is not part of the few minutes above.
# Then: make gpu-check WHEELS=.gpu_wheels PY=python3
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
DEVICE=${DEVICE:-cuda}
DRY_RUN=${DRY_RUN:-0}
if [ -z "${PY:-}" ]; then
  if [ -x "${VENV:-.venv}/bin/python" ]; then PY=${VENV:-.venv}/bin/python; else PY=python3; fi
fi
case "$DEVICE" in
  cpu) CUDA=0 ;;
  cuda*) CUDA=1 ;;
  *) echo "DEVICE must be cuda or cpu, got $DEVICE" >&2; exit 2 ;;
esac
if [ "$DRY_RUN" = 1 ]; then
  WORK=${WORK:-/tmp/gpu_check.DRY_RUN}
else
  WORK=${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
  mkdir -p "$WORK/logs"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$([ "$CUDA" = 1 ] && echo 4 || echo 1)}
if [ "$CUDA" = 0 ]; then export CUDA_VISIBLE_DEVICES=''; fi

TEACHER_CFG=configs/teacher/teacher_synthetic.py
PSDIFF_CFG=configs/psdiff/psdiff_r18_synthetic.py
DIFFPS_CFG=tests/data/configs/diffps_sd21_synthetic.py
BASELINE_CFG=configs/baseline/faster_rcnn_r18_teacher_synthetic.py
PSDIFF_R50_CFG=configs/psdiff/psdiff_r50_cuhk.py
BASELINE_R50_CFG=configs/baseline/faster_rcnn_r50_teacher_cuhk.py
DATA=$WORK/cuhk
ITERS=20
WIDTH=8                       # first-stage channels of both ResNet-18s
EMBED=$((WIDTH * 8))          # -> 64-d teacher embeddings
SCALE='(96,64)'               # make_synthetic's scenes, unscaled
NUM_TRAIN_IDS=4               # of --num-ids 8, as tests/test_tools

declare -a SUMMARY=()
FAILED=0
start=$(date +%s)

# step NAME CMD...: run (or print) one step, log to $WORK/logs/NAME.log
step() {
  local name=$1; shift
  if [ "$DRY_RUN" = 1 ]; then
    printf '[gpu-check] %s:' "$name"; printf ' %q' "$@"; printf '\n'
    return 0
  fi
  printf '\n=== [gpu-check] %s\n' "$name"
  local t0=$(date +%s) rc=0
  "$@" > "$WORK/logs/$name.log" 2>&1 || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc = 0 ]; then
    tail -n "${TAIL:-4}" "$WORK/logs/$name.log"
    SUMMARY+=("ok     ${dt}s  $name")
  else
    tail -n 40 "$WORK/logs/$name.log"
    SUMMARY+=("FAILED ${dt}s  $name (rc $rc, $WORK/logs/$name.log)")
    FAILED=1
  fi
  return $rc
}
skip() {
  SUMMARY+=("skip         $1 ($2)")
  if [ "$DRY_RUN" = 1 ]; then echo "[gpu-check] $1: skipped ($2)"; fi
}

# 0. the OpenMMLab packages, from WHEELS when missing
if [ "$DRY_RUN" != 1 ] && ! "$PY" -c "import mmengine, mmdet, mmpretrain, mmcv.ops, diffusers, scipy, pytest" 2>/dev/null; then
  if [ -z "${WHEELS:-}" ]; then
    echo "[gpu-check] mmengine / mmdet / mmpretrain / mmcv with ops / diffusers are not" \
      "importable by $PY: run make install, or pass WHEELS=dir (see the header)" >&2
    exit 1
  fi
  PIPI=("$PY" -m pip install -q --no-index --find-links "$WHEELS")
  if ! "$PY" -c "import mmcv.ops" 2>/dev/null; then
    if ls "$WHEELS"/mmcv-2.1.0-*.whl > /dev/null 2>&1; then
      "${PIPI[@]}" --no-deps "$(ls "$WHEELS"/mmcv-2.1.0-*.whl | head -n 1)"
    else
      echo "[gpu-check] building mmcv 2.1.0 with CUDA ops from $WHEELS (once, into $WHEELS)"
      "$PY" scripts/mmcv_check.py nvcc "$("$PY" -c 'import torch; print(torch.version.cuda)')" || exit 1
      ARCH=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
      "${PIPI[@]}" "setuptools>=77,<82" wheel ninja || true
      FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$(nproc) \
        "$PY" -m pip wheel -q --no-index --find-links "$WHEELS" --no-build-isolation \
        --no-deps mmcv==2.1.0 -w "$WHEELS" || exit 1
      "${PIPI[@]}" --no-deps "$(ls "$WHEELS"/mmcv-2.1.0-*.whl | head -n 1)"
    fi
  fi
  "${PIPI[@]}" addict packaging Pillow pyyaml yapf mmengine==0.10.7 mmdet==3.3.0 \
    mmpretrain==1.2.0 -r requirements/runtime.txt pytest hypothesis || exit 1
fi

# 1. versions
TAIL=20 step versions "$PY" - "$DEVICE" <<'PYEOF'
import sys
import torch
import mmcv, mmdet, mmengine
from mmcv.ops import get_compiling_cuda_version
sys.path.insert(0, 'scripts')
import mmcv_check
device = sys.argv[1]
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), '
      f'cuda available: {torch.cuda.is_available()}')
if device != 'cpu':
    print('GPU:', torch.cuda.get_device_name(device))
print(f'mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}')
print('mmcv ops compiled for CUDA:', get_compiling_cuda_version())
target = 'cpu' if device == 'cpu' else mmcv_check.ops_target(
    True, torch.version.cuda)
why = mmcv_check.check_ops(mmcv.__version__, '2.1.0',
                           get_compiling_cuda_version(), target)
print('mmcv ops fit this device' if why is None else f'ERROR: {why}')
sys.exit(why is not None)
PYEOF

# 2. data, teacher, embeddings
step data "$PY" -c "from mmpsearch.datasets import make_synthetic
made = make_synthetic('cuhk', '$DATA', num_images=202, num_ids=8, image_size=(96, 64))
assert made['num_train_ids'] == $NUM_TRAIN_IDS, made
print(made)"
TEACHER_OPTS=(model.backbone.stem_channels=$WIDTH model.backbone.base_channels=$WIDTH
  model.head.in_channels=$EMBED model.head.num_classes=$NUM_TRAIN_IDS)
for loader in train_dataloader val_dataloader test_dataloader; do
  TEACHER_OPTS+=("$loader.dataset.dataset.data_root=$DATA"
    "$loader.dataset.num_classes=$NUM_TRAIN_IDS" "$loader.dataset.pipeline.2.scale=(32,64)"
    "$loader.batch_size=16" "$loader.num_workers=0" "$loader.persistent_workers=False")
done
TEACHER_DIR=$WORK/teacher
step teacher "$PY" tools/train.py $TEACHER_CFG --work-dir "$TEACHER_DIR" \
  --cfg-options "${TEACHER_OPTS[@]}" train_cfg.max_iters=10 train_cfg.val_begin=11 \
    param_scheduler.0.end=2 param_scheduler.1.begin=2 param_scheduler.1.end=10 \
    default_hooks.checkpoint.interval=10
TEACHER_CKPT=$TEACHER_DIR/iter_10.pth
EMB=$WORK/teacher_embeddings.npz
step embeddings "$PY" tools/extract_teacher_embeddings.py $TEACHER_CFG "$TEACHER_CKPT" \
  --out "$EMB" --device "$DEVICE" --num-workers 0 \
  --cfg-options "${TEACHER_OPTS[@]:0:4}" "test_dataloader.dataset.dataset.data_root=$DATA" \
    "test_dataloader.dataset.num_classes=$NUM_TRAIN_IDS" "test_dataloader.dataset.pipeline.2.scale=(32,64)"

# 3.-4. PSDiff: 20 iterations, then validation on the gallery + queries
# the val loader (gallery + query): the Runner builds it even unused
VAL_OPTS=("val_evaluator.data_root=$DATA")
for k in 0 1; do
  VAL_OPTS+=("val_dataloader.dataset.datasets.$k.data_root=$DATA"
    "val_dataloader.dataset.datasets.$k.pipeline.1.scale=$SCALE")
done
PSDIFF_OPTS=(model.backbone.base_channels=$WIDTH
  "model.neck.in_channels=[$WIDTH,$((2 * WIDTH)),$((4 * WIDTH)),$((8 * WIDTH))]"
  model.bbox_head.diffusion.embed_dims=$EMBED
  model.backbone.init_cfg.checkpoint=$TEACHER_CKPT
  "train_dataloader.dataset.data_root=$DATA" "train_dataloader.dataset.pipeline.2.scale=$SCALE"
  "train_dataloader.dataset.pipeline.4.teacher_embeds=$EMB"
  train_dataloader.dataset.pipeline.4.diffusion.embed_dims=$EMBED
  "${VAL_OPTS[@]}" val_evaluator.score_thr=0.0
  model.test_cfg.score_thr=0.0 train_cfg.max_iters=$ITERS train_cfg.val_interval=$ITERS
  default_hooks.checkpoint.interval=$ITERS default_hooks.logger.interval=10 randomness.seed=0)
TAIL=3 step psdiff "$PY" tools/train.py $PSDIFF_CFG --work-dir "$WORK/psdiff" \
  --cfg-options "${PSDIFF_OPTS[@]}"
if [ "$CUDA" = 1 ]; then
  TAIL=3 step psdiff_amp "$PY" tools/train.py $PSDIFF_CFG --work-dir "$WORK/psdiff_amp" --amp \
    --cfg-options "${PSDIFF_OPTS[@]}"
else
  skip psdiff_amp 'CUDA only: AmpOptimWrapper needs a GPU'
fi

# 5. DiffPS on a tiny random Stable Diffusion
AMP=(); [ "$CUDA" = 1 ] && AMP=(--amp)
step tiny_sd "$PY" tools/misc/make_tiny_sd.py "$WORK/tiny_sd"
TAIL=3 step diffps "$PY" tools/train.py $DIFFPS_CFG --work-dir "$WORK/diffps" "${AMP[@]}" \
  --cfg-options "model.backbone.sd_path=$WORK/tiny_sd" "train_dataloader.dataset.data_root=$DATA" \
    "train_dataloader.dataset.pipeline.2.scale=$SCALE" "${VAL_OPTS[@]}" \
    model.reid_roi_head.loss_reid.num_pids=$NUM_TRAIN_IDS \
    train_cfg.max_iters=$ITERS train_cfg.val_begin=$((ITERS + 1)) \
    default_hooks.checkpoint.interval=$ITERS randomness.seed=0

# 6. the gpu-marked tests
if [ "$CUDA" = 1 ]; then
  step gpu_tests "$PY" -m pytest -m gpu tests/test_gpu -q -p no:cacheprovider
else
  skip gpu_tests 'CUDA only'
fi

# 7. speed beside the baseline, 1 and 8 steps
BENCH=(--steps 1 8 --device "$DEVICE")
if [ "$CUDA" = 1 ]; then BENCH+=(--num-images 10 --warmup 3); else BENCH+=(--num-images 1 --warmup 0); fi
TAIL=8 step benchmark_synthetic "$PY" tools/analysis_tools/benchmark.py $PSDIFF_CFG \
  --shape 240 320 "${BENCH[@]}" --baseline $BASELINE_CFG --json "$WORK/speed_synthetic.json"
if [ "$CUDA" = 1 ]; then
  TAIL=8 step benchmark_r50 "$PY" tools/analysis_tools/benchmark.py $PSDIFF_R50_CFG \
    --shape 800 1333 "${BENCH[@]}" --baseline $BASELINE_R50_CFG --json "$WORK/speed_r50.json"
else
  skip benchmark_r50 'CUDA only: minutes per image on a CPU'
fi

[ "$DRY_RUN" = 1 ] && exit 0
printf '\n=== [gpu-check] summary (DEVICE=%s, %s s, logs in %s)\n' \
  "$DEVICE" "$(( $(date +%s) - start ))" "$WORK/logs"
printf '  %s\n' "${SUMMARY[@]}"
exit $FAILED
