#!/usr/bin/env bash
# Multi-GPU (or multi-process CPU) training with torchrun:  tools/dist_train.sh NUM_GPUS --cfg cfgs/... [args]
set -euo pipefail
NGPUS=$1
shift
PORT=${PORT:-$((29500 + RANDOM % 1000))}
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run --nproc_per_node="$NGPUS" --master_port="$PORT" \
  "$HERE/train.py" --launcher pytorch "$@"
