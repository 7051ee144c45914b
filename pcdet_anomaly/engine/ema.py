"""Exponential moving average of the model's weights (Polyak averaging; mmdetection's EMAHook, YOLOX's ModelEMA).

Validation, `best.pth` selection and inference use the averaged weights; training updates the live ones. With
batches of 2 frames and a one-cycle peak learning rate, the live weights (and BatchNorm's running statistics) swing
from one epoch to the next; their average does not."""
from __future__ import annotations

import copy

import torch

from .checkpoint import unwrap

__all__ = ["ModelEMA"]


class ModelEMA:
    """ema = d * ema + (1 - d) * live after every optimizer step, for every floating-point entry of the state dict
    (parameters and BatchNorm running statistics); integer buffers are copied. d ramps up as
    min(DECAY, (1 + n) / (10 + n)) over the n updates so far, so the first steps do not average in the random
    initialisation."""

    def __init__(self, model, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"OPTIMIZATION.EMA.DECAY must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = float(decay), 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model) -> None:
        self.updates += 1
        d = self.current_decay()
        live = unwrap(model).state_dict()
        for key, value in self.module.state_dict().items():
            src = live[key].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(src.to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(src)

    @torch.no_grad()
    def reset_to(self, model) -> None:
        """Start the average again from the live weights (a resume from a checkpoint written without EMA)."""
        self.module.load_state_dict(unwrap(model).state_dict())
        self.updates = 0

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict, updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = int(updates)
