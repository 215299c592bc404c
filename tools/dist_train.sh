#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NPROC [train.py args...]
# (NNODES, NODE_RANK, PORT, MASTER_ADDR, TORCHRUN: see tools/dist_launch.sh)
exec "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
