"""Logging (rank-aware, file + console), seeding, paths, small helpers."""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["ROOT_DIR", "resolve_path", "create_logger", "set_random_seed", "get_rank", "get_world_size",
           "is_main_process", "worker_init_fn"]

ROOT_DIR = Path(__file__).resolve().parents[2]


def resolve_path(path: str | os.PathLike, base: Path = ROOT_DIR) -> Path:
    """Absolute path; a relative one is taken against the repository root, never the working directory."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else (base / path).resolve()


def get_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def is_main_process() -> bool:
    return get_rank() == 0


def create_logger(log_file: str | os.PathLike | None = None, rank: int | None = None,
                  name: str = "pcdet_anomaly", level: int = logging.INFO) -> logging.Logger:
    """Console + optional file logger. Ranks other than 0 log warnings and errors only, and never to the file."""
    rank = get_rank() if rank is None else rank
    logger = logging.getLogger(name)
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter(f"%(asctime)s %(levelname)-7s [rank {rank}] %(message)s", "%H:%M:%S")
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def worker_init_fn(worker_id: int, base_seed: int = 0) -> None:
    seed = (base_seed + worker_id + 1000 * get_rank()) % (2 ** 32)
    np.random.seed(seed)
    random.seed(seed)
