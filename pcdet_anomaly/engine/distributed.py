"""Distributed launch in one place: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; gloo on CPU, nccl on GPU."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "barrier", "cleanup"]


def init_distributed(launcher: str):
    """-> (distributed, rank, world_size, device)."""
    if launcher == "none":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return False, 0, 1, device
    if launcher != "pytorch":
        raise ValueError(f"--launcher must be none or pytorch, got {launcher!r}")
    if "LOCAL_RANK" not in os.environ:
        raise RuntimeError("--launcher pytorch expects to be started by torchrun (LOCAL_RANK is not set); "
                           "use tools/dist_train.sh NUM_GPUS ...")
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return True, dist.get_rank(), dist.get_world_size(), device


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
