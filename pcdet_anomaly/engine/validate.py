"""Inference over a split: per-frame voxel predictions on the AnoVox evaluation grid, metrics, one frame to draw."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import cuda_ops

from ..datasets import batch_to_device
from ..evaluation import VoxelEvaluator, frame_ground_truth
from ..evaluation.fill import fill_around_points
from ..evaluation.point_eval import PointEvaluator

__all__ = ["run_inference", "merge_score_stats"]


@torch.no_grad()
def run_inference(model, loader, dataset, data_cfg, device, pred_dir: Path | None = None, max_frames: int = -1,
                  score_rule: str = "nearest", progress: bool = True, desc: str = "eval", tta: bool = False):
    """-> (VoxelEvaluator or PointEvaluator, vis_sample dict or None, score statistics dict).

    Every point of every frame is scored (the dataset applies MAX_POINTS in training only). AnoVox (the dataset's
    eval_protocol 'voxel'): every ground-truth voxel within EVAL_GRID.MAX_RANGE is evaluated under both policies,
    with coverage (see VoxelEvaluator). SemanticKITTI / STU ('point'): every point of every scan, STU protocol (see
    PointEvaluator); with `pred_dir` also the object level. `tta`: score with DATA_CONFIG.TEST_AUGMENTATION's views
    (models/tta.py)."""
    model.eval()
    if tta:
        from ..models.tta import TestTimeAugmentation, views_from_cfg
        t = data_cfg.TEST_AUGMENTATION
        model = TestTimeAugmentation(model, views_from_cfg(t), data_cfg.VOXELIZE, t.REDUCE)
    if getattr(dataset, "training", False):
        raise RuntimeError("evaluation needs a dataset built with training=False (no subsampling, no augmentation)")
    eg = data_cfg.EVAL_GRID
    point_protocol = getattr(dataset, "eval_protocol", "voxel") == "point"
    if point_protocol:
        pe = data_cfg.POINT_EVAL
        evaluator = PointEvaluator(data_cfg.LABELS.ANOMALY_IDS, data_cfg.LABELS.IGNORE_IDS, pe.MIN_RANGE,
                                   pe.MAX_RANGE, pe.MIN_ANOMALY_POINTS, pe.OBJECT_THRESHOLD if pred_dir else None,
                                   pe.OBJECT_EPS, pe.OBJECT_MIN_POINTS)
    else:
        evaluator = VoxelEvaluator(policy=eg.POLICY, max_range=eg.MAX_RANGE, eval_grid=eg)
    vis = None
    n, mean, m2 = 0, 0.0, 0.0
    frames_done = 0
    bad_frames = []
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)
    for batch in bar:
        bad_frames += batch.get("bad_frames", [])       # dropped, not scored (and never scored twice)
        if batch["batch_size"] == 0:
            continue
        batch = batch_to_device(batch, device)
        out = model(batch)
        points = out["points"].detach().float().cpu()
        scores = out["point_scores"].detach().float().cpu()
        voxel_scores = out["voxel_scores"].detach().double().cpu()
        if len(voxel_scores):   # running variance of voxel scores (Chan's parallel update)
            bn, bmean = len(voxel_scores), float(voxel_scores.mean())
            bm2 = float(((voxel_scores - bmean) ** 2).sum())
            delta = bmean - mean
            mean += delta * bn / (n + bn)
            m2 += bm2 + delta ** 2 * n * bn / (n + bn)
            n += bn
        for b in range(out["batch_size"]):
            scene, frame = out["scene_id"][b], out["frame_id"][b]
            reader = dataset.readers[scene]
            mask = points[:, 0] == b
            xyz = points[mask, 1:4].double()
            if not torch.allclose(out["aug_matrix"][b].cpu(), torch.eye(4, dtype=torch.float64)):
                raise RuntimeError("evaluation needs un-augmented points: build the loader with training=False")
            if point_protocol:
                score_points(evaluator, dataset, scene, frame, scores[mask].numpy(), pred_dir)
            else:
                score_voxels(evaluator, dataset, reader, scene, frame, xyz, scores[mask], eg, score_rule, pred_dir)
            point_labels = out["point_labels"][mask.to(out["point_labels"].device)].cpu().numpy() \
                if "point_labels" in out else None
            if vis is None or (vis["labels"] is not None and not (vis["labels"] == 1).any()
                               and point_labels is not None and (point_labels == 1).any()):
                vis = {"scene": scene, "frame": frame, "xyz": xyz.numpy(), "scores": scores[mask].numpy(),
                       "labels": point_labels, "calib": {k: (v.cpu() if torch.is_tensor(v) else v)
                                                         for k, v in out["calib"][b].items()}}
            frames_done += 1
        if 0 < max_frames <= frames_done:
            break
    if point_protocol:
        evaluator.coverage["bad_frames"] += len(bad_frames)
    else:
        evaluator.stats["bad_frames"] += len(bad_frames)
    std = float(np.sqrt(m2 / max(n - 1, 1))) if n > 1 else 0.0
    return evaluator, vis, {"voxel_score_mean": mean, "voxel_score_std": std, "voxels": n, "m2": m2,
                            "bad_frames": [{k: v for k, v in b.items()} for b in bad_frames]}


def score_points(evaluator: PointEvaluator, dataset, scene, frame, scores: np.ndarray, pred_dir) -> None:
    """STU protocol: a score for every point of the scan; a point the model did not see (outside
    POINT_FILTER_RANGE) takes the score of the nearest point it scored, and the coverage counts them. Predictions as
    <pred>/<seq>/<frame>.txt, one score per line."""
    points, semantic, instance = dataset.read_frame(scene, frame)
    keep = dataset.filter_mask(points)
    if int(keep.sum()) != len(scores):
        raise RuntimeError(f"{scene} frame {frame}: the model scored {len(scores)} points, the scan has "
                           f"{int(keep.sum())} inside POINT_FILTER_RANGE (evaluation must not subsample)")
    full = np.zeros(len(points), np.float32)
    full[keep] = scores
    if not keep.all():
        from scipy.spatial import cKDTree
        _, nearest = cKDTree(points[keep, :3]).query(points[~keep, :3], k=1)
        full[~keep] = scores[nearest]
    reader = dataset.readers[scene]
    evaluator.add(scene, frame, points[:, :3], semantic, full, scored=keep, source=str(reader.scan_path(frame)),
                  instance=instance)
    if pred_dir is not None:
        folder = Path(pred_dir) / scene
        folder.mkdir(parents=True, exist_ok=True)
        np.savetxt(folder / f"{reader.stem(frame)}.txt", full, fmt="%.9g")   # float32 round-trips exactly


def score_voxels(evaluator: VoxelEvaluator, dataset, reader, scene, frame, xyz, scores, eg, score_rule,
                 pred_dir) -> None:
    """AnoVox protocol: point scores -> the 0.5 m evaluation grid (and the fill), against the ground-truth voxels;
    predictions as <pred>/<Scenario>/VOXEL_PRED_<frame>.npy."""
    z_shift = dataset.z_shift(scene)
    vox, vs = cuda_ops.eval_grid_scores(xyz, scores.double(), score_rule, eg.VOXEL_SIZE, eg.GRID_SIZE, eg.OFFSET,
                                        z_shift)
    vox, vs = vox.numpy(), vs.numpy()
    if eg.PRED_FILL_RADIUS > 0:
        vox, vs = fill_around_points(xyz.numpy(), scores.double().numpy(), vox, vs, eg.PRED_FILL_RADIUS,
                                     eg.VOXEL_SIZE, eg.GRID_SIZE, eg.OFFSET, z_shift)
    gt_vox, gt_ids, gt_lab = frame_ground_truth(reader, frame, dataset.targets, "voxel_grid", eg.MAX_RANGE, eg)
    evaluator.add(scene, frame, gt_vox, gt_ids, gt_lab, vox, vs, reader.anomaly_rows(frame),
                  source=f"{scene} frame {frame}", z_shift=z_shift)
    if pred_dir is not None:
        folder = Path(pred_dir) / scene
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"VOXEL_PRED_{frame}.npy", np.concatenate([vox, vs[:, None]], 1).astype(np.float64))


def merge_score_stats(parts: list[dict]) -> dict:
    """Chan's parallel update over the ranks' score statistics."""
    n, mean, m2, bad = 0, 0.0, 0.0, []
    for p in parts:
        bn = p["voxels"]
        bad += p.get("bad_frames", [])
        if bn == 0:
            continue
        delta = p["voxel_score_mean"] - mean
        mean += delta * bn / (n + bn)
        m2 += p["m2"] + delta ** 2 * n * bn / (n + bn)
        n += bn
    std = float(np.sqrt(m2 / max(n - 1, 1))) if n > 1 else 0.0
    return {"voxel_score_mean": mean, "voxel_score_std": std, "voxels": n, "m2": m2, "bad_frames": bad}
