"""Point-level anomaly evaluation in the STU protocol (SemanticKITTI layout), and its object-level companion.

The point-level protocol of the STU benchmark (kumuji/stu_dataset, `compute_point_level_ood.py`), reproduced number
for number (tests/test_stu.py checks it against a transcription of the official function):

* labels: semantic = label & 0xFFFF; 0 -> ignored, 2 -> anomaly, any other value -> inlier (configurable here:
  `anomaly_ids`, `ignore_ids`, raw semantic ids);
* a point is ignored when its 3D distance to the sensor (np.linalg.norm of x, y, z) is > 50 m or < 2.5 m (strict:
  a point at exactly 2.5 m or 50 m counts);
* a frame with fewer than 5 anomaly points left is skipped entirely (not counted in the pool);
* every remaining point of every frame is pooled; AP = sklearn `average_precision_score`, AUROC = `auc(roc_curve)`,
  FPR95 = FPR at the first point of `roc_curve` (intermediate points dropped, as sklearn does by default) whose TPR is
  strictly greater than 0.95 (0 when none is), reported x 100 in the `stu` block.

Differences from the official script, none of which changes a number: a prediction whose length differs from the
scan is an error naming the file even when its frame would be skipped (the official script silently skips such a
frame when it has fewer than 5 anomaly points); frames with ground truth but no prediction are counted and listed
(the official script only iterates over prediction files, so a missing frame silently drops out); per-sequence
numbers are reported beside the pooled ones.

Object level (`ObjectEvaluator`): the STU `UQEvaluator` (compute_object_level_ood.py). Predicted instances come from
thresholding the scores (score > threshold, as generate_dbscan_instances.py) and taking connected components of the
predicted points, two points being connected when their distance is <= eps (DBSCAN with min_samples 1: single
linkage). A predicted and a ground-truth anomaly instance match when their point IoU is > 0.5 (strict; at most one
match per instance follows from IoU > 0.5); unmatched instances with >= 5 points are false negatives / positives.
Reported: SQ, RecallQ, UQ = SQ x RecallQ, RQ, PQ, TP, FP, FN.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .metrics import _metrics_from_curve, binary_clf_curve, ranking_metrics

__all__ = ["STU_PROTOCOL", "stu_point_labels", "stu_fpr95", "PointEvaluator", "ObjectEvaluator",
           "connected_components", "instances_from_scores"]

STU_PROTOCOL = {"min_range": 2.5, "max_range": 50.0, "min_anomaly_points": 5}


def stu_point_labels(xyz: np.ndarray, semantic: np.ndarray, anomaly_ids=(2,), ignore_ids=(0,),
                     min_range: float = 2.5, max_range: float = 50.0) -> np.ndarray:
    """-> int8 [N]: 1 anomaly, 0 inlier, -1 ignored (label or distance), in the official order of rules."""
    semantic = np.asarray(semantic).astype(np.int64)
    labels = np.where(np.isin(semantic, list(ignore_ids)), -1, 0).astype(np.int8)
    labels[np.isin(semantic, list(anomaly_ids))] = 1
    dist = np.linalg.norm(np.asarray(xyz, dtype=np.float32)[:, :3], axis=1)
    labels[(dist > max_range) | (dist < min_range)] = -1
    return labels


def stu_fpr95(fps: np.ndarray, tps: np.ndarray) -> tuple[float, int]:
    """FPR at the first point of sklearn's roc_curve (drop_intermediate=True) with TPR > 0.95 strictly, and that
    point's index into (fps, tps) (-1 when no point qualifies: the official script then reports 0)."""
    if len(fps) == 0 or tps[-1] == 0 or fps[-1] == 0:
        return math.nan, -1
    idx = np.arange(len(fps))
    if len(fps) > 2:
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        idx = idx[keep]
    tpr = tps[idx].astype(np.float64) / float(tps[-1])
    above = np.flatnonzero(tpr > 0.95)
    if not len(above):
        return 0.0, -1
    i = int(idx[above[0]])
    return float(fps[i] / float(fps[-1])), i


class PointEvaluator:
    """Pools the points of every frame under the STU protocol; same summary layout as VoxelEvaluator (one 'policy',
    `points`), so the console table, the JSON/CSV reports, the trainer and the study read both."""

    protocol = "stu_point"

    def __init__(self, anomaly_ids=(2,), ignore_ids=(0,), min_range: float = 2.5, max_range: float = 50.0,
                 min_anomaly_points: int = 5, object_threshold: float | None = None, object_eps: float = 1.0,
                 object_min_points: int = 5):
        self.anomaly_ids, self.ignore_ids = tuple(anomaly_ids), tuple(ignore_ids)
        # object level (optional): instances from score > object_threshold, connected within object_eps
        self.objects = (ObjectEvaluator(anomaly_ids, ignore_ids, min_range, max_range, object_min_points)
                        if object_threshold is not None else None)
        self.object_threshold, self.object_eps = object_threshold, float(object_eps)
        self.min_range, self.max_range = float(min_range), float(max_range)
        self.min_anomaly_points = int(min_anomaly_points)
        self.groups: dict = defaultdict(lambda: ([], []))
        self.frames = 0
        self.coverage = defaultdict(int)
        self.skipped: list = []

    def add(self, scene: str, frame: int, xyz: np.ndarray, semantic: np.ndarray, scores: np.ndarray,
            scored: np.ndarray | None = None, source: str = "pred", instance: np.ndarray | None = None) -> bool:
        """One frame: every point of the scan (xyz [N, 3], raw semantic ids [N]) and a score per point. `scored`
        ([N] bool) marks the points the model saw (the others carry a fill score; counted in the coverage);
        `instance` ([N] ground-truth instance ids) feeds the object level. Returns whether the frame was pooled."""
        scores = np.asarray(scores).reshape(-1)
        if len(scores) != len(semantic) or len(xyz) != len(semantic):
            raise ValueError(f"{source}: {len(scores)} scores for {len(semantic)} labelled points "
                             f"({len(xyz)} in the scan): one score per point of the .bin is required")
        scores = scores.astype(np.float32)      # the official script reads np.loadtxt(...).astype(np.float32)
        if np.isnan(scores).any():
            raise ValueError(f"{source}: {int(np.isnan(scores).sum())} NaN scores")
        labels = stu_point_labels(xyz, semantic, self.anomaly_ids, self.ignore_ids, self.min_range, self.max_range)
        if self.objects is not None and instance is not None:
            pred_sem, pred_inst = instances_from_scores(xyz, scores, self.object_threshold, self.object_eps)
            self.objects.add_labelled(labels, pred_sem, pred_inst, instance)
        keep = labels != -1
        c = self.coverage
        c["frames_seen"] += 1
        c["points"] += len(labels)
        n_anom = int((labels == 1).sum())
        if n_anom < self.min_anomaly_points:
            c["frames_skipped"] += 1
            self.skipped.append(f"{scene}/{frame}")
            return False
        labels, scores = labels[keep], scores[keep]
        c["points_evaluated"] += len(labels)
        c["anomaly_points"] += n_anom
        if scored is not None:
            scored = np.asarray(scored, dtype=bool)[keep]
            c["points_evaluated_scored_by_model"] += int(scored.sum())
            c["anomaly_points_scored_by_model"] += int(scored[labels == 1].sum())
        else:
            c["points_evaluated_scored_by_model"] += len(labels)
            c["anomaly_points_scored_by_model"] += n_anom
        self.frames += 1
        for group in ("all", f"scene:{scene}"):
            self.groups[group][0].append(labels)
            self.groups[group][1].append(scores)
        return True

    # ---- distributed shards
    def state(self) -> dict:
        return {"groups": {g: (np.concatenate(l), np.concatenate(s)) for g, (l, s) in self.groups.items() if l},
                "frames": self.frames, "coverage": dict(self.coverage), "skipped": list(self.skipped),
                "objects": self.objects.state() if self.objects is not None else None}

    def merge_state(self, state: dict) -> None:
        self.frames += state["frames"]
        for key, value in state["coverage"].items():
            self.coverage[key] += value
        self.skipped += state["skipped"]
        if self.objects is not None and state.get("objects"):
            self.objects.merge_state(state["objects"])
        for group, (labels, scores) in state["groups"].items():
            self.groups[group][0].append(labels)
            self.groups[group][1].append(scores)

    # ---- results
    def arrays(self, group: str = "all"):
        labels, scores = self.groups[group] if group in self.groups else ([], [])
        if not labels:
            return np.zeros(0, np.int8), np.zeros(0, np.float32)
        return np.concatenate(labels), np.concatenate(scores)

    def _metrics(self, group: str) -> dict:
        labels, scores = self.arrays(group)
        if not len(labels):
            return ranking_metrics(labels, scores).as_dict() | {"threshold": 0.0}
        fps, tps, thr = binary_clf_curve(labels, scores)      # one sort for every number
        out = _metrics_from_curve(fps, tps).as_dict()          # AUROC and AP bit-equal to sklearn
        fpr95, i = stu_fpr95(fps, tps)
        out["fpr95"] = fpr95                                   # the STU rule (TPR > 0.95 on the dropped curve)
        out["threshold"] = float(thr[i]) if i >= 0 else 0.0
        return out

    def coverage_summary(self) -> dict:
        c = dict(self.coverage)
        for k in ("frames_seen", "frames_skipped", "points", "points_evaluated", "anomaly_points",
                  "points_evaluated_scored_by_model", "anomaly_points_scored_by_model"):
            c.setdefault(k, 0)
        c["gt_fraction_predicted"] = (c["points_evaluated_scored_by_model"] / c["points_evaluated"]
                                      if c["points_evaluated"] else math.nan)
        c["anomaly_fraction_predicted"] = (c["anomaly_points_scored_by_model"] / c["anomaly_points"]
                                           if c["anomaly_points"] else math.nan)
        c["range"] = (f"points {self.min_range:g}-{self.max_range:g} m (3D) from the sensor; frames with fewer than "
                      f"{self.min_anomaly_points} anomaly points skipped")
        c["skipped_frames"] = self.skipped[:50]
        return c

    def summary(self) -> dict:
        scenes = sorted(g for g in self.groups if g.startswith("scene:"))
        per_scene = {g[6:]: self._metrics(g) for g in scenes}
        pooled = {"all": self._metrics("all")}
        auroc = [m["auroc"] for m in per_scene.values() if not math.isnan(m["auroc"])]
        ap = [m["ap"] for m in per_scene.values() if not math.isnan(m["ap"])]
        scene_mean = {"auroc": float(np.mean(auroc)) if auroc else math.nan,
                      "ap": float(np.mean(ap)) if ap else math.nan, "scenes_with_both_classes": len(auroc)}
        head = {"pooled": pooled, "scene_mean": scene_mean, "per_scene": per_scene}
        a = pooled["all"]
        stu = {"AP": a["ap"] * 100, "FPR95": a["fpr95"] * 100, "AUROC": a["auroc"] * 100, "threshold": a["threshold"]}
        out = {"protocol": self.protocol, "policy": "points", "frames": self.frames,
               "coverage": self.coverage_summary(), "matching": {}, "pooled": pooled, "scene_mean": scene_mean,
               "per_scene": per_scene, "policies": {"points": head}, "stu": stu}
        if self.objects is not None:
            out["object"] = dict(self.objects.metrics(), threshold=self.object_threshold, eps=self.object_eps,
                                 rule=f"instances: connected components of points with score > "
                                      f"{self.object_threshold:g} (distance <= {self.object_eps:g} m); match: "
                                      f"point IoU > 0.5; unmatched instances of >= {self.objects.min_points} points "
                                      f"count as FP / FN")
        return out

    def curves(self, group: str = "all", policy: str | None = None):
        labels, scores = self.arrays(group)
        if len(labels) == 0:
            return None
        fps, tps, _ = binary_clf_curve(labels, scores)
        if tps[-1] == 0 or fps[-1] == 0:
            return None
        return (np.r_[0, fps / fps[-1]], np.r_[0, tps / tps[-1]], tps / tps[-1], tps / (tps + fps))


# ---------------------------------------------------------------------------------------------------- object level
def connected_components(xyz: np.ndarray, eps: float) -> np.ndarray:
    """Component id (0..k-1) per point, points within `eps` (<=) of each other connected (single linkage; the
    clusters of DBSCAN with min_samples=1)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc
    from scipy.spatial import cKDTree
    n = len(xyz)
    if n == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(np.asarray(xyz, dtype=np.float64)).query_pairs(eps, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return cc(graph, directed=False)[1].astype(np.int64)


def instances_from_scores(xyz: np.ndarray, scores: np.ndarray, threshold: float = 0.5, eps: float = 1.0):
    """-> (semantic [N] 1 = predicted anomaly, instance [N] 1.. per component, 0 elsewhere)."""
    mask = np.asarray(scores) > threshold
    semantic = mask.astype(np.int64)
    instance = np.zeros(len(mask), np.int64)
    if mask.any():
        instance[mask] = connected_components(np.asarray(xyz)[mask, :3], eps) + 1
    return semantic, instance


class ObjectEvaluator:
    """The STU object-level counts (UQEvaluator of compute_object_level_ood.py) for the anomaly class."""

    def __init__(self, anomaly_ids=(2,), ignore_ids=(0,), min_range: float = 2.5, max_range: float = 50.0,
                 min_points: int = 5):
        self.anomaly_ids, self.ignore_ids = tuple(anomaly_ids), tuple(ignore_ids)
        self.min_range, self.max_range, self.min_points = float(min_range), float(max_range), int(min_points)
        self.tp = self.fp = self.fn = 0
        self.iou_sum = 0.0
        self.frames = 0

    def add(self, xyz, pred_semantic, pred_instance, gt_semantic_raw, gt_instance) -> None:
        labels = stu_point_labels(xyz, gt_semantic_raw, self.anomaly_ids, self.ignore_ids, self.min_range,
                                  self.max_range)
        self.add_labelled(labels, pred_semantic, pred_instance, gt_instance)

    def add_labelled(self, labels, pred_semantic, pred_instance, gt_instance) -> None:
        """`labels` from stu_point_labels (1 anomaly, 0 inlier, -1 ignored) with this evaluator's ranges and ids."""
        keep = labels != -1
        y_sem = labels[keep]
        if int(y_sem.sum()) < self.min_points:
            return
        self.frames += 1
        x_sem = np.asarray(pred_semantic)[keep]
        x_inst = np.asarray(pred_instance).astype(np.int64)[keep] + 1
        y_inst = np.asarray(gt_instance).astype(np.int64)[keep] + 1
        x_in = np.where(x_sem == 1, x_inst, 0)
        y_in = np.where(y_sem == 1, y_inst, 0)
        pred_ids, pred_area = np.unique(x_in[x_in > 0], return_counts=True)
        gt_ids, gt_area = np.unique(y_in[y_in > 0], return_counts=True)
        both = (x_in > 0) & (y_in > 0)
        pair, inter = np.unique(np.stack([y_in[both], x_in[both]], 1), axis=0, return_counts=True) \
            if both.any() else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
        gi = np.searchsorted(gt_ids, pair[:, 0])
        pi = np.searchsorted(pred_ids, pair[:, 1])
        union = gt_area[gi] + pred_area[pi] - inter
        iou = inter.astype(np.float64) / union.astype(np.float64)
        match = iou > 0.5
        self.tp += int(match.sum())
        self.iou_sum += float(iou[match].sum())
        gt_matched = np.zeros(len(gt_ids), bool)
        pred_matched = np.zeros(len(pred_ids), bool)
        gt_matched[gi[match]] = True
        pred_matched[pi[match]] = True
        self.fn += int(((gt_area >= self.min_points) & ~gt_matched).sum())
        self.fp += int(((pred_area >= self.min_points) & ~pred_matched).sum())

    def state(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "iou_sum": self.iou_sum, "frames": self.frames}

    def merge_state(self, s: dict) -> None:
        self.tp += s["tp"]
        self.fp += s["fp"]
        self.fn += s["fn"]
        self.iou_sum += s["iou_sum"]
        self.frames += s["frames"]

    def metrics(self) -> dict:
        sq = self.iou_sum / max(float(self.tp), 1e-15)
        recall_q = self.tp / max(float(self.tp + self.fn), 1e-15)
        rq = self.tp / max(self.tp + 0.5 * self.fp + 0.5 * self.fn, 1e-15)
        return {"SQ": sq * 100, "RecallQ": recall_q * 100, "UQ": sq * recall_q * 100, "RQ": rq * 100,
                "PQ": sq * rq * 100, "TP": self.tp, "FP": self.fp, "FN": self.fn, "frames": self.frames}
