"""Grid geometry shared by the VFE and the fusion: point -> grid coordinates, voxel index -> centre."""
from __future__ import annotations

import math

import torch

__all__ = ["GridSpec", "to_grid_coords", "voxel_centres_xyz"]


class GridSpec:
    """DATA_CONFIG.VOXELIZE as tensors: type, size [3], lower [3], upper [3], step [3]."""

    def __init__(self, voxelize_cfg):
        self.type = voxelize_cfg.TYPE
        self.size = [int(g) for g in voxelize_cfg.GRID_SIZE]
        self.lower = [float(v) for v in voxelize_cfg.RANGE[:3]]
        self.upper = [float(v) for v in voxelize_cfg.RANGE[3:]]
        self.step = [(u - l) / g for l, u, g in zip(self.lower, self.upper, self.size)]

    def tensor(self, values, ref: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=ref.dtype, device=ref.device)


def to_grid_coords(xyz: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """[N, 3] cartesian -> [N, 3] in the grid's coordinate system (rho, phi wrapped, z for cylindrical)."""
    if grid.type == "cartesian":
        return xyz
    rho = torch.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
    phi = grid.lower[1] + torch.remainder(torch.atan2(xyz[:, 1], xyz[:, 0]) - grid.lower[1], 2 * math.pi)
    return torch.stack([rho, phi, xyz[:, 2]], 1)


def voxel_centres_xyz(voxel_coords: torch.Tensor, grid: GridSpec, dtype=torch.float32) -> torch.Tensor:
    """voxel_coords [V, 1 + 3] (batch, i, j, k) -> voxel centres [V, 3] cartesian metres (augmented frame)."""
    ijk = voxel_coords[:, 1:].to(dtype)
    lower = torch.tensor(grid.lower, dtype=dtype, device=ijk.device)
    step = torch.tensor(grid.step, dtype=dtype, device=ijk.device)
    centre = lower + (ijk + 0.5) * step
    if grid.type == "cartesian":
        return centre
    rho, phi, z = centre.unbind(1)
    return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], 1)
