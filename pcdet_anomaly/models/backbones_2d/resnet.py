"""ResNet18 written in the project (torchvision does not install beside the CPU torch here), with torchvision's
parameter names so a local torchvision `resnet18` state dict loads strictly. Never downloads anything."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ...utils.common_utils import resolve_path

__all__ = ["ResNet18"]

logger = logging.getLogger("pcdet_anomaly")
_WARNED = set()


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """images [B, 3, H, W] (ImageNet-normalised) -> `image_features` {stride: [B, C, H/stride, W/stride]} for the
    configured OUT_STRIDES among 8 (128 channels) and 16 (256 channels)."""

    STRIDE_CHANNELS = {4: 64, 8: 128, 16: 256, 32: 512}

    def __init__(self, model_cfg):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.fc = nn.Linear(512, 1000)      # unused; present so torchvision checkpoints load strictly
        self.out_strides = [int(s) for s in model_cfg.OUT_STRIDES]
        for s in self.out_strides:
            if s not in (4, 8, 16, 32):
                raise ValueError(f"MODEL.IMAGE_BACKBONE.OUT_STRIDES: {s} is not one of 4, 8, 16, 32")
        self.out_channels = {s: self.STRIDE_CHANNELS[s] for s in self.out_strides}
        self.frozen = bool(model_cfg.FROZEN)
        self.pretrained = self.load_pretrained(model_cfg.PRETRAINED_PATH)
        if self.frozen:
            for p in self.parameters():
                p.requires_grad_(False)

    def load_pretrained(self, path: str) -> bool:
        if not path:
            if "no_weights" not in _WARNED:
                logger.warning("MODEL.IMAGE_BACKBONE.PRETRAINED_PATH is empty: the ResNet18 image branch runs "
                               "randomly initialised%s. Point it at a local torchvision resnet18 state dict "
                               "(nothing is downloaded).", " and frozen" if self.frozen else "")
                _WARNED.add("no_weights")
            return False
        file = resolve_path(path)
        if not Path(file).is_file():
            raise FileNotFoundError(f"MODEL.IMAGE_BACKBONE.PRETRAINED_PATH: {file} not found (no download is tried)")
        state = torch.load(file, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{file}: not a torchvision resnet18 state dict; missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        logger.info("ResNet18 weights loaded from %s", file)
        return True

    def train(self, mode: bool = True):
        super().train(mode and not self.frozen)     # a frozen encoder keeps its BatchNorm statistics
        return self

    def forward(self, batch_dict: dict) -> dict:
        x = self.maxpool(self.relu(self.bn1(self.conv1(batch_dict["images"]))))
        feats = {}
        for stride, layer in ((4, self.layer1), (8, self.layer2), (16, self.layer3), (32, self.layer4)):
            x = layer(x)
            if stride in self.out_strides:
                feats[stride] = x
            if stride >= max(self.out_strides):
                break
        batch_dict["image_features"] = feats
        return batch_dict
