"""Public API of the custom ops: torch tensors in, torch tensors out, on the caller's device.

backend: 'auto' (numba CPU kernels for CPU tensors, numba.cuda kernels for CUDA tensors, torch otherwise),
'cpu', 'cuda' (numba.cuda; host arrays under NUMBA_ENABLE_CUDASIM=1) or 'torch' (the reference).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import cpu_kernels, gpu_kernels, reference

__all__ = ["VoxelizeResult", "voxelize", "label_vote", "eval_grid_scores", "scatter_max", "scatter_mean",
           "project_to_image"]


class VoxelizeResult(NamedTuple):
    coords: torch.Tensor        # [V, 4] int32: batch, i, j, k (rho, phi, z for cylindrical); sorted by that order
    point2voxel: torch.Tensor   # [N] int64: voxel of each point, -1 where the point was dropped
    counts: torch.Tensor        # [V] int64: points per voxel


def _pick_backend(backend: str, tensor: torch.Tensor) -> str:
    if backend == "auto":
        if tensor.is_cuda:
            return "cuda" if gpu_kernels.cuda_available() else "torch"
        return "cpu" if tensor.device.type == "cpu" else "torch"
    if backend not in ("cpu", "cuda", "torch"):
        raise ValueError(f"backend must be auto, cpu, cuda or torch, got {backend!r}")
    if backend == "cpu" and tensor.device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got {tensor.device}")
    if backend == "cuda" and not (tensor.is_cuda or gpu_kernels.simulator_enabled()):
        raise ValueError("backend 'cuda' needs CUDA tensors (or NUMBA_ENABLE_CUDASIM=1 for the simulator)")
    return backend


def _check_points(points: torch.Tensor, name: str = "points") -> None:
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f"{name}: expected [N, >=3], got {list(points.shape)}")
    if points.numel() and not torch.isfinite(points[:, :3]).all():
        bad = int((~torch.isfinite(points[:, :3])).any(1).sum())
        raise ValueError(f"{name}: {bad} rows with NaN or inf coordinates; filter them before voxelizing")


def voxelize(points: torch.Tensor, batch_idx: torch.Tensor | None = None, mode: str = "cylindrical",
             grid_size=(480, 360, 32), pc_range=(0.0, -np.pi, -4.0, 50.0, np.pi, 2.0), out_of_range: str = "clamp",
             backend: str = "auto") -> VoxelizeResult:
    """Points [N, >=3] (x, y, z, ...) metres -> unique voxels with batch index, point->voxel index, counts.

    cylindrical: (rho, phi, z) with phi wrapped into [phi_min, phi_min + 2 pi) before binning. A bin is
    [lo + i * step, lo + (i + 1) * step); `clamp` pulls outside points into the border voxels, `drop` removes them.
    The output order is deterministic: sorted by (batch, i, j, k).
    """
    _check_points(points)
    if mode not in ("cylindrical", "cartesian"):
        raise ValueError(f"voxelize: mode must be 'cylindrical' or 'cartesian', got {mode!r}")
    if out_of_range not in ("clamp", "drop"):
        raise ValueError(f"voxelize: out_of_range must be 'clamp' or 'drop', got {out_of_range!r}")
    if batch_idx is None:
        batch_idx = torch.zeros(points.shape[0], dtype=torch.int64, device=points.device)
    grid_size = [int(g) for g in grid_size]
    pc_range = [float(r) for r in pc_range]
    backend = _pick_backend(backend, points)
    if backend == "torch":
        coords, p2v, counts = reference.voxelize_ref(points, batch_idx, mode, grid_size, pc_range, out_of_range)
        return VoxelizeResult(coords, p2v, counts)
    if backend == "cpu":
        keys_np = cpu_kernels.grid_keys_cpu(points[:, :3].detach().contiguous().numpy(),
                                            batch_idx.to(torch.int64).contiguous().numpy(), mode == "cylindrical",
                                            *grid_size, *pc_range, out_of_range == "clamp")
        uniq, inverse, counts = cpu_kernels.unique_inverse_cpu(keys_np)
        uniq, inverse, counts = torch.from_numpy(uniq), torch.from_numpy(inverse), torch.from_numpy(counts)
    else:
        keys = gpu_kernels.grid_keys_gpu(points, batch_idx, mode == "cylindrical", grid_size, pc_range,
                                         out_of_range == "clamp")
        valid = keys >= 0
        uniq, inv_valid, counts = torch.unique(keys[valid], sorted=True, return_inverse=True, return_counts=True)
        inverse = torch.full_like(keys, -1)
        inverse[valid] = inv_valid
    return VoxelizeResult(reference._decode(uniq, grid_size).to(points.device), inverse.to(points.device),
                          counts.to(points.device))


def label_vote(labels: torch.Tensor, point2voxel: torch.Tensor, num_voxels: int, num_classes: int = 2,
               ignore_index: int = 255, rule: str = "majority", backend: str = "auto") -> torch.Tensor:
    """Per-voxel label [V] int64 from per-point labels [N]: majority of non-ignored points (ties: smallest id), or
    with rule 'any_anomaly' 1 as soon as one point is 1; voxels with only ignored points get ignore_index."""
    if rule not in ("majority", "any_anomaly"):
        raise ValueError(f"label_vote: rule must be 'majority' or 'any_anomaly', got {rule!r}")
    valid = labels != ignore_index
    if valid.any() and (labels[valid].min() < 0 or labels[valid].max() >= num_classes):
        raise ValueError(f"label_vote: labels must be in [0, {num_classes}) or {ignore_index}")
    backend = _pick_backend(backend, labels)
    if backend == "torch":
        return reference.label_vote_ref(labels, point2voxel, num_voxels, num_classes, ignore_index, rule)
    if backend == "cpu":
        out = cpu_kernels.label_vote_cpu(labels.to(torch.int64).numpy(), point2voxel.to(torch.int64).numpy(),
                                         int(num_voxels), int(num_classes), int(ignore_index), rule == "any_anomaly")
        return torch.from_numpy(out)
    hist = gpu_kernels.label_hist_gpu(labels, point2voxel, num_voxels, num_classes, ignore_index)
    out = torch.argmax(hist, 1) if num_voxels else torch.zeros(0, dtype=torch.int64, device=labels.device)
    out = torch.where(hist.sum(1) > 0, out, torch.full_like(out, ignore_index))
    if rule == "any_anomaly":
        out = torch.where(hist[:, 1] > 0, torch.ones_like(out), out)
    return out


def eval_grid_scores(points: torch.Tensor, scores: torch.Tensor, rule: str = "nearest", voxel_size: float = 0.5,
                     grid_size=(1000, 1000, 64), offset=(250.0, 250.0, 16.0), z_shift: float = -1.8,
                     backend: str = "auto"):
    """Voxelize scored points on the AnoVox evaluation grid, one score per voxel by `rule` (nearest: the point
    nearest the voxel's lower corner, as the official benchmark; mean; median; max).
    -> (voxels [M, 3] int64 (ix, iy, iz) sorted by ix + 1000 iy + 10^6 iz, scores [M] float64)."""
    _check_points(points)
    if scores.shape[0] != points.shape[0]:
        raise ValueError(f"eval grid: {points.shape[0]} points but {scores.shape[0]} scores")
    if rule not in cpu_kernels.RULES:
        raise ValueError(f"eval grid: rule must be one of {sorted(cpu_kernels.RULES)}, got {rule!r}")
    backend = _pick_backend(backend, points)
    if backend == "cpu":
        vox, out = cpu_kernels.eval_grid_cpu(points[:, :3].detach().numpy(), scores.detach().numpy(), rule,
                                             float(voxel_size), [int(g) for g in grid_size],
                                             [float(o) for o in offset], float(z_shift))
        return torch.from_numpy(vox), torch.from_numpy(out)
    return reference.eval_grid_scores_ref(points, scores, rule, voxel_size, grid_size, offset, z_shift)


class _ScatterMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, index, num_out):
        if features.device.type == "cpu":
            out, arg = cpu_kernels.scatter_max_cpu(features.detach().contiguous().numpy(),
                                                   index.contiguous().numpy(), int(num_out))
            out, arg = torch.from_numpy(out), torch.from_numpy(arg)
        else:
            out, arg = _scatter_max_torch(features.detach(), index, num_out)
        ctx.save_for_backward(arg)
        ctx.num_points = features.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # each (voxel, channel) maximum came from exactly one point: a plain scatter, no accumulation, no masks
        # over all points (torch's generic scatter_reduce backward compares every point with its voxel's max)
        (arg,) = ctx.saved_tensors
        n, c = ctx.num_points, grad_out.shape[1]
        dummy = n * c                               # empty voxels write into one extra slot, dropped below
        channel = torch.arange(c, device=arg.device)
        flat = torch.where(arg >= 0, arg * c + channel, torch.full_like(arg, dummy))
        grad_in = torch.zeros(n * c + 1, dtype=grad_out.dtype, device=grad_out.device)
        grad_in.scatter_(0, flat.reshape(-1), grad_out.reshape(-1))
        return grad_in[:dummy].view(n, c), None, None


def _scatter_max_torch(features, index, num_out):
    n, c = features.shape
    out = torch.zeros((num_out, c), dtype=features.dtype, device=features.device)
    valid = index >= 0
    out = out.scatter_reduce(0, index[valid, None].expand(-1, c), features[valid], "amax", include_self=False)
    is_max = (features == out[index.clamp(min=0)]) & valid[:, None]
    point_ids = torch.arange(n, device=features.device)[:, None].expand(-1, c)
    big = torch.full_like(point_ids, n)
    cand = torch.where(is_max, point_ids, big)
    arg = torch.full((num_out, c), n, dtype=torch.int64, device=features.device)
    arg = arg.scatter_reduce(0, index.clamp(min=0)[:, None].expand(-1, c), cand, "amin", include_self=True)
    arg = torch.where(arg == n, torch.full_like(arg, -1), arg)
    return out, arg


def scatter_max(features: torch.Tensor, index: torch.Tensor, num_out: int) -> torch.Tensor:
    """Max over points of each voxel: features [N, C], index [N] (-1 ignored) -> [V, C]; empty voxels are 0.
    Backward routes each output gradient to the single point that held the maximum (first on ties)."""
    _check_index(index, features, num_out)
    return _ScatterMax.apply(features, index.to(torch.int64), int(num_out))


def _check_index(index: torch.Tensor, features: torch.Tensor, num_out: int) -> None:
    if index.shape[0] != features.shape[0]:
        raise ValueError(f"scatter: {features.shape[0]} feature rows but {index.shape[0]} indices")
    if index.numel() and int(index.max()) >= num_out:
        raise ValueError(f"scatter: index {int(index.max())} out of range for {num_out} outputs")


def scatter_mean(features: torch.Tensor, index: torch.Tensor, num_out: int) -> torch.Tensor:
    """Mean over points of each voxel: [N, C] -> [V, C] (autograd through index_add)."""
    _check_index(index, features, num_out)
    valid = index >= 0
    out = torch.zeros((num_out, features.shape[1]), dtype=features.dtype, device=features.device)
    out = out.index_add(0, index[valid], features[valid])
    counts = torch.bincount(index[valid], minlength=num_out).clamp(min=1).to(features.dtype)
    return out / counts[:, None]


def project_to_image(points_xyz: torch.Tensor, intrinsics: torch.Tensor, lidar_to_cam: torch.Tensor,
                     image_hw, aug_matrix: torch.Tensor | None = None, min_depth: float = 0.1):
    """Project points (augmented LiDAR frame, metres) into the image.

    Undoes the augmentation (aug_matrix [4, 4] maps original -> augmented), applies lidar_to_cam [4, 4] (to OpenCV
    camera axes) and intrinsics [3, 3]. -> uv [N, 2] float pixels, depth [N], valid [N] bool (in front of the
    camera by min_depth and inside the image). Elementwise torch: runs on any device.
    """
    dtype = torch.float64 if points_xyz.dtype == torch.float64 else torch.float32
    pts = points_xyz[:, :3].to(dtype)
    homo = torch.cat([pts, torch.ones_like(pts[:, :1])], 1)
    transform = lidar_to_cam.to(dtype=dtype, device=pts.device)
    if aug_matrix is not None:
        transform = transform @ torch.linalg.inv(aug_matrix.to(dtype=torch.float64, device=pts.device)).to(dtype)
    cam = homo @ transform.T
    depth = cam[:, 2]
    K = intrinsics.to(dtype=dtype, device=pts.device)
    z = depth.clamp(min=1e-6)
    u = K[0, 0] * cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * cam[:, 1] / z + K[1, 2]
    h, w = int(image_hw[0]), int(image_hw[1])
    valid = (depth > min_depth) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    return torch.stack([u, v], 1), depth, valid
