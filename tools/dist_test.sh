#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
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
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
