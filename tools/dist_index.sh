#!/usr/bin/env bash
# Usage: tools/dist_index.sh CONFIG CKPT NPROC [index_gallery.py args...]
# tools/index_gallery.py on NPROC processes with torchrun (gloo; on GPUs
# give --device cuda): each rank indexes its own contiguous part of the
# chunks of the sources into its own shards, rank 0 writes the merged
# manifest. The index is the same as one process makes.
# (NNODES, NODE_RANK, PORT, MASTER_ADDR, TORCHRUN: see tools/dist_launch.sh)
exec "$(dirname "$0")/dist_launch.sh" index_gallery.py "$3" "$1" "$2" "${@:4}"
