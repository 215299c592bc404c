#!/usr/bin/env bash
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PY: see tools/slurm_launch.sh)
exec "$(dirname "$0")/slurm_launch.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
