"""Point feature encoder: 9 features per point -> MLP -> scatter-max into voxels -> compression."""
from __future__ import annotations

import torch
from torch import nn

import cuda_ops

from ..geometry import GridSpec, to_grid_coords

__all__ = ["CylinderPointVFE"]


class CylinderPointVFE(nn.Module):
    """Per-point input: offset to the voxel centre in grid coordinates (3), grid coordinates (rho, phi, z) (3),
    x, y (2), intensity (1). Output `voxel_features` [V, OUT_DIM]."""

    NUM_POINT_FEATURES = 9

    def __init__(self, model_cfg, grid: GridSpec):
        super().__init__()
        self.grid = grid
        dims = [self.NUM_POINT_FEATURES] + list(model_cfg.MLP_DIMS)
        layers: list[nn.Module] = [nn.BatchNorm1d(self.NUM_POINT_FEATURES)]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        self.point_mlp = nn.Sequential(*layers)
        self.compression = nn.Sequential(nn.Linear(dims[-1], model_cfg.OUT_DIM), nn.ReLU(inplace=True))
        self.out_channels = model_cfg.OUT_DIM

    def point_features(self, points: torch.Tensor, point2voxel: torch.Tensor, voxel_coords: torch.Tensor):
        xyz = points[:, 1:4]
        grid_xyz = to_grid_coords(xyz, self.grid)
        lower = self.grid.tensor(self.grid.lower, xyz)
        step = self.grid.tensor(self.grid.step, xyz)
        centre = lower + (voxel_coords[point2voxel.clamp(min=0), 1:].to(xyz.dtype) + 0.5) * step
        return torch.cat([grid_xyz - centre, grid_xyz, xyz[:, :2], points[:, 4:5]], 1)

    def forward(self, batch_dict: dict) -> dict:
        p2v = batch_dict["point2voxel"]
        keep = p2v >= 0
        feats = self.point_features(batch_dict["points"][keep], p2v[keep], batch_dict["voxel_coords"])
        feats = self.point_mlp(feats)
        pooled = cuda_ops.scatter_max(feats, p2v[keep], len(batch_dict["voxel_coords"]))
        batch_dict["voxel_features"] = self.compression(pooled)
        return batch_dict
