#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] tools/slurm_index.sh PARTITION JOB_NAME CONFIG VIDEO_DIR INDEX
#        [search.py index args...]
# One task per GPU (or per CPU slot with GPUS_PER_NODE=0); rank 0 writes the index.
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
VIDEO_DIR=$4
INDEX=$5
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS_PER_NODE}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=${@:6}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$TASKS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    ${PYTHON:-python} -u "$(dirname "$0")/search.py" index "$VIDEO_DIR" --config "$CONFIG" \
    --index "$INDEX" --launcher slurm $PY_ARGS
