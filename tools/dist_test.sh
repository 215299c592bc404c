#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
# (NNODES, NODE_RANK, PORT, MASTER_ADDR, TORCHRUN: see tools/dist_launch.sh)
exec "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
