"""Voxel matching (sort-merge on int64 linear keys) and the per-scene / pooled evaluator."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .metrics import StreamingHistogram, anovox_threshold_metrics, ranking_metrics

__all__ = ["linear_key", "match_voxels", "VoxelEvaluator", "SIZE_BINS"]

SIZE_BINS = ((0.0, 0.5, "small (<0.5 m)"), (0.5, 1.5, "medium (0.5-1.5 m)"), (1.5, math.inf, "large (>=1.5 m)"))


def linear_key(voxels: np.ndarray) -> np.ndarray:
    """ix + 1000 iy + 10^6 iz in int64 (uint16 input would overflow)."""
    v = np.asarray(voxels).astype(np.int64)
    return v[:, 0] + 1000 * v[:, 1] + 1_000_000 * v[:, 2]


def match_voxels(pred_voxels, pred_scores, gt_voxels, gt_labels, policy: str = "intersect", source: str = "pred"):
    """Join predictions and ground truth on the linear key.

    policy 'intersect' (AnoVox): only voxels in both; 'zero': ground-truth voxels without a prediction score 0.
    -> (labels [K'], scores [K'], stats {gt_without_pred, pred_without_gt}).
    """
    if policy not in ("intersect", "zero"):
        raise ValueError(f"policy must be 'intersect' or 'zero', got {policy!r}")
    pk = linear_key(pred_voxels)
    gk = linear_key(gt_voxels)
    p_order = np.argsort(pk, kind="stable")
    pk_sorted = pk[p_order]
    if len(pk_sorted) > 1 and (pk_sorted[1:] == pk_sorted[:-1]).any():
        dup = int(pk_sorted[1:][pk_sorted[1:] == pk_sorted[:-1]][0])
        raise ValueError(f"{source}: duplicate predicted voxel {dup % 1000, dup // 1000 % 1000, dup // 1_000_000}")
    pos = np.searchsorted(pk_sorted, gk)
    pos_c = np.minimum(pos, max(len(pk_sorted) - 1, 0))
    found = (pos < len(pk_sorted)) & (pk_sorted[pos_c] == gk) if len(pk_sorted) else np.zeros(len(gk), bool)
    scores_sorted = np.asarray(pred_scores, dtype=np.float64)[p_order]
    stats = {"gt_without_pred": int((~found).sum()), "pred_without_gt": int(len(pk) - found.sum())}
    if policy == "intersect":
        return np.asarray(gt_labels)[found], scores_sorted[pos_c[found]], stats
    scores = np.zeros(len(gk), dtype=np.float64)
    scores[found] = scores_sorted[pos_c[found]]
    return np.asarray(gt_labels), scores, stats


@dataclass
class _Pool:
    labels: list = field(default_factory=list)
    scores: list = field(default_factory=list)

    def add(self, labels, scores):
        self.labels.append(np.asarray(labels, dtype=np.int8))
        self.scores.append(np.asarray(scores, dtype=np.float64))

    def arrays(self):
        if not self.labels:
            return np.zeros(0, np.int8), np.zeros(0)
        return np.concatenate(self.labels), np.concatenate(self.scores)


class VoxelEvaluator:
    """Accumulates matched voxels per frame; `summary()` gives pooled (all frames, anomaly frames, by anomaly size
    and type) and per-scene metrics. `streaming=True` keeps histograms instead of every voxel."""

    def __init__(self, protocol: str = "default", streaming: bool = False, bins: int = 100_000):
        self.protocol = protocol
        self.streaming = streaming
        self.bins = bins
        self.groups: dict = defaultdict(_Pool) if not streaming else defaultdict(lambda: StreamingHistogram(bins))
        self.frames = 0
        self.stats = defaultdict(int)
        self.score_range_warned = False

    def add_frame(self, scene: str, frame: int, labels: np.ndarray, scores: np.ndarray, anomaly_info=None,
                  match_stats=None) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if np.isnan(scores).any():
            raise ValueError(f"{scene} frame {frame}: NaN scores")
        self.frames += 1
        for key, value in (match_stats or {}).items():
            self.stats[key] += value
        if len(scores) and (scores.min() < 0 or scores.max() > 1):
            self.stats["frames_with_scores_outside_0_1"] += 1
        groups = ["all", f"scene:{scene}"]
        if (np.asarray(labels) == 1).any():
            groups.append("anomaly_frames")
            if anomaly_info:
                size = anomaly_info.get("size")
                if isinstance(size, (int, float)):
                    groups += [f"size:{name}" for lo, hi, name in SIZE_BINS if lo <= float(size) < hi]
                if "anomaly_type_id" in anomaly_info:
                    groups.append(f"type:{anomaly_info['anomaly_type_id']}")
        for group in groups:
            if self.streaming:
                self.groups[group].update(labels, scores)
            else:
                self.groups[group].add(labels, scores)

    def _metrics(self, group) -> dict:
        if self.streaming:
            return self.groups[group].metrics()
        labels, scores = self.groups[group].arrays()
        out = ranking_metrics(labels, scores).as_dict()
        if self.protocol == "anovox":
            out.update(anovox_threshold_metrics(labels, scores))
        return out

    def summary(self) -> dict:
        scenes = sorted(g for g in self.groups if g.startswith("scene:"))
        per_scene = {g[6:]: self._metrics(g) for g in scenes}
        pooled = {g: self._metrics(g) for g in self.groups if not g.startswith("scene:")}
        defined = [m["auroc"] for m in per_scene.values() if not math.isnan(m["auroc"])]
        defined_ap = [m["ap"] for m in per_scene.values() if not math.isnan(m["ap"])]
        scene_mean = {"auroc": float(np.mean(defined)) if defined else math.nan,
                      "ap": float(np.mean(defined_ap)) if defined_ap else math.nan, "scenes_with_both_classes":
                      len(defined)}
        if self.stats.get("frames_with_scores_outside_0_1"):
            scene_mean["warning"] = ("scores outside [0, 1]: AUROC/AP are valid, threshold-based AnoVox metrics "
                                     "assume [0, 1]")
        return {"protocol": self.protocol, "frames": self.frames, "matching": dict(self.stats), "pooled": pooled,
                "scene_mean": scene_mean, "per_scene": per_scene}

    def curves(self, group: str = "all"):
        """(fpr, tpr, recall, precision) for plotting (exact mode only)."""
        from .metrics import binary_clf_curve
        labels, scores = self.groups[group].arrays()
        fps, tps, _ = binary_clf_curve(labels, scores)
        if len(tps) == 0 or tps[-1] == 0 or fps[-1] == 0:
            return None
        return (np.r_[0, fps / fps[-1]], np.r_[0, tps / tps[-1]], tps / tps[-1], tps / (tps + fps))
