"""Voxel predictions around the scored points: the voxels of the evaluation grid that hold no LiDAR point but lie
near one get that point's score.

The AnoVox ground truth is voxelized from a separate, noise-free semantic LiDAR: on the study split a third of the
ground-truth voxels within 50 m (and a tenth of the anomalous ones) hold no point of the real, noisy LiDAR. A model that
predicts only the voxels its points fall in leaves them unpredicted: dropped by the official `intersect` join, scored 0
by the `zero` policy. With `EVAL_GRID.PRED_FILL_RADIUS` r > 0, every voxel whose centre lies within r of a scored point
and that holds none is predicted with the score of the nearest point. Occupied voxels keep their own score.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.spatial import cKDTree

from .voxel_eval import linear_key

__all__ = ["fill_around_points"]


def fill_around_points(points_xyz: np.ndarray, point_scores: np.ndarray, voxels: np.ndarray, scores: np.ndarray,
                       radius: float, voxel_size: float, grid_size, offset, z_shift: float):
    """-> (voxels [M', 3] int64, scores [M'] float64): `voxels`/`scores` plus the empty voxels within `radius` (m) of a
    point (sensor frame; `z_shift` applied as for the grid), each with its nearest point's score."""
    voxels = np.asarray(voxels, dtype=np.int64).reshape(-1, 3)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if radius <= 0 or len(voxels) == 0:
        return voxels, scores
    reach = int(math.ceil(radius / voxel_size))
    offsets = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)), dtype=np.int64)
    offsets = offsets[np.any(offsets != 0, axis=1)]
    size = np.asarray(grid_size, dtype=np.int64)
    cand = (voxels[:, None, :] + offsets[None]).reshape(-1, 3)
    cand = cand[np.all((cand >= 0) & (cand < size), axis=1)]
    cand_keys, first = np.unique(linear_key(cand), return_index=True)
    cand = cand[first]
    cand = cand[~np.isin(cand_keys, linear_key(voxels))]
    if len(cand) == 0:
        return voxels, scores
    pts = np.asarray(points_xyz, dtype=np.float64)[:, :3] + np.array([0.0, 0.0, z_shift])
    centres = (cand + 0.5) * voxel_size - np.asarray(offset, dtype=np.float64)
    dist, nn = cKDTree(pts).query(centres, k=1, distance_upper_bound=radius, workers=1)
    near = np.isfinite(dist)
    filled = np.asarray(point_scores, dtype=np.float64).reshape(-1)[nn[near]]
    return np.concatenate([voxels, cand[near]]), np.concatenate([scores, filled])
