"""Datasets registry and loader construction."""
from __future__ import annotations

import functools

import torch
from torch.utils.data import DataLoader

from ..utils.common_utils import worker_init_fn
from .anovox import AnoVoxDataset
from .collate import batch_to_device, collate_batch
from .dataset_template import DatasetTemplate
from .semantickitti import SemanticKittiDataset

__all__ = {"DatasetTemplate": DatasetTemplate, "AnoVoxDataset": AnoVoxDataset,
           "SemanticKittiDataset": SemanticKittiDataset}


def build_dataset(dataset_cfg, split, training, logger=None, root_path=None):
    name = dataset_cfg.DATASET
    if name not in __all__:
        raise KeyError(f"DATA_CONFIG.DATASET '{name}' is not registered; valid: {sorted(__all__)}")
    return __all__[name](dataset_cfg, split=split, training=training, logger=logger, root_path=root_path)


class EpochSeededSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation that depends only on (seed, epoch), so a resumed run sees the same order; shards it
    over `world_size` ranks; `set_start(k)` skips the first k indices of this rank for the next pass (a run resumed in
    the middle of an epoch continues where it stopped).

    Training (pad=True) pads the permutation to a multiple of the world size, as DistributedSampler does; evaluation
    (pad=False) gives each frame to exactly one rank, so gathered results equal a single-process evaluation.

    `weights` (one per frame, training only): draw the epoch's len(dataset) indices with replacement in proportion to
    them instead of a permutation (anomaly-frame-aware sampling, DATA_CONFIG.ANOMALY_FRAME_WEIGHT); the same
    (seed, epoch) function, so resume and sharding behave as above."""

    def __init__(self, dataset, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 pad: bool = True, weights=None):
        self.dataset, self.seed, self.shuffle, self.epoch = dataset, seed, shuffle, 0
        self.rank, self.world_size, self.pad, self.start = rank, world_size, pad, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and (len(self.weights) != len(dataset) or not (self.weights >= 0).all()
                                         or self.weights.sum() <= 0):
            raise ValueError("sampler weights must be one non-negative number per frame, not all zero")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def _indices(self) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            if self.weights is not None and n:
                order = torch.multinomial(self.weights, n, replacement=True, generator=g).tolist()
            else:
                order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.world_size > 1:
            if self.pad and n % self.world_size:       # repeated as often as needed (n may be < world size)
                short = self.world_size - n % self.world_size
                order += (order * -(-short // n))[:short]
            order = order[self.rank::self.world_size]
        return order

    def __iter__(self):
        return iter(self._indices()[self.start:])

    def __len__(self):            # arithmetic, without drawing the epoch's order (equal to len(self._indices()))
        n, w = len(self.dataset), self.world_size
        per_rank = n if w == 1 else (-(-n // w) if self.pad and n % w else len(range(self.rank, n, w)))
        return max(0, per_rank - self.start)


def anomaly_frame_weights(dataset, weight: float, logger=None):
    """Per-frame sampling weights: `weight` for frames with an anomaly, 1 for the others (None, a plain shuffle, when
    weight is 1 or when every frame or none holds an anomaly). Like OpenPCDet's class-balanced resampling (CBGS), at
    the frame level and without growing the epoch."""
    if weight <= 0:
        raise ValueError(f"DATA_CONFIG.ANOMALY_FRAME_WEIGHT must be > 0, got {weight}")
    if weight == 1 or len(dataset) == 0:
        return None
    frames = dataset.frames
    if len(frames) > 2000:              # SemanticKITTI reads each .label once: show it (19k frames take minutes)
        from tqdm import tqdm
        frames = tqdm(frames, desc="anomaly-frame sampling: scanning labels", unit="frame", mininterval=5)
    has = [dataset.frame_has_anomaly(name, frame) for name, frame in frames]
    n_anom = sum(has)
    if n_anom in (0, len(has)):        # nothing to balance (a normality-only split): the plain shuffle
        return None
    if logger is not None:
        share = n_anom * weight / (n_anom * weight + len(has) - n_anom)
        logger.info("anomaly-frame-aware sampling: %d of %d training frames hold an anomaly, drawn with weight %g "
                    "(%.0f%% of the draws)", n_anom, len(has), weight, 100 * share)
    return [weight if h else 1.0 for h in has]


def build_dataloader(dataset_cfg, split, batch_size, training, workers=0, dist=False, seed=0, logger=None,
                     root_path=None):
    dataset = build_dataset(dataset_cfg, split, training, logger, root_path)
    dataset.set_epoch(0, seed)
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
    weights = anomaly_frame_weights(dataset, dataset_cfg.ANOMALY_FRAME_WEIGHT, logger) if training else None
    sampler = EpochSeededSampler(dataset, seed, shuffle=training, rank=rank, world_size=world, pad=training,
                                 weights=weights)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
                        num_workers=workers, collate_fn=collate_batch, pin_memory=False, drop_last=False,
                        generator=generator, persistent_workers=False,
                        worker_init_fn=functools.partial(worker_init_fn, base_seed=seed))
    return dataset, loader, sampler


__all__["build_dataset"] = build_dataset
__all__["build_dataloader"] = build_dataloader
__all__["collate_batch"] = collate_batch
__all__["batch_to_device"] = batch_to_device
