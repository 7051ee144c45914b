"""Pure-torch reference implementations: short, obviously correct, device-generic. The parity tests compare the
numba CPU and numba.cuda backends against these; they are also the fallback for devices without a kernel."""
from __future__ import annotations

import math

import torch

__all__ = ["grid_keys_ref", "voxelize_ref", "label_vote_ref", "eval_grid_scores_ref"]


def _wrap_phi(phi: torch.Tensor, phi_min: float) -> torch.Tensor:
    return phi_min + torch.remainder(phi - phi_min, 2.0 * math.pi)


def grid_keys_ref(points: torch.Tensor, batch_idx: torch.Tensor, mode: str, grid_size, pc_range,
                  out_of_range: str):
    """points [N, >=3] -> (grid [N, 3] int64, key [N] int64, -1 where dropped)."""
    xyz = points[:, :3].to(torch.float64)
    if mode == "cylindrical":
        rho = torch.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
        phi = _wrap_phi(torch.atan2(xyz[:, 1], xyz[:, 0]), float(pc_range[1]))
        coords = torch.stack([rho, phi, xyz[:, 2]], 1)
    elif mode == "cartesian":
        coords = xyz
    else:
        raise ValueError(f"voxelize: mode must be 'cylindrical' or 'cartesian', got {mode!r}")
    lo = torch.tensor(pc_range[:3], dtype=torch.float64, device=points.device)
    hi = torch.tensor(pc_range[3:], dtype=torch.float64, device=points.device)
    size = torch.tensor(grid_size, dtype=torch.int64, device=points.device)
    scale = size.to(torch.float64) / (hi - lo)
    grid = torch.floor((coords - lo) * scale).to(torch.int64)
    if out_of_range == "clamp":
        grid = torch.minimum(torch.clamp(grid, min=0), size - 1)
        valid = torch.ones(len(grid), dtype=torch.bool, device=points.device)
    elif out_of_range == "drop":
        valid = ((grid >= 0) & (grid < size)).all(1)
    else:
        raise ValueError(f"voxelize: out_of_range must be 'clamp' or 'drop', got {out_of_range!r}")
    b = batch_idx.to(torch.int64)
    key = ((b * size[0] + grid[:, 0]) * size[1] + grid[:, 1]) * size[2] + grid[:, 2]
    key = torch.where(valid, key, torch.full_like(key, -1))
    return grid, key


def voxelize_ref(points, batch_idx, mode, grid_size, pc_range, out_of_range):
    """-> coords [V, 4] int32 (batch, i, j, k) sorted by key; point2voxel [N] int64 (-1: dropped); counts [V]."""
    _, key = grid_keys_ref(points, batch_idx, mode, grid_size, pc_range, out_of_range)
    valid = key >= 0
    uniq, inverse, counts = torch.unique(key[valid], sorted=True, return_inverse=True, return_counts=True)
    point2voxel = torch.full_like(key, -1)
    point2voxel[valid] = inverse
    return _decode(uniq, grid_size), point2voxel, counts


def _decode(keys: torch.Tensor, grid_size) -> torch.Tensor:
    g0, g1, g2 = (int(g) for g in grid_size)
    k = keys % g2
    rest = keys // g2
    j = rest % g1
    rest = rest // g1
    i = rest % g0
    b = rest // g0
    return torch.stack([b, i, j, k], 1).to(torch.int32)


def label_vote_ref(labels: torch.Tensor, point2voxel: torch.Tensor, num_voxels: int, num_classes: int,
                   ignore_index: int, rule: str = "majority") -> torch.Tensor:
    """Majority label per voxel over non-ignored points (ties: smallest class); `any_anomaly`: 1 if any point is 1."""
    valid = (labels != ignore_index) & (point2voxel >= 0)
    flat = point2voxel[valid] * num_classes + labels[valid].to(torch.int64)
    hist = torch.bincount(flat, minlength=num_voxels * num_classes).view(num_voxels, num_classes)
    out = torch.argmax(hist, 1)      # first maximum = smallest class id on ties
    out = torch.where(hist.sum(1) > 0, out, torch.full_like(out, ignore_index))
    if rule == "any_anomaly":
        out = torch.where(hist[:, 1] > 0, torch.ones_like(out), out)
    elif rule != "majority":
        raise ValueError(f"label_vote: rule must be 'majority' or 'any_anomaly', got {rule!r}")
    return out


def eval_grid_scores_ref(points, scores, rule, voxel_size=0.5, grid_size=(1000, 1000, 64),
                         offset=(250.0, 250.0, 16.0), z_shift=-1.8):
    """AnoVox evaluation grid: -> (voxels [M, 3] int64 sorted by ix + 1000 iy + 1e6 iz, score [M] float64)."""
    xyz = points[:, :3].to(torch.float64) + torch.tensor([0.0, 0.0, z_shift], dtype=torch.float64,
                                                         device=points.device)
    off = torch.tensor(offset, dtype=torch.float64, device=points.device)
    idx = torch.floor((xyz + off) / voxel_size).to(torch.int64)
    size = torch.tensor(grid_size, device=points.device)
    inside = ((idx >= 0) & (idx < size)).all(1)
    idx, xyz, scores = idx[inside], xyz[inside], scores[inside].to(torch.float64)
    key = idx[:, 0] + 1000 * idx[:, 1] + 1_000_000 * idx[:, 2]
    uniq, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    m = len(uniq)
    if rule == "mean":
        out = torch.zeros(m, dtype=torch.float64, device=points.device).index_add_(0, inverse, scores) / counts
    elif rule == "max":
        out = torch.full((m,), -math.inf, dtype=torch.float64, device=points.device)
        out = out.scatter_reduce(0, inverse, scores, "amax")
    elif rule in ("nearest", "median"):
        if rule == "nearest":
            corner = idx * voxel_size - off
            secondary = torch.linalg.norm(xyz - corner, dim=1)
        else:
            secondary = scores
        order = torch.argsort(secondary, stable=True)
        order = order[torch.argsort(key[order], stable=True)]     # by key, then by secondary
        starts = torch.cumsum(counts, 0) - counts
        if rule == "nearest":
            out = scores[order[starts]]
        else:
            lo = scores[order[starts + (counts - 1) // 2]]
            hi = scores[order[starts + counts // 2]]
            out = (lo + hi) / 2
    else:
        raise ValueError(f"eval grid: rule must be nearest, mean, median or max, got {rule!r}")
    ix = uniq % 1000
    iy = (uniq // 1000) % 1000
    iz = uniq // 1_000_000
    return torch.stack([ix, iy, iz], 1), out
