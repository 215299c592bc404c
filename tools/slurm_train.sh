#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PY: see tools/slurm_launch.sh)
exec "$(dirname "$0")/slurm_launch.sh" "$1" "$2" train.py "$3" \
    --work-dir="$4" "${@:5}"
