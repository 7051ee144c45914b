"""DatasetTemplate: what every dataset shares (config, root path, logger, training flag)."""
from __future__ import annotations

import logging

import torch.utils.data

from ..utils.common_utils import resolve_path

__all__ = ["DatasetTemplate"]


class DatasetTemplate(torch.utils.data.Dataset):
    def __init__(self, dataset_cfg, training: bool = True, root_path=None, logger: logging.Logger | None = None):
        super().__init__()
        self.dataset_cfg = dataset_cfg
        self.training = training
        self.root_path = resolve_path(root_path if root_path is not None else dataset_cfg.DATA_PATH)
        self.logger = logger or logging.getLogger("pcdet_anomaly")

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        raise NotImplementedError
