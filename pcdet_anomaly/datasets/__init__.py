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


def build_dataloader(dataset_cfg, split, batch_size, training, workers=0, dist=False, seed=0, logger=None,
                     root_path=None):
    dataset = build_dataset(dataset_cfg, split, training, logger, root_path)
    sampler = DistributedSampler(dataset, shuffle=training, seed=seed) if dist else None
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=training and sampler is None, sampler=sampler,
                        num_workers=workers, collate_fn=collate_batch, pin_memory=False, drop_last=False,
                        generator=generator, persistent_workers=False,
                        worker_init_fn=functools.partial(worker_init_fn, base_seed=seed))
    return dataset, loader, sampler


__all__["build_dataset"] = build_dataset
__all__["build_dataloader"] = build_dataloader
__all__["collate_batch"] = collate_batch
__all__["batch_to_device"] = batch_to_device
