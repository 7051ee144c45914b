"""Geometric augmentation that records the 4x4 matrix it applied (original LiDAR frame -> augmented frame), so the
projection into the camera can undo it. Points and their labels move together; labels never change."""
from __future__ import annotations

import numpy as np

__all__ = ["augmentation_matrix", "random_augmentation_matrix", "apply_matrix", "point_dropout"]


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def augmentation_matrix(flip_y: bool, angle: float, scale: float, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    """M = translate @ scale @ rotate_z(angle) @ flip (flip: y -> -y, a mirror about the x-z plane), 4x4."""
    flip = np.eye(4)
    if flip_y:
        flip[1, 1] = -1.0
    translate = np.eye(4)
    translate[:3, 3] = translation
    return translate @ np.diag([scale, scale, scale, 1.0]) @ _rot_z(angle) @ flip


def random_augmentation_matrix(rng: np.random.Generator, flip_y_prob=0.5, rot_range=(-0.39, 0.39),
                               scale_range=(0.95, 1.05), translation_std=(0.2, 0.2, 0.1)) -> np.ndarray:
    """augmentation_matrix with a random flip, rotation, scale and translation (drawn in that order)."""
    flip = rng.random() < flip_y_prob
    angle = rng.uniform(*rot_range)
    scale = rng.uniform(*scale_range)
    return augmentation_matrix(flip, angle, scale, rng.normal(0.0, translation_std))


def apply_matrix(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """points [N, >=3]; returns a copy whose first three columns are transformed by the 4x4 matrix."""
    out = points.copy()
    out[:, :3] = points[:, :3] @ matrix[:3, :3].T + matrix[:3, 3]
    return out


def point_dropout(rng: np.random.Generator, num_points: int, rate: float) -> np.ndarray:
    """Boolean keep-mask dropping a `rate` fraction of points (at least one point is kept)."""
    if rate <= 0 or num_points == 0:
        return np.ones(num_points, dtype=bool)
    keep = rng.random(num_points) >= rate
    if not keep.any():
        keep[rng.integers(num_points)] = True
    return keep
