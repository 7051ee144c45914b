"""numba.cuda kernels, exchanged with torch through __cuda_array_interface__ (zero copy).

The per-point work (grid index, key) runs in these kernels; sorting/unique/scatter use torch's CUDA primitives,
which are already optimal. In CI the kernels run under NUMBA_ENABLE_CUDASIM=1 on host arrays.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

try:  # numba.cuda imports without a GPU; the kernels only compile (or simulate) when first launched
    from numba import cuda
except ImportError:  # pragma: no cover
    cuda = None

__all__ = ["cuda_available", "grid_keys_gpu", "label_hist_gpu"]

_KERNELS = {}


def cuda_available() -> bool:
    if cuda is None or simulator_enabled():
        return False
    try:
        return bool(cuda.is_available())
    except Exception:      # no driver
        return False


def simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def _kernels():
    if _KERNELS:
        return _KERNELS

    @cuda.jit
    def grid_keys_kernel(points, batch_idx, cylindrical, g0, g1, g2, lo0, lo1, lo2, s0, s1, s2, clamp, keys):
        p = cuda.grid(1)
        if p >= points.shape[0]:
            return
        x = float(points[p, 0])
        y = float(points[p, 1])
        z = float(points[p, 2])
        if cylindrical:
            c0 = math.sqrt(x * x + y * y)
            two_pi = 2.0 * math.pi
            phi = math.atan2(y, x) - lo1
            phi = phi - two_pi * math.floor(phi / two_pi)
            if phi >= two_pi:
                phi -= two_pi
            c1 = lo1 + phi
            c2 = z
        else:
            c0 = x
            c1 = y
            c2 = z
        i = int(math.floor((c0 - lo0) * s0))
        j = int(math.floor((c1 - lo1) * s1))
        k = int(math.floor((c2 - lo2) * s2))
        if clamp:
            i = min(max(i, 0), g0 - 1)
            j = min(max(j, 0), g1 - 1)
            k = min(max(k, 0), g2 - 1)
        elif i < 0 or i >= g0 or j < 0 or j >= g1 or k < 0 or k >= g2:
            keys[p] = -1
            return
        keys[p] = ((int(batch_idx[p]) * g0 + i) * g1 + j) * g2 + k

    @cuda.jit
    def label_hist_kernel(labels, point2voxel, num_classes, ignore_index, hist):
        p = cuda.grid(1)
        if p >= labels.shape[0]:
            return
        lab = labels[p]
        v = point2voxel[p]
        if lab == ignore_index or v < 0:
            return
        cuda.atomic.add(hist, (v, lab), 1)

    _KERNELS["grid_keys"] = grid_keys_kernel
    _KERNELS["label_hist"] = label_hist_kernel
    return _KERNELS


def _as_device_array(tensor: torch.Tensor):
    """A numba view of a torch tensor: device array on CUDA, plain numpy under the simulator."""
    if tensor.is_cuda:
        return cuda.as_cuda_array(tensor.contiguous())
    return tensor.contiguous().numpy()


def _launch(kernel, n, *args):
    threads = 256
    blocks = max(1, math.ceil(n / threads))
    kernel[blocks, threads](*args)


def grid_keys_gpu(points: torch.Tensor, batch_idx: torch.Tensor, cylindrical: bool, grid_size, pc_range,
                  clamp: bool) -> torch.Tensor:
    n = points.shape[0]
    keys = torch.empty(n, dtype=torch.int64, device=points.device)
    if n == 0:
        return keys
    lo, hi = pc_range[:3], pc_range[3:]
    scale = [float(g) / (float(h) - float(l)) for g, l, h in zip(grid_size, lo, hi)]
    _launch(_kernels()["grid_keys"], n, _as_device_array(points[:, :3].to(torch.float64)),
            _as_device_array(batch_idx.to(torch.int64)), bool(cylindrical), int(grid_size[0]), int(grid_size[1]),
            int(grid_size[2]), float(lo[0]), float(lo[1]), float(lo[2]), scale[0], scale[1], scale[2], bool(clamp),
            _as_device_array(keys))
    return keys


def label_hist_gpu(labels: torch.Tensor, point2voxel: torch.Tensor, num_voxels: int, num_classes: int,
                   ignore_index: int) -> torch.Tensor:
    hist = torch.zeros((num_voxels, num_classes), dtype=torch.int64, device=labels.device)
    if labels.numel() == 0 or num_voxels == 0:
        return hist
    _launch(_kernels()["label_hist"], labels.numel(), _as_device_array(labels.to(torch.int64)),
            _as_device_array(point2voxel.to(torch.int64)), int(num_classes), int(ignore_index),
            _as_device_array(hist))
    return hist
