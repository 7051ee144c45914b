"""CylinderFusionNet: VFE -> Cylinder3D -> (ResNet18 + voxel-image fusion) -> voxel anomaly head.

Stages are built from registries by NAME; each declares `out_channels` and the next is built from it. The fusion
mode decides which stages exist: lidar_only has no image branch, image_only no LiDAR branch.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict

import torch
from torch import nn

from .backbones_2d import __all__ as IMAGE_BACKBONES
from .backbones_3d import __all__ as BACKBONES_3D
from .fusion import __all__ as FUSIONS
from .geometry import GridSpec
from .heads import __all__ as HEADS
from .vfe import __all__ as VFES

__all__ = ["CylinderFusionNet"]

logger = logging.getLogger("pcdet_anomaly")


def _lookup(registry: dict, name: str, key: str):
    if name not in registry:
        raise KeyError(f"{key} '{name}' is not registered; valid: {sorted(registry)}")
    return registry[name]


class CylinderFusionNet(nn.Module):
    FUSION_MODES = ("attention", "concat", "lidar_only", "image_only")

    def __init__(self, model_cfg, data_cfg):
        super().__init__()
        mode = model_cfg.FUSION.MODE
        if mode not in self.FUSION_MODES:
            raise ValueError(f"MODEL.FUSION.MODE must be one of {self.FUSION_MODES}, got {mode!r}")
        if mode != "lidar_only" and not data_cfg.IMAGE.ENABLED:
            raise ValueError(f"MODEL.FUSION.MODE {mode} needs images: set DATA_CONFIG.IMAGE.ENABLED true")
        self.mode = mode
        stream_cfg = model_cfg.FUSION.get("IMAGE_STREAM", {})
        stream = bool(stream_cfg.get("ENABLED", False))
        if stream and (mode not in ("attention", "concat") or model_cfg.REGIME != "supervised"):
            # the ablations (lidar_only, image_only) and the normality regime inherit the fusion default: drop the
            # stream there, and say so
            logger.warning("MODEL.FUSION.IMAGE_STREAM is for a supervised fusion (MODE attention or concat); "
                           "MODE %s, REGIME %s: built without it", mode, model_cfg.REGIME)
            stream = False
        grid = GridSpec(data_cfg.VOXELIZE)
        self.stages = OrderedDict()
        channels = 0
        if mode != "image_only":
            self.vfe = _lookup(VFES, model_cfg.VFE.NAME, "MODEL.VFE.NAME")(model_cfg.VFE, grid)
            self.backbone_3d = _lookup(BACKBONES_3D, model_cfg.BACKBONE_3D.NAME, "MODEL.BACKBONE_3D.NAME")(
                model_cfg.BACKBONE_3D, self.vfe.out_channels, grid.size)
            channels = self.backbone_3d.out_channels
            self.stages.update(vfe=self.vfe, backbone_3d=self.backbone_3d)
        if mode != "lidar_only":
            self.image_backbone = _lookup(IMAGE_BACKBONES, model_cfg.IMAGE_BACKBONE.NAME,
                                          "MODEL.IMAGE_BACKBONE.NAME")(model_cfg.IMAGE_BACKBONE)
            self.fusion = _lookup(FUSIONS, model_cfg.FUSION.NAME, "MODEL.FUSION.NAME")(
                model_cfg.FUSION, grid, channels, self.image_backbone.out_channels, image_stream=stream)
            channels = self.fusion.out_channels
            self.stages.update(image_backbone=self.image_backbone, fusion=self.fusion)
        self.image_aux_head = None          # auxiliary 2D segmentation of the image branch (IMAGE.AUX_SEMANTIC)
        aux = data_cfg.IMAGE.AUX_SEMANTIC
        if aux.ENABLED and mode != "lidar_only":
            if aux.STRIDE not in self.image_backbone.out_channels:
                raise ValueError(f"DATA_CONFIG.IMAGE.AUX_SEMANTIC.STRIDE {aux.STRIDE} must be one of "
                                 f"MODEL.IMAGE_BACKBONE.OUT_STRIDES {sorted(self.image_backbone.out_channels)}")
            c = self.image_backbone.out_channels[aux.STRIDE]
            k = len(aux.CLASSES) + int(bool(aux.ANOMALY_CLASS))
            self.image_aux_head = nn.Sequential(nn.Conv2d(c, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                                                nn.ReLU(inplace=True), nn.Conv2d(64, k, 1))
            self.aux_stride, self.aux_weight = int(aux.STRIDE), float(aux.WEIGHT)
            self.ignore_index = int(data_cfg.LABELS.IGNORE_INDEX)
        sem_input = model_cfg.HEAD.get("SEMANTIC_INPUT", "all")
        if sem_input not in ("all", "lidar"):
            raise ValueError(f"MODEL.HEAD.SEMANTIC_INPUT must be all or lidar, got {sem_input!r}")
        if sem_input == "lidar" and mode == "image_only":
            raise ValueError("MODEL.HEAD.SEMANTIC_INPUT lidar needs LiDAR features: MODEL.FUSION.MODE is image_only")
        self.head = _lookup(HEADS, model_cfg.HEAD.NAME, "MODEL.HEAD.NAME")(
            model_cfg.HEAD, model_cfg.LOSS, model_cfg.REGIME, channels, data_cfg.LABELS.IGNORE_INDEX,
            semantic_channels=self.backbone_3d.out_channels if sem_input == "lidar" else None,
            stream_channels=model_cfg.FUSION.EMBED_DIM if stream else 0,
            stream_weight=stream_cfg.get("LOSS_WEIGHT", 1.0), stream_score_mix=stream_cfg.get("SCORE_MIX", 0.0),
            stream_lidar_dropout=stream_cfg.get("LIDAR_DROPOUT", 0.0) if stream else 0.0,
            stream_mix_range=stream_cfg.get("SCORE_MIX_RANGE", None) if stream else None)
        self.stages["head"] = self.head
        self.profile = False      # when True, batch_dict['timings'] holds seconds per stage

    def forward(self, batch_dict: dict) -> dict:
        timings = {}
        sync = self.profile and batch_dict["points"].is_cuda     # CUDA is asynchronous: wait before reading clocks
        for name, stage in self.stages.items():
            if sync:
                torch.cuda.synchronize(batch_dict["points"].device)
            start = time.perf_counter()
            batch_dict = stage(batch_dict)
            if self.profile:
                if sync:
                    torch.cuda.synchronize(batch_dict["points"].device)
                timings[name] = time.perf_counter() - start
        if self.profile:
            batch_dict["timings"] = timings
        if self.image_aux_head is not None and self.training and "image_semantic" in batch_dict:
            batch_dict["image_semantic_logits"] = self.image_aux_head(
                batch_dict["image_features"][self.aux_stride])
        return batch_dict

    def get_loss(self, batch_dict: dict):
        total, tb = self.head.get_loss(batch_dict)
        if "image_semantic_logits" in batch_dict:
            logits, target = batch_dict["image_semantic_logits"].float(), batch_dict["image_semantic"]
            if logits.shape[-2:] != target.shape[-2:]:
                raise RuntimeError(f"image_semantic targets {tuple(target.shape[-2:])} do not match the stride-"
                                   f"{self.aux_stride} features {tuple(logits.shape[-2:])}")
            aux = torch.nn.functional.cross_entropy(logits, target, ignore_index=self.ignore_index) \
                if (target != self.ignore_index).any() else logits.sum() * 0.0
            aux = aux * self.aux_weight
            tb["loss_image_semantic"] = float(aux.detach())
            total = total + aux
            tb["loss"] = float(total.detach())
        return total, tb

    def parameter_counts(self) -> dict:
        return {name: (sum(p.numel() for p in stage.parameters()),
                       sum(p.numel() for p in stage.parameters() if p.requires_grad))
                for name, stage in self.stages.items()}
