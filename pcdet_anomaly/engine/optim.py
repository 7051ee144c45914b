"""Optimizers and learning-rate schedules (per optimizer step, with linear warm-up)."""
from __future__ import annotations

import math

import torch

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(model, opt_cfg):
    params = [p for p in model.parameters() if p.requires_grad]
    name = opt_cfg.OPTIMIZER
    if name == "adamw":
        return torch.optim.AdamW(params, lr=opt_cfg.LR, weight_decay=opt_cfg.WEIGHT_DECAY)
    if name == "adam":
        return torch.optim.Adam(params, lr=opt_cfg.LR, weight_decay=opt_cfg.WEIGHT_DECAY)
    if name == "sgd":
        return torch.optim.SGD(params, lr=opt_cfg.LR, momentum=opt_cfg.MOMENTUM, weight_decay=opt_cfg.WEIGHT_DECAY,
                               nesterov=True)
    raise ValueError(f"OPTIMIZATION.OPTIMIZER must be adamw, adam or sgd, got {name!r}")


def build_scheduler(optimizer, opt_cfg, steps_per_epoch: int):
    total = max(1, opt_cfg.NUM_EPOCHS * steps_per_epoch)
    warmup = int(round(opt_cfg.WARMUP_EPOCHS * steps_per_epoch))
    kind = opt_cfg.SCHEDULER
    if kind not in ("onecycle", "cosine", "constant"):
        raise ValueError(f"OPTIMIZATION.SCHEDULER must be onecycle, cosine or constant, got {kind!r}")

    def factor(step: int) -> float:
        if kind == "onecycle":
            # cosine up to the peak over the first 40% (or the warm-up), cosine down to 1/1000 afterwards
            peak = warmup if warmup > 0 else max(1, int(0.4 * total))
            if step < peak:
                return 0.1 + 0.9 * (1 - math.cos(math.pi * step / peak)) / 2
            progress = min(1.0, (step - peak) / max(1, total - peak))
            return 1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * progress)) / 2
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
