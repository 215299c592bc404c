#!/usr/bin/env bash
# Usage: tools/dist_launch.sh TOOL NPROC [TOOL args...]
# What tools/dist_train.sh and tools/dist_test.sh run: TOOL (train.py or
# test.py of this folder) on NPROC processes with torchrun. On GPUs this is
# NCCL as usual; without CUDA, the tools start gloo themselves.
TOOL=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# torchrun of the environment's Python (tools/find_python.sh), so that no
# activated environment is needed; TORCHRUN=... names another launcher
. "$(dirname "$0")/find_python.sh"
if [ -n "${TORCHRUN:-}" ]; then
  LAUNCH=("$TORCHRUN")
else
  LAUNCH=("$PY" -m torch.distributed.run)
fi

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"${LAUNCH[@]}" \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$(dirname "$0")/$TOOL" \
    "${@:3}" --launcher pytorch
