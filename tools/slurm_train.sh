#!/usr/bin/env bash
# SLURM launch (one task per node, torchrun starts one process per GPU), preemption-safe:
#
#   sbatch --nodes 2 --gres gpu:8 --ntasks-per-node 1 --signal B:USR1@120 --requeue \
#          tools/slurm_train.sh 8 --cfg cfgs/anovox/cylinder_fusion.yaml [train.py args]
#
# SLURM sends SIGUSR1 (--signal) or SIGTERM (preemption, scancel) before it kills the job: every rank writes a
# checkpoint at the next step boundary and train.py exits with code 75; this script then requeues the job, and the
# requeued job resumes from ckpt/latest.pth (auto-resume), mid-epoch included.
set -uo pipefail
GPUS_PER_NODE=$1
shift
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
NNODES=${SLURM_NNODES:-1}
MASTER=${MASTER_ADDR:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n 1)}
MASTER=${MASTER:-localhost}
PORT=${MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}

# forward the signals to the training processes (bash holds them while srun runs in the foreground)
trap 'kill -USR1 $PID 2>/dev/null' USR1
trap 'kill -TERM $PID 2>/dev/null' TERM
srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" \
  --rdzv_backend c10d --rdzv_endpoint "$MASTER:$PORT" --rdzv_id "${SLURM_JOB_ID:-pcdet}" \
  "$HERE/train.py" --launcher pytorch "$@" &
PID=$!
wait $PID; rc=$?
while [ $rc -gt 128 ] && kill -0 $PID 2>/dev/null; do wait $PID; rc=$?; done   # wait again after a trapped signal
if [ "$rc" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  echo "preempted: checkpoint written; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit $rc
