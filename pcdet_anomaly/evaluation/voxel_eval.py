"""Voxel matching (sort-merge on int64 linear keys) and the per-scene / pooled evaluator."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .metrics import StreamingHistogram, anovox_threshold_metrics, ranking_metrics

__all__ = ["linear_key", "match_voxels", "join_frame", "check_pred_indices", "VoxelEvaluator", "SIZE_BINS",
           "POLICIES", "voxel_anomaly_groups", "false_alarms_by_class", "FALSE_ALARM_RECALLS", "RANGE_BANDS",
           "range_band_names", "voxel_ranges"]

SIZE_BINS = ((0.0, 0.5, "small (<0.5 m)"), (0.5, 1.5, "medium (0.5-1.5 m)"), (1.5, math.inf, "large (>=1.5 m)"))
RANGE_BANDS = (0.0, 20.0, 35.0, 50.0)     # m, xy distance of the voxel centre (EVAL_GRID.RANGE_BANDS)


def range_band_names(bands) -> list[str]:
    """Names of the bands between consecutive edges, and of the open band beyond the last edge."""
    edges = [float(b) for b in bands]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0:
        raise ValueError(f"EVAL_GRID.RANGE_BANDS must be >= 2 increasing distances from >= 0 m, got {list(bands)}")
    return [f"range:{a:g}-{b:g}m" for a, b in zip(edges, edges[1:])] + [f"range:{edges[-1]:g}m+"]


def voxel_ranges(voxels, eval_grid=None) -> np.ndarray:
    """xy distance (m) of each evaluation-grid voxel's centre from the sensor (the MAX_RANGE rule)."""
    voxel_size, offset = (0.5, (250.0, 250.0)) if eval_grid is None else (eval_grid.VOXEL_SIZE, eval_grid.OFFSET)
    centre = (np.asarray(voxels, np.float64).reshape(-1, 3)[:, :2] + 0.5) * voxel_size - np.asarray(offset[:2])
    return np.linalg.norm(centre, axis=1)


def _band_index(ranges, bands) -> np.ndarray:
    """Band of each distance: i for bands[i] <= r < bands[i + 1], len(bands) - 1 beyond the last edge, -1 below
    the first."""
    return np.searchsorted(np.asarray(bands, np.float64), np.asarray(ranges, np.float64), side="right") - 1


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
    found, scores, pred_without_gt = join_frame(pred_voxels, pred_scores, gt_voxels, source, grid_size=None)
    stats = {"gt_without_pred": int((~found).sum()), "pred_without_gt": pred_without_gt}
    if policy == "intersect":
        return np.asarray(gt_labels)[found], scores[found], stats
    return np.asarray(gt_labels), scores, stats


def check_pred_indices(pred_voxels: np.ndarray, grid_size, source: str = "pred") -> None:
    """Predicted voxel indices must lie inside the evaluation grid: outside it the linear key of one voxel can equal
    another's (ix = 1000 aliases iy + 1), so such a file is refused, not silently joined."""
    v = np.asarray(pred_voxels)
    if len(v) == 0:
        return
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{source}: voxel indices must be (M, 3), got {v.shape}")
    if np.issubdtype(v.dtype, np.floating):
        if not np.isfinite(v).all() or (v != np.floor(v)).any():
            raise ValueError(f"{source}: voxel indices must be whole numbers (columns ix, iy, iz)")
    v = v.astype(np.int64)
    size = np.asarray(grid_size, dtype=np.int64)
    bad = ((v < 0) | (v >= size)).any(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source}: {int(bad.sum())} predicted voxel(s) outside the evaluation grid "
                         f"{tuple(int(x) for x in size)}, first at row {i}: {tuple(int(x) for x in v[i])}")


def join_frame(pred_voxels, pred_scores, gt_voxels, source: str = "pred", grid_size=(1000, 1000, 64)):
    """The sort-merge join on int64 linear keys (the one place it is written).
    -> (found [K] bool, scores [K] float64 (0 where not found), pred_without_gt int) for the K ground-truth voxels.
    Raises ValueError naming `source` on duplicate predicted voxels, and on out-of-grid ones unless grid_size is None."""
    if grid_size is not None:
        check_pred_indices(pred_voxels, grid_size, source)
    pk = linear_key(np.asarray(pred_voxels).reshape(-1, 3))
    gk = linear_key(np.asarray(gt_voxels).reshape(-1, 3))
    p_order = np.argsort(pk, kind="stable")
    pk_sorted = pk[p_order]
    if len(pk_sorted) > 1 and (pk_sorted[1:] == pk_sorted[:-1]).any():
        dup = int(pk_sorted[1:][pk_sorted[1:] == pk_sorted[:-1]][0])
        raise ValueError(f"{source}: duplicate predicted voxel {dup % 1000, dup // 1000 % 1000, dup // 1_000_000}")
    scores_sorted = np.asarray(pred_scores, dtype=np.float64).reshape(-1)[p_order]
    if len(pk_sorted) == 0:
        return np.zeros(len(gk), bool), np.zeros(len(gk)), 0
    pos = np.searchsorted(pk_sorted, gk)
    pos_c = np.minimum(pos, len(pk_sorted) - 1)
    found = (pos < len(pk_sorted)) & (pk_sorted[pos_c] == gk)
    scores = np.zeros(len(gk), dtype=np.float64)
    scores[found] = scores_sorted[pos_c[found]]
    return found, scores, int(len(pk) - found.sum())


POLICIES = ("zero", "intersect")
FALSE_ALARM_RECALLS = (0.5, 0.9, 0.95)


def false_alarms_by_class(labels, scores, label_ids, recalls=FALSE_ALARM_RECALLS, top: int = 8,
                          names: dict | None = None, ranges=None, bands=RANGE_BANDS) -> dict:
    """Which normal voxels a model confuses with anomalies: at each recall r, the threshold t is the score of the
    ceil(r * P)-th highest anomalous voxel (P anomalous voxels in all), and the false alarms are the normal voxels
    scoring >= t (ties count as alarms, as at a ROC threshold). Each is broken down by its ground-truth label id.

    -> {"recall_0.5": {"threshold", "recall" (achieved, with ties), "false_alarms", "precision",
    "by_class": [{"label_id", "name", "voxels" (normal voxels of that id), "false_alarms", "share" (of all false
    alarms), "rate" (of the class's voxels)}, ...] (the `top` largest, most alarms first)}, ...,
    "ap_without_class": {name: AP with that class's normal voxels left out, for every class listed above}}:
    how much AP each confused class costs; {} without both classes.
    With `ranges` (xy distance of each voxel, m) every recall also gets "by_range": [{"band", "voxels" (normal
    voxels in it), "anomalies" (anomalous voxels in it), "false_alarms", "share", "rate"}, ...] over `bands`
    (range_band_names): where the false alarms lie, against where the anomalies are."""
    labels = np.asarray(labels).reshape(-1) == 1
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    ids = np.asarray(label_ids, dtype=np.int64).reshape(-1)
    if not (len(labels) == len(scores) == len(ids)):
        raise ValueError(f"labels, scores and label ids differ in length: {len(labels)}, {len(scores)}, {len(ids)}")
    P, N = int(labels.sum()), int((~labels).sum())
    if ranges is not None and len(ranges) != len(labels):
        raise ValueError(f"{len(ranges)} voxel ranges for {len(labels)} voxels")
    if P == 0 or N == 0:
        return {}
    if ranges is not None:
        band_names = range_band_names(bands)
        band = _band_index(ranges, bands)
        nb = len(band_names)
        neg_band, pos_band = band[~labels], band[labels]
        band_voxels = np.bincount(neg_band[neg_band >= 0], minlength=nb)
        band_pos = np.bincount(pos_band[pos_band >= 0], minlength=nb)
    if names is None:
        from ..datasets.anovox.labels import LABEL_NAMES as names
    pos_sorted = np.sort(scores[labels])[::-1]
    neg_scores, neg_ids = scores[~labels], ids[~labels]
    uniq, class_voxels = np.unique(neg_ids, return_counts=True)
    out = {}
    for r in recalls:
        k = max(1, int(math.ceil(float(r) * P - 1e-9)))
        t = float(pos_sorted[k - 1])
        alarm = neg_scores >= t
        n_alarm = int(alarm.sum())
        tp = int((pos_sorted >= t).sum())
        per = np.zeros(len(uniq), np.int64)
        if n_alarm:
            per = np.bincount(np.searchsorted(uniq, neg_ids[alarm]), minlength=len(uniq))
        order = np.lexsort((uniq, -per))[:top]
        out[f"recall_{r:g}"] = {
            "threshold": t, "recall": tp / P, "false_alarms": n_alarm, "precision": tp / (tp + n_alarm),
            "by_class": [{"label_id": int(uniq[i]), "name": names.get(int(uniq[i]), f"id {int(uniq[i])}"),
                          "voxels": int(class_voxels[i]), "false_alarms": int(per[i]),
                          "share": float(per[i] / n_alarm) if n_alarm else 0.0,
                          "rate": float(per[i] / class_voxels[i])} for i in order if per[i] > 0]}
        if ranges is not None:
            hits = neg_band[alarm]
            per_band = np.bincount(hits[hits >= 0], minlength=nb)
            out[f"recall_{r:g}"]["by_range"] = [
                {"band": band_names[i][6:], "voxels": int(band_voxels[i]), "anomalies": int(band_pos[i]),
                 "false_alarms": int(per_band[i]), "share": float(per_band[i] / n_alarm) if n_alarm else 0.0,
                 "rate": float(per_band[i] / band_voxels[i]) if band_voxels[i] else 0.0}
                for i in range(nb) if band_voxels[i] or band_pos[i]]
    listed = sorted({(c["label_id"], c["name"]) for r in out.values() for c in r["by_class"]})
    out["ap_without_class"] = {name: ranking_metrics(labels[keep], scores[keep]).ap
                               for lid, name in listed for keep in [labels | (ids != lid)]}
    return out


GROUP_KINDS = ("type", "size", "extent", "family", "label")


def size_bin(extent_m: float) -> str:
    return next(name for lo, hi, name in SIZE_BINS if lo <= extent_m < hi)


def voxel_anomaly_groups(voxels: np.ndarray, label_ids: np.ndarray, is_anomaly: np.ndarray, rows: list, eval_grid=None,
                         z_shift: float = 0.0) -> dict:
    """Group names of each anomalous ground-truth voxel, from its own label id and its anomaly's row.

    -> {"type", "size", "extent", "family", "label": [K] object arrays} (None for normal voxels and unknown facts);
    "family" exists for this project's files only (the shape family, an extra ANOMALY key).
    A voxel's row is the ANOMALY row whose semantic_tags hold the voxel's label; when several rows share that label,
    the row whose `sensor_location` is nearest the voxel centre; without a matching row the groups say 'unlisted'."""
    K = len(label_ids)
    out = {k: np.full(K, None, dtype=object) for k in GROUP_KINDS}
    idx = np.flatnonzero(is_anomaly)
    if len(idx) == 0:
        return out
    labels = np.asarray(label_ids, dtype=np.int64)
    out["label"][idx] = [f"label:{int(v)}" for v in labels[idx]]
    centres = None
    for lab in np.unique(labels[idx]):
        members = idx[labels[idx] == lab]
        cands = [r for r in rows if int(lab) in r["label_ids"]]
        if not cands:
            assign = [None] * len(members)
        elif len(cands) == 1 or any(r["sensor_location"] is None for r in cands):
            assign = [cands[0]] * len(members)
        else:
            if centres is None:
                vs, off = (0.5, (250.0, 250.0, 16.0)) if eval_grid is None else (eval_grid.VOXEL_SIZE,
                                                                                 eval_grid.OFFSET)
                centres = (np.asarray(voxels, np.float64) + 0.5) * vs - np.asarray(off) - np.array([0, 0, z_shift])
            locs = np.array([r["sensor_location"] for r in cands])
            d = np.linalg.norm(centres[members, None, :2] - locs[None, :, :2], axis=2)
            assign = [cands[j] for j in d.argmin(1)]
        for i, row in zip(members, assign):
            if row is None:
                out["type"][i], out["size"][i], out["extent"][i] = "type:unlisted", "size:unlisted", None
                continue
            out["type"][i] = f"type:{row['type']}"
            out["size"][i] = f"size:{row['size']}" if row["size"] else None
            out["extent"][i] = f"extent:{size_bin(row['extent_m'])}" if row["extent_m"] is not None else None
            out["family"][i] = f"family:{row['family']}" if row.get("family") else None
    return out


@dataclass
class _Pool:
    labels: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    found: list = field(default_factory=list)

    def add(self, labels, scores, found):
        self.labels.append(np.asarray(labels, dtype=np.int8))
        self.scores.append(np.asarray(scores, dtype=np.float64))
        self.found.append(np.asarray(found, dtype=bool))

    def arrays(self, policy: str = "zero"):
        if not self.labels:
            return np.zeros(0, np.int8), np.zeros(0)
        labels, scores = np.concatenate(self.labels), np.concatenate(self.scores)
        if policy == "intersect":
            found = np.concatenate(self.found)
            return labels[found], scores[found]
        return labels, scores


class _HistPool:
    def __init__(self, bins):
        self.hist = {p: StreamingHistogram(bins) for p in POLICIES}

    def add(self, labels, scores, found):
        self.hist["zero"].update(labels, scores)
        self.hist["intersect"].update(np.asarray(labels)[found], np.asarray(scores)[found])


class VoxelEvaluator:
    """Scores every ground-truth voxel of every frame under both policies at once.

    policy 'zero': a ground-truth voxel without a prediction scores 0 (nothing the model skipped is forgiven);
    'intersect': the official AnoVox behaviour, only voxels present in both prediction and ground truth.
    `summary()` gives, per policy, pooled metrics (all frames, anomaly frames, by anomaly type, official size category,
    numeric extent and label id, each group taking every anomalous voxel's own label and anomaly row) and per-scene
    metrics, plus `coverage`: how much of the ground truth was predicted. `policy` names the headline policy, whose
    numbers also stand at the top level (`pooled`, `scene_mean`, `per_scene`).
    Range groups (`range:0-20m`, ...; edges `range_bands`, else EVAL_GRID.RANGE_BANDS, else RANGE_BANDS) hold
    every voxel, normal and anomalous, whose centre lies in the band (xy distance): how well the model separates
    what lies at that distance, where the other groups keep every normal voxel of the frame."""

    def __init__(self, protocol: str = "default", streaming: bool = False, bins: int = 100_000,
                 policy: str = "zero", max_range: float = -1.0, grid_size=(1000, 1000, 64), eval_grid=None,
                 range_bands=None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.protocol = protocol
        self.streaming = streaming
        self.bins = bins
        self.policy = policy
        self.max_range = float(max_range)
        self.eval_grid = eval_grid
        self.grid_size = tuple(eval_grid.GRID_SIZE) if eval_grid is not None else tuple(grid_size)
        self.groups: dict = defaultdict(_Pool) if not streaming else defaultdict(lambda: _HistPool(bins))
        self.frames = 0
        self.coverage = defaultdict(int)
        self.stats = defaultdict(int)
        self.label_ids: list = []       # ground-truth label id of every voxel of the "all" group (exact mode only)
        self.ranges: list = []          # xy distance (m) of every voxel of the "all" group (exact mode only)
        if range_bands is None:
            range_bands = getattr(eval_grid, "RANGE_BANDS", None) if eval_grid is not None else None
        self.range_bands = tuple(float(b) for b in (RANGE_BANDS if range_bands is None else range_bands))
        self.range_names = range_band_names(self.range_bands)

    def add(self, scene: str, frame: int, gt_voxels, gt_label_ids, gt_labels, pred_voxels, pred_scores,
            anomaly_rows=(), source: str = "pred", z_shift: float = 0.0) -> None:
        """One frame: ground truth (voxels [K, 3], label ids [K], binary labels [K], already range-filtered and
        without ignored voxels) against predictions (voxels [M, 3] on the evaluation grid, scores [M])."""
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if np.isnan(pred_scores).any():
            raise ValueError(f"{source}: {int(np.isnan(pred_scores).sum())} NaN scores")
        found, scores, pred_without_gt = join_frame(pred_voxels, pred_scores, gt_voxels, source, self.grid_size)
        labels = np.asarray(gt_labels, dtype=np.int8)
        c = self.coverage
        c["gt_voxels"] += len(labels)
        c["gt_voxels_predicted"] += int(found.sum())
        c["anomaly_voxels"] += int((labels == 1).sum())
        c["anomaly_voxels_predicted"] += int(found[labels == 1].sum())
        c["pred_voxels"] += len(pred_scores)
        c["pred_voxels_without_gt"] += pred_without_gt
        self.frames += 1
        if len(pred_scores) and (pred_scores.min() < 0 or pred_scores.max() > 1):
            self.stats["frames_with_scores_outside_0_1"] += 1
        add = lambda group, m=None: self.groups[group].add(labels if m is None else labels[m],
                                                           scores if m is None else scores[m],
                                                           found if m is None else found[m])
        add("all")
        if not self.streaming:
            ids = np.asarray(gt_label_ids, dtype=np.int32).reshape(-1)
            if len(ids) != len(labels):
                raise ValueError(f"{source}: {len(ids)} label ids for {len(labels)} ground-truth voxels")
            self.label_ids.append(ids)
        ranges = voxel_ranges(gt_voxels, self.eval_grid)
        if not self.streaming:
            self.ranges.append(ranges)
        band = _band_index(ranges, self.range_bands)
        for i in np.unique(band[band >= 0]):
            add(self.range_names[i], band == i)
        add(f"scene:{scene}")
        is_anom = labels == 1
        if is_anom.any():
            add("anomaly_frames")
            groups = voxel_anomaly_groups(gt_voxels, gt_label_ids, is_anom, list(anomaly_rows), self.eval_grid,
                                          z_shift)
            normal = ~is_anom
            for kind in GROUP_KINDS:
                for name in sorted({g for g in groups[kind][is_anom] if g is not None}):
                    add(name, normal | (groups[kind] == name))

    def state(self) -> dict:
        """Everything accumulated, as plain arrays (for gathering the shards of a distributed evaluation)."""
        if self.streaming:
            groups = {g: {p: (h.pos, h.neg) for p, h in pool.hist.items()} for g, pool in self.groups.items()}
        else:
            groups = {g: (np.concatenate(p.labels), np.concatenate(p.scores), np.concatenate(p.found))
                      for g, p in self.groups.items() if p.labels}
        return {"groups": groups, "frames": self.frames, "coverage": dict(self.coverage), "stats": dict(self.stats),
                "label_ids": np.concatenate(self.label_ids) if self.label_ids else np.zeros(0, np.int32),
                "ranges": np.concatenate(self.ranges) if self.ranges else np.zeros(0)}

    def merge_state(self, state: dict) -> None:
        """Add another evaluator's state: the result equals one evaluator that saw both sets of frames."""
        self.frames += state["frames"]
        for key, value in state["coverage"].items():
            self.coverage[key] += value
        for key, value in state["stats"].items():
            self.stats[key] += value
        for group, value in state["groups"].items():
            if self.streaming:
                for policy, (pos, neg) in value.items():
                    self.groups[group].hist[policy].pos += pos
                    self.groups[group].hist[policy].neg += neg
            else:
                self.groups[group].add(*value)
        if not self.streaming and len(state.get("label_ids", ())):
            self.label_ids.append(np.asarray(state["label_ids"], dtype=np.int32))
        if not self.streaming and len(state.get("ranges", ())):
            self.ranges.append(np.asarray(state["ranges"], dtype=np.float64))

    def _metrics(self, group, policy) -> dict:
        if self.streaming:
            return self.groups[group].hist[policy].metrics()
        labels, scores = self.groups[group].arrays(policy)
        out = ranking_metrics(labels, scores).as_dict()
        out.update(anovox_threshold_metrics(labels, scores))
        return out

    def coverage_summary(self) -> dict:
        c = dict(self.coverage)
        for k in ("gt_voxels", "gt_voxels_predicted", "anomaly_voxels", "anomaly_voxels_predicted", "pred_voxels",
                  "pred_voxels_without_gt"):
            c.setdefault(k, 0)
        c["gt_voxels_unpredicted"] = c["gt_voxels"] - c["gt_voxels_predicted"]
        c["anomaly_voxels_unpredicted"] = c["anomaly_voxels"] - c["anomaly_voxels_predicted"]
        c["gt_fraction_predicted"] = c["gt_voxels_predicted"] / c["gt_voxels"] if c["gt_voxels"] else math.nan
        c["anomaly_fraction_predicted"] = (c["anomaly_voxels_predicted"] / c["anomaly_voxels"]
                                           if c["anomaly_voxels"] else math.nan)
        c["max_range_m"] = self.max_range
        c["range"] = (f"voxel centres within {self.max_range:g} m (xy) of the sensor" if self.max_range > 0
                      else "the whole evaluation grid")
        return c

    def _policy_summary(self, policy) -> dict:
        scenes = sorted(g for g in self.groups if g.startswith("scene:"))
        per_scene = {g[6:]: self._metrics(g, policy) for g in scenes}
        pooled = {g: self._metrics(g, policy) for g in self.groups if not g.startswith("scene:")}
        defined = [m["auroc"] for m in per_scene.values() if not math.isnan(m["auroc"])]
        defined_ap = [m["ap"] for m in per_scene.values() if not math.isnan(m["ap"])]
        scene_mean = {"auroc": float(np.mean(defined)) if defined else math.nan,
                      "ap": float(np.mean(defined_ap)) if defined_ap else math.nan,
                      "scenes_with_both_classes": len(defined)}
        out = {"pooled": pooled, "scene_mean": scene_mean, "per_scene": per_scene}
        if not self.streaming and self.label_ids and self.groups["all"].labels:
            labels, scores = self.groups["all"].arrays(policy)
            ids = np.concatenate(self.label_ids)
            ranges = np.concatenate(self.ranges) if self.ranges else None
            if ranges is not None and len(ranges) != len(ids):
                ranges = None           # a merged shard without ranges (older state): no breakdown by range
            if policy == "intersect":
                found = np.concatenate(self.groups["all"].found)
                ids = ids[found]
                ranges = ranges[found] if ranges is not None else None
            out["false_alarms"] = false_alarms_by_class(labels, scores, ids, ranges=ranges, bands=self.range_bands)
        return out

    def summary(self) -> dict:
        policies = {p: self._policy_summary(p) for p in POLICIES}
        head = policies[self.policy]
        out = {"protocol": self.protocol, "policy": self.policy, "frames": self.frames,
               "coverage": self.coverage_summary(), "matching": dict(self.stats), "pooled": head["pooled"],
               "scene_mean": dict(head["scene_mean"]), "per_scene": head["per_scene"], "policies": policies}
        if head.get("false_alarms"):
            out["false_alarms"] = head["false_alarms"]
        if self.stats.get("frames_with_scores_outside_0_1"):
            out["scene_mean"]["warning"] = ("scores outside [0, 1]: AUROC/AP are valid, threshold-based AnoVox "
                                            "metrics assume [0, 1]")
        return out

    def curves(self, group: str = "all", policy: str | None = None):
        """(fpr, tpr, recall, precision) for plotting (exact mode only)."""
        from .metrics import binary_clf_curve
        labels, scores = self.groups[group].arrays(policy or self.policy)
        if len(labels) == 0:
            return None
        fps, tps, _ = binary_clf_curve(labels, scores)
        if len(tps) == 0 or tps[-1] == 0 or fps[-1] == 0:
            return None
        return (np.r_[0, fps / fps[-1]], np.r_[0, tps / tps[-1]], tps / tps[-1], tps / (tps + fps))

