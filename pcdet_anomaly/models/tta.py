"""Test-time augmentation: score every point under several rigid views of its frame and average.

Each view is a 4x4 matrix (original LiDAR frame -> view frame) from DATA_CONFIG.TEST_AUGMENTATION: the product of
FLIP_Y (no flip, mirror y -> -y), ROTATIONS (radians about z) and SCALES, the same family of transforms the
training augmentation draws from (datasets/augmentation.py). For each view the batch's points are transformed and
re-voxelized on their device; the view's matrix is composed into `aug_matrix`, so the fusion projects every voxel
into the camera through its inverse and the image features stay those of the real camera. The points keep their
order, so the per-point scores of the views line up and are reduced (REDUCE mean | max); the voxel scores of the
first view's grid (the identity view when it is listed first, as `views_from_cfg` does) are recomputed from the
reduced point scores. The returned batch is the first view's, with identity `aug_matrix` when that view is the
identity.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

import cuda_ops

from ..datasets.augmentation import augmentation_matrix

__all__ = ["TestTimeAugmentation", "views_from_cfg"]


def views_from_cfg(tta_cfg) -> list[np.ndarray]:
    """The views, identity first: every (flip, rotation, scale) of the config, duplicates removed."""
    flips = [bool(f) for f in tta_cfg.FLIP_Y]
    rotations = [float(r) for r in tta_cfg.ROTATIONS]
    scales = [float(s) for s in tta_cfg.SCALES]
    if not flips or not rotations or not scales:
        raise ValueError("DATA_CONFIG.TEST_AUGMENTATION: FLIP_Y, ROTATIONS and SCALES each need at least one value")
    if any(s <= 0 for s in scales):
        raise ValueError(f"DATA_CONFIG.TEST_AUGMENTATION.SCALES must be positive, got {scales}")
    views = [np.eye(4)]
    for flip, angle, scale in itertools.product(flips, rotations, scales):
        m = augmentation_matrix(flip, angle, scale)           # composed as the training augmentation's
        if not any(np.allclose(m, v) for v in views):
            views.append(m)
    return views


class TestTimeAugmentation:
    """Callable like the model in inference: `tta(batch) -> batch_dict` with point_scores and voxel_scores reduced
    over the views. `model` must be in eval mode; `voxel_cfg` is DATA_CONFIG.VOXELIZE."""

    __test__ = False        # not a pytest class, despite its name

    def __init__(self, model, views: list[np.ndarray], voxel_cfg, reduce: str = "mean"):
        if reduce not in ("mean", "max"):
            raise ValueError(f"DATA_CONFIG.TEST_AUGMENTATION.REDUCE must be mean or max, got {reduce!r}")
        if not views:
            raise ValueError("TestTimeAugmentation needs at least one view")
        self.model, self.views, self.voxel_cfg, self.reduce = model, views, voxel_cfg, reduce

    def _view(self, batch: dict, matrix: np.ndarray) -> dict:
        if np.allclose(matrix, np.eye(4)):
            return dict(batch)
        points = batch["points"]
        m = torch.as_tensor(matrix, dtype=torch.float64, device=points.device)
        xyz = points[:, 1:4].double() @ m[:3, :3].T + m[:3, 3]
        moved = points.clone()
        moved[:, 1:4] = xyz.to(points.dtype)
        v = self.voxel_cfg
        vox = cuda_ops.voxelize(moved[:, 1:], moved[:, 0].long(), v.TYPE, v.GRID_SIZE, v.RANGE, v.OUT_OF_RANGE)
        view = {k: val for k, val in batch.items() if k not in ("voxel_labels", "voxel_semantic")}
        view.update(points=moved, voxel_coords=vox.coords.to(points.device),
                    point2voxel=vox.point2voxel.to(points.device),
                    aug_matrix=(m @ batch["aug_matrix"].to(m)).to(batch["aug_matrix"].dtype))  # after any earlier
        return view

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        first, scores = None, []
        for matrix in self.views:
            out = self.model(self._view(batch, matrix))
            scores.append(out["point_scores"].float())
            if first is None:
                first = out
        stacked = torch.stack(scores)
        point_scores = stacked.mean(0) if self.reduce == "mean" else stacked.amax(0)
        first["points"] = batch["points"]
        first["point_scores"] = point_scores
        if len(self.views) > 1:     # the first view's voxels: the reduction of their points' reduced scores
            p2v = first["point2voxel"]
            keep = p2v >= 0
            voxel = torch.full((len(first["voxel_coords"]),), float("-inf") if self.reduce == "max" else 0.0,
                               dtype=point_scores.dtype, device=point_scores.device)
            voxel = voxel.scatter_reduce(0, p2v[keep], point_scores[keep],
                                         "mean" if self.reduce == "mean" else "amax", include_self=False)
            first["voxel_scores"] = voxel.to(out["voxel_scores"].dtype)
        first["tta_views"] = len(self.views)
        return first
