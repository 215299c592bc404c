#!/usr/bin/env bash
# Usage: tools/slurm_launch.sh PARTITION JOB_NAME TOOL [TOOL args...]
# What tools/slurm_train.sh and tools/slurm_test.sh run: TOOL (train.py or
# test.py of this folder) as a Slurm job of GPUS tasks.
set -x

PARTITION=$1
JOB_NAME=$2
TOOL=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
# $PY or $PYTHON, else the environment's Python (tools/find_python.sh)
PY=${PY:-${PYTHON:-}}
. "$(dirname "$0")/find_python.sh"

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PY" -u "$(dirname "$0")/$TOOL" "${@:4}" --launcher="slurm"
