#!/usr/bin/env bash
# One idempotent set-up of mmpsearch's environment (called by `make install`).
#
#   VENV=.venv            where the virtual environment lives (git-ignored)
#   PYTHON=python3        the interpreter that creates it
#   MMPSEARCH_CACHE=...   where the built mmcv wheel is cached, outside the repo
#   MMCV_OPS=auto         compile mmcv's ops for CUDA where torch sees a GPU
#                         (auto), always (cuda: e.g. an image built without a
#                         GPU, with nvcc) or never (cpu)
#
# The one slow step is compiling mmcv 2.1.0 with its ops: ~10-12 min on 2
# cores for CPU ops; CUDA ops (README, "GPU install") need nvcc of torch's
# CUDA major version and take much longer. The wheel is cached keyed by the
# torch and Python versions and by what its ops were compiled for
# (torch<v>-py<XY>-cpu or -cuda<XY>), so any later install, also from a
# fresh clone, takes seconds. On a GPU machine, an mmcv whose ops were
# compiled without CUDA (a CPU wheel, a reused venv) is not "working": it
# stops DiffPS and the baseline at their first NMS on the GPU.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}
CACHE=${MMPSEARCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmpsearch}
TORCH_SPEC='torch===2.13.0'
TORCHVISION_SPEC='torchvision==0.28.0'
MMCV_VERSION=2.1.0
# setuptools < 80: its `develop` (pip's --no-use-pep517 -e) is the legacy
# editable install, whose egg-link makes mim find the repository; from 80 on
# it is a PEP 660 install, and `mim train / test / search mmpsearch` look in
# site-packages/mmpsearch, which does not exist. pkg_resources (mmcv's
# setup.py, mim) is gone in 82 anyway.
SETUPTOOLS_SPEC='setuptools>=77,<80'

log() { printf '[install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# pip 25.3 dropped legacy editable installs, which `mim` needs to find
# tools/ and configs/ of an editable mmpsearch (as with mmdet).
if ! "$PY" -c "import pip, sys; v = tuple(map(int, pip.__version__.split('.')[:2])); sys.exit(not (23, 0) <= v < (25, 3))"; then
  "${PIP[@]}" install -q "pip>=23,<25.3"
fi

# 1. torch + torchvision, unless a working pair is already there.
if "$PY" - <<'PYEOF' 2>/dev/null
import torch, torchvision
from torchvision.ops import nms
assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__
nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
PYEOF
then
  log "torch/torchvision already working"
else
  log "installing $TORCH_SPEC $TORCHVISION_SPEC"
  "${PIP[@]}" install -q "$TORCH_SPEC" "$TORCHVISION_SPEC"
fi

# 2. mmcv with ops, built once and cached outside the repo, for what this
# machine runs: CPU ops, or ops for torch's CUDA where torch sees a GPU.
# scripts/mmcv_check.py holds the key and the check (tests/test_scripts).
MMCV_INFO=$("$PY" scripts/mmcv_check.py info)
read -r MMCV_TARGET MMCV_KEY OLD_KEY <<< "$MMCV_INFO"
if [ "$MMCV_TARGET" = cpu ]; then OPS="CPU ops"; else OPS="CUDA $MMCV_TARGET ops"; fi
if WHY=$("$PY" scripts/mmcv_check.py check "$MMCV_VERSION" "$MMCV_TARGET" 2>&1); then
  log "mmcv $MMCV_VERSION with $OPS already working"
else
  log "mmcv $MMCV_VERSION with $OPS needed: $WHY"
  WHEELS="$CACHE/wheels"
  WHEEL_DIR="$WHEELS/$MMCV_KEY"
  # a wheel cached by an older install.sh (key without cpu / cuda<XY>)
  "$PY" scripts/mmcv_check.py adopt "$WHEELS" "$OLD_KEY" "$MMCV_TARGET"
  mkdir -p "$WHEEL_DIR"
  WHEEL=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
  BUILD_ENV=(MMCV_WITH_OPS=1 "MAX_JOBS=${MAX_JOBS:-$(nproc)}")
  if [ -z "$WHEEL" ] && [ "$MMCV_TARGET" != cpu ]; then
    # nvcc of torch's CUDA major version, or a clear stop before building
    "$PY" scripts/mmcv_check.py nvcc "$MMCV_TARGET" || exit 1
    BUILD_ENV+=(FORCE_CUDA=1)
  fi
  # build tools that mmcv's setup.py imports (setuptools: see SETUPTOOLS_SPEC)
  "${PIP[@]}" install -q "$SETUPTOOLS_SPEC" wheel ninja
  if [ -z "$WHEEL" ]; then
    if [ "$MMCV_TARGET" = cpu ]; then
      log "building mmcv $MMCV_VERSION with CPU ops (10-12 min on 2 cores, once)"
    else
      log "building mmcv $MMCV_VERSION with CUDA $MMCV_TARGET ops (several times the" \
        "CPU build; ${BUILD_ENV[1]}, once)"
    fi
    TMP_WHEELS=$(mktemp -d)
    env "${BUILD_ENV[@]}" "${PIP[@]}" wheel -q --no-build-isolation --no-deps \
      "mmcv==$MMCV_VERSION" -w "$TMP_WHEELS"
    mv "$TMP_WHEELS"/mmcv-*.whl "$WHEEL_DIR"/
    rmdir "$TMP_WHEELS" 2>/dev/null || true
    WHEEL=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
  else
    log "using cached $WHEEL"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL"
  # mmcv's own runtime dependencies (the wheel was installed without them);
  # mmcv.ops imports mmengine, so the check below needs it (pinned as in
  # requirements/mminstall.txt)
  "${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python \
    "$(grep '^mmengine' requirements/mminstall.txt)"
  if ! WHY=$("$PY" scripts/mmcv_check.py check "$MMCV_VERSION" "$MMCV_TARGET" 2>&1); then
    log "error: $WHEEL installed, but: $WHY"
    log "remove it and rerun to build it again"
    exit 1
  fi
fi

# 3. the rest, and mmpsearch itself (editable), skipped when nothing changed.
STAMP="$VENV/.mmpsearch-install-stamp"
HASH=$(cat requirements/*.txt setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] \
   && "$PY" -c "import mmpsearch, mmdet, mmpretrain, diffusers" 2>/dev/null \
   && "$PY" scripts/mim_check.py 2>/dev/null; then
  log "requirements unchanged and importable"
else
  log "installing OpenMMLab packages, requirements and mmpsearch (editable)"
  "${PIP[@]}" install -q -r requirements/mminstall.txt -r requirements/runtime.txt \
    -r requirements/tests.txt -r requirements/mim.txt \
    "$TORCH_SPEC" "$TORCHVISION_SPEC" "mmcv==$MMCV_VERSION" "$SETUPTOOLS_SPEC"
  "${PIP[@]}" install -q --no-deps openmim==0.3.9
  # legacy editable install (setup.py develop of setuptools < 80): an
  # egg-link to the repo, where `mim` finds mmpsearch/.mim/{tools,configs}
  "${PIP[@]}" install -q --no-deps --no-build-isolation --no-use-pep517 -e .
  if ! WHY=$("$PY" scripts/mim_check.py 2>&1); then
    log "error: mmpsearch installed, but mim does not find it: $WHY"
    exit 1
  fi
  echo "$HASH" > "$STAMP"
fi
"$PY" -c "import mmpsearch; print('[install] mmpsearch', mmpsearch.__version__, 'ready in', '$VENV')"
