"""collate_batch and the batch_dict contract.

batch_dict (what every model stage reads and writes; N = points in the batch, V = voxels in the batch):
    points          [N, 1 + 4] float32   batch index, x, y, z, intensity (augmented LiDAR frame, metres)
    voxel_coords    [V, 1 + 3] int32     batch index, grid index (rho, phi, z bins for the cylindrical grid)
    point2voxel     [N] int64            row of voxel_coords holding each point (offsets added per sample)
    point_labels    [N] int64            1 anomaly, 0 normal, IGNORE_INDEX unknown
    voxel_labels    [V] int64            same, by the configured vote
    point_semantic  [N] int64, voxel_semantic [V] int64   (semantic class or IGNORE_INDEX; when enabled)
    images          [B, 3, H, W] float32 normalised RGB (absent when DATA_CONFIG.IMAGE.ENABLED is false)
    image_semantic  [B, H/s, W/s] int64  2D class per pixel of the stride-s features (training with
                    IMAGE.AUX_SEMANTIC; IGNORE_INDEX where unknown)
    calib           list of B dicts: intrinsics [3, 3], lidar_to_cam [4, 4], image_hw (H, W) - all torch
    aug_matrix      [B, 4, 4] float64    original LiDAR frame -> augmented frame
    frame_id        list of B ints;  scene_id  list of B str;  batch_size  int (good frames only)
    bad_frames      list of {bad_frame, error, scene_id, frame_id}: frames dropped under BAD_FRAME_POLICY skip
                    (a batch may hold none of its frames: batch_size 0 and only this key besides)
Models add: voxel_features [V, C] (VFE), voxel_logits [V], voxel_scores [V], point_scores [N], ...
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["collate_batch", "batch_to_device"]


def collate_batch(samples: list[dict]) -> dict:
    bad = [s for s in samples if s is not None and "bad_frame" in s]
    samples = [s for s in samples if s is not None and "bad_frame" not in s]
    out: dict = {"batch_size": len(samples), "bad_frames": bad}
    if not samples:
        return out
    points, coords, p2v, extra = [], [], [], {}
    voxel_offset = 0
    for b, s in enumerate(samples):
        n = len(s["points"])
        points.append(np.concatenate([np.full((n, 1), b, np.float32), s["points"].astype(np.float32)], 1))
        v = len(s["voxel_coords"])
        coords.append(np.concatenate([np.full((v, 1), b, np.int32), s["voxel_coords"].astype(np.int32)], 1))
        p2v.append(np.where(s["point2voxel"] >= 0, s["point2voxel"] + voxel_offset, -1))
        voxel_offset += v
        for key in ("point_labels", "voxel_labels", "point_semantic", "voxel_semantic"):
            if key in s:
                extra.setdefault(key, []).append(s[key])
    out["points"] = torch.from_numpy(np.concatenate(points))
    out["voxel_coords"] = torch.from_numpy(np.concatenate(coords))
    out["point2voxel"] = torch.from_numpy(np.concatenate(p2v).astype(np.int64))
    for key, parts in extra.items():
        out[key] = torch.from_numpy(np.concatenate(parts).astype(np.int64))
    if "image" in samples[0]:
        out["images"] = torch.from_numpy(np.stack([s["image"] for s in samples]))
    if all("image_semantic" in s for s in samples):
        out["image_semantic"] = torch.from_numpy(np.stack([s["image_semantic"] for s in samples]))
    out["calib"] = [{"intrinsics": torch.from_numpy(s["intrinsics"]), "lidar_to_cam": torch.from_numpy(
        s["lidar_to_cam"]), "image_hw": tuple(s["image_hw"])} for s in samples]
    out["aug_matrix"] = torch.from_numpy(np.stack([s["aug_matrix"] for s in samples]))
    out["frame_id"] = [int(s["frame_id"]) for s in samples]
    out["scene_id"] = [str(s["scene_id"]) for s in samples]
    return out


def batch_to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
        elif key == "calib":
            out[key] = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in c.items()}
                        for c in value]
        else:
            out[key] = value
    return out
