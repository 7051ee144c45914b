"""numba CPU kernels. Each mirrors a function of reference.py and returns identical results."""
from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["grid_keys_cpu", "unique_inverse_cpu", "scatter_max_cpu", "label_vote_cpu", "eval_grid_cpu"]

TWO_PI = 2.0 * math.pi


@nb.njit(parallel=True, cache=True)
def grid_keys_cpu(points, batch_idx, cylindrical, g0, g1, g2, lo0, lo1, lo2, hi0, hi1, hi2, clamp):
    """points [N, >=3] float; -> key [N] int64 (-1 where dropped)."""
    n = points.shape[0]
    keys = np.empty(n, dtype=np.int64)
    s0 = g0 / (hi0 - lo0)
    s1 = g1 / (hi1 - lo1)
    s2 = g2 / (hi2 - lo2)
    for p in nb.prange(n):
        x = np.float64(points[p, 0])
        y = np.float64(points[p, 1])
        z = np.float64(points[p, 2])
        if cylindrical:
            c0 = math.sqrt(x * x + y * y)
            phi = math.atan2(y, x) - lo1
            phi = phi - TWO_PI * math.floor(phi / TWO_PI)
            if phi >= TWO_PI:     # python's remainder semantics, as torch.remainder
                phi -= TWO_PI
            c1 = lo1 + phi
            c2 = z
        else:
            c0, c1, c2 = x, y, z
        i = np.int64(math.floor((c0 - lo0) * s0))
        j = np.int64(math.floor((c1 - lo1) * s1))
        k = np.int64(math.floor((c2 - lo2) * s2))
        if clamp:
            i = min(max(i, 0), g0 - 1)
            j = min(max(j, 0), g1 - 1)
            k = min(max(k, 0), g2 - 1)
        elif i < 0 or i >= g0 or j < 0 or j >= g1 or k < 0 or k >= g2:
            keys[p] = -1
            continue
        keys[p] = ((np.int64(batch_idx[p]) * g0 + i) * g1 + j) * g2 + k
    return keys


@nb.njit(cache=True)
def _radix_unique(keys):
    """Stable LSD radix sort (12-bit digits) of the non-negative keys, then run-length encoding.
    -> (sorted unique keys, inverse [N] with -1 for negative keys, counts)."""
    n = keys.shape[0]
    m = 0
    max_key = 0
    for p in range(n):
        if keys[p] >= 0:
            m += 1
            if keys[p] > max_key:
                max_key = keys[p]
    order = np.empty(m, dtype=np.int64)
    sorted_keys = np.empty(m, dtype=np.int64)
    q = 0
    for p in range(n):
        if keys[p] >= 0:
            order[q] = p
            sorted_keys[q] = keys[p]
            q += 1
    tmp_order = np.empty(m, dtype=np.int64)
    tmp_keys = np.empty(m, dtype=np.int64)
    shift = 0
    while (max_key >> shift) > 0:
        count = np.zeros(4097, dtype=np.int64)
        for i in range(m):
            count[((sorted_keys[i] >> shift) & 4095) + 1] += 1
        for d in range(4096):
            count[d + 1] += count[d]
        for i in range(m):
            d = (sorted_keys[i] >> shift) & 4095
            pos = count[d]
            tmp_keys[pos] = sorted_keys[i]
            tmp_order[pos] = order[i]
            count[d] = pos + 1
        sorted_keys, tmp_keys = tmp_keys, sorted_keys
        order, tmp_order = tmp_order, order
        shift += 12
    inverse = np.full(n, -1, dtype=np.int64)
    uniq = np.empty(m, dtype=np.int64)
    counts = np.zeros(m, dtype=np.int64)
    v = -1
    for i in range(m):
        if i == 0 or sorted_keys[i] != sorted_keys[i - 1]:
            v += 1
            uniq[v] = sorted_keys[i]
        counts[v] += 1
        inverse[order[i]] = v
    return uniq[:v + 1], inverse, counts[:v + 1]


def unique_inverse_cpu(keys: np.ndarray):
    """-> (sorted unique keys, inverse [N] (-1 kept), counts) ; equal to torch.unique(sorted=True)."""
    return _radix_unique(keys)


@nb.njit(cache=True)
def scatter_max_cpu(features, index, num_out):
    """features [N, C] float, index [N] -> (out [V, C], argmax [V, C] int64 (first max; -1 if empty))."""
    n, c = features.shape
    out = np.zeros((num_out, c), dtype=features.dtype)
    arg = np.full((num_out, c), -1, dtype=np.int64)
    for p in range(n):
        v = index[p]
        if v < 0:
            continue
        for ch in range(c):
            f = features[p, ch]
            a = arg[v, ch]
            if a < 0 or f > out[v, ch]:
                out[v, ch] = f
                arg[v, ch] = p
    return out, arg


@nb.njit(cache=True)
def label_vote_cpu(labels, point2voxel, num_voxels, num_classes, ignore_index, any_anomaly):
    hist = np.zeros((num_voxels, num_classes), dtype=np.int64)
    for p in range(labels.shape[0]):
        lab = labels[p]
        v = point2voxel[p]
        if lab == ignore_index or v < 0:
            continue
        hist[v, lab] += 1
    out = np.full(num_voxels, ignore_index, dtype=np.int64)
    for v in range(num_voxels):
        best, best_count = -1, 0
        for cls in range(num_classes):
            if hist[v, cls] > best_count:
                best, best_count = cls, hist[v, cls]
        if best >= 0:
            out[v] = best
            if any_anomaly and num_classes > 1 and hist[v, 1] > 0:
                out[v] = 1
    return out


@nb.njit(cache=True)
def _eval_keys(points, voxel_size, gx, gy, gz, ox, oy, oz, z_shift):
    n = points.shape[0]
    keys = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    for p in range(n):
        x = np.float64(points[p, 0])
        y = np.float64(points[p, 1])
        z = np.float64(points[p, 2]) + z_shift
        ix = np.int64(math.floor((x + ox) / voxel_size))
        iy = np.int64(math.floor((y + oy) / voxel_size))
        iz = np.int64(math.floor((z + oz) / voxel_size))
        if ix < 0 or ix >= gx or iy < 0 or iy >= gy or iz < 0 or iz >= gz:
            keys[p] = -1
            dist[p] = 0.0
            continue
        keys[p] = ix + 1000 * iy + 1000000 * iz
        cx = ix * voxel_size - ox
        cy = iy * voxel_size - oy
        cz = iz * voxel_size - oz
        dist[p] = math.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
    return keys, dist


@nb.njit(cache=True)
def _reduce_sorted(keys_sorted, scores_sorted, dist_sorted, rule):
    """Runs of equal keys (already sorted by key, then by the rule's secondary key) -> one score each."""
    n = keys_sorted.shape[0]
    out_keys = np.empty(n, dtype=np.int64)
    out = np.empty(n, dtype=np.float64)
    m = 0
    start = 0
    while start < n:
        end = start
        while end < n and keys_sorted[end] == keys_sorted[start]:
            end += 1
        cnt = end - start
        if rule == 0:          # nearest: first after sorting by distance
            val = scores_sorted[start]
        elif rule == 1:        # mean
            acc = 0.0
            for q in range(start, end):
                acc += scores_sorted[q]
            val = acc / cnt
        elif rule == 2:        # median (sorted by score)
            val = (scores_sorted[start + (cnt - 1) // 2] + scores_sorted[start + cnt // 2]) / 2.0
        else:                  # max
            val = scores_sorted[start]
            for q in range(start, end):
                if scores_sorted[q] > val:
                    val = scores_sorted[q]
        out_keys[m] = keys_sorted[start]
        out[m] = val
        m += 1
        start = end
    return out_keys[:m], out[:m]


RULES = {"nearest": 0, "mean": 1, "median": 2, "max": 3}


def eval_grid_cpu(points, scores, rule, voxel_size, grid_size, offset, z_shift):
    keys, dist = _eval_keys(points, voxel_size, grid_size[0], grid_size[1], grid_size[2], offset[0], offset[1],
                            offset[2], z_shift)
    keep = keys >= 0
    keys, dist, scores = keys[keep], dist[keep], scores[keep].astype(np.float64)
    secondary = dist if rule == "nearest" else scores
    order = np.lexsort((secondary, keys))
    uniq, out = _reduce_sorted(keys[order], scores[order], dist[order], RULES[rule])
    voxels = np.stack([uniq % 1000, (uniq // 1000) % 1000, uniq // 1_000_000], 1)
    return voxels, out
