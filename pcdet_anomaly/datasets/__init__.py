"""Datasets registry and loader construction."""
from __future__ import annotations

import functools

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..utils.common_utils import worker_init_fn
from .anovox import AnoVoxDataset
from .collate import batch_to_device, collate_batch
from .dataset_template import DatasetTemplate

__all__ = {"DatasetTemplate": DatasetTemplate, "AnoVoxDataset": AnoVoxDataset}


def build_dataset(dataset_cfg, split, training, logger=None, root_path=None):
    name = dataset_cfg.DATASET
    if name not in __all__:
        raise KeyError(f"DATA_CONFIG.DATASET '{name}' is not registered; valid: {sorted(__all__)}")
    return __all__[name](dataset_cfg, split=split, training=training, logger=logger, root_path=root_path)


class EpochSeededSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, dataset, seed: int = 0, shuffle: bool = True):
        self.dataset, self.seed, self.shuffle, self.epoch = dataset, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(len(self.dataset)))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(len(self.dataset), generator=g).tolist())

    def __len__(self):
        return len(self.dataset)


def build_dataloader(dataset_cfg, split, batch_size, training, workers=0, dist=False, seed=0, logger=None,
                     root_path=None):
    dataset = build_dataset(dataset_cfg, split, training, logger, root_path)
    dataset.set_epoch(0, seed)
    sampler = DistributedSampler(dataset, shuffle=training, seed=seed) if dist else EpochSeededSampler(
        dataset, seed, shuffle=training)
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
