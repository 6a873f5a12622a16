#!/usr/bin/env bash
# Usage: tools/dist_index.sh CONFIG VIDEO_DIR INDEX NUM_PROCS [search.py index args...]
# Each process encodes a share of the videos' windows (balanced by duration); rank 0 writes
# the index. Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
CONFIG=$1
VIDEO_DIR=$2
INDEX=$3
NPROC=$4
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29510}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
${PYTHON:-python} -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$(dirname "$0")/search.py" index "$VIDEO_DIR" --config "$CONFIG" --index "$INDEX" \
    --launcher pytorch "${@:5}"
