import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from pcdet_anomaly.evaluation import (StreamingHistogram, VoxelEvaluator, anovox_threshold_metrics, match_voxels,
                                      ranking_metrics)


def fpr95_sklearn(y, s):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


def random_cases():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.1
    yield "heavy_ties", y, np.round(rng.random(5000) + y * 0.3, 1)
    yield "float32", y, (rng.random(5000) + y * 0.5).astype(np.float32)
    yield "float64", y, rng.random(5000) + y * 0.2
    yield "all_equal", y, np.full(5000, 0.5)
    one = np.zeros(300, bool)
    one[17] = True
    yield "single_positive", one, rng.random(300)
    yield "integers", y, rng.integers(0, 4, 5000)


@pytest.mark.parametrize("name,y,s", list(random_cases()))
def test_equal_to_sklearn(name, y, s):
    m = ranking_metrics(y, s)
    assert abs(m.auroc - roc_auc_score(y, s)) < 1e-12, name
    assert abs(m.ap - average_precision_score(y, s)) < 1e-12, name
    assert abs(m.fpr95 - fpr95_sklearn(y, s)) < 1e-12, name
    assert m.num_pos == y.sum() and m.num_neg == (~y).sum()


def test_single_class_is_undefined_and_nan_rejected():
    m = ranking_metrics(np.zeros(10), np.arange(10.0))
    assert math.isnan(m.auroc) and math.isnan(m.ap) and math.isnan(m.fpr95)
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(np.array([0, 1]), np.array([0.1, np.nan]))


def test_anovox_fpr95_is_coarse_sweep():
    y = np.array([1] * 20 + [0] * 80)
    s = np.r_[np.linspace(0.5, 0.99, 20), np.linspace(0.0, 0.6, 80)]
    out = anovox_threshold_metrics(y, s)
    # brute force of the official sweep
    for t in np.round(np.arange(100, -1, -1) / 100, 2):
        tpr = ((s > t) & (y == 1)).sum() / 20
        if tpr >= 0.95:
            expect = ((s > t) & (y == 0)).sum() / 80
            break
    assert out["fpr95_anovox"] == expect
    assert out["fpr95_anovox"] >= ranking_metrics(y, s).fpr95       # coarse sweep is pessimistic


def test_join_equals_bruteforce_pairwise():
    rng = np.random.default_rng(1)
    for _ in range(5):
        gt = np.unique(rng.integers(0, 40, (400, 3)), axis=0)
        pred = np.unique(rng.integers(0, 40, (400, 3)), axis=0)
        gt_lab = rng.integers(0, 2, len(gt))
        pred_s = rng.random(len(pred))
        labels, scores, stats = match_voxels(pred, pred_s, gt, gt_lab)
        eq = (gt[:, None, :] == pred[None, :, :]).all(-1)            # the official quadratic match
        gi, pi = np.nonzero(eq)
        assert np.array_equal(labels, gt_lab[gi]) and np.array_equal(scores, pred_s[pi])
        assert stats["gt_without_pred"] == len(gt) - len(gi) and stats["pred_without_gt"] == len(pred) - len(pi)
        labels0, scores0, _ = match_voxels(pred, pred_s, gt, gt_lab, policy="zero")
        assert len(labels0) == len(gt) and (scores0[~eq.any(1)] == 0).all()
    with pytest.raises(ValueError, match="duplicate predicted voxel"):
        match_voxels(np.array([[1, 2, 3], [1, 2, 3]]), np.array([0.1, 0.2]), gt, gt_lab)


def test_large_indices_do_not_overflow():
    gt = np.array([[999, 999, 63]], dtype=np.uint16)
    pred = np.array([[999, 999, 63], [999, 998, 63]], dtype=np.uint16)
    labels, scores, _ = match_voxels(pred, np.array([0.7, 0.1]), gt, np.array([1]))
    assert scores.tolist() == [0.7]


def _add(ev, scene, frame, labels, scores, rows=()):
    """Every ground-truth voxel predicted: voxel i at (i, 0, 0), anomalies carry label 30."""
    labels = np.asarray(labels)
    vox = np.stack([np.arange(len(labels)), np.zeros(len(labels), int), np.zeros(len(labels), int)], 1)
    ev.add(scene, frame, vox, np.where(labels == 1, 30, 1), labels, vox, np.asarray(scores, float), rows)


def test_per_scene_and_pooled_by_hand():
    ev = VoxelEvaluator()
    row = {"label_ids": {30}, "type": "static.prop.o_dog_animal", "size": "Small", "extent_m": 0.3,
           "sensor_location": None, "family": "animal"}
    _add(ev, "A", 1, [1, 0, 0], [0.9, 0.1, 0.2], [row])
    _add(ev, "B", 5, [1, 0, 0, 1], [0.3, 0.4, 0.1, 0.8])
    _add(ev, "B", 6, [0, 0], [0.5, 0.6])
    s = ev.summary()
    assert s["per_scene"]["A"]["auroc"] == 1.0
    assert s["per_scene"]["B"]["auroc"] == pytest.approx(5 / 8)      # pairs: (0.3 vs 0.4,0.1,0.5,0.6), (0.8 vs all)
    y = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0])
    sc = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.1, 0.8, 0.5, 0.6])
    assert s["pooled"]["all"]["auroc"] == pytest.approx(roc_auc_score(y, sc))
    assert s["pooled"]["anomaly_frames"]["num_neg"] == 4               # frame B/6 has no anomaly
    assert "extent:small (<0.5 m)" in s["pooled"] and "type:static.prop.o_dog_animal" in s["pooled"]
    assert s["pooled"]["size:Small"]["num_pos"] == 1                   # frame A's anomaly only: B lists no row
    assert s["pooled"]["type:unlisted"]["num_pos"] == 2 and s["pooled"]["label:30"]["num_pos"] == 3
    assert s["scene_mean"]["auroc"] == pytest.approx((1.0 + 5 / 8) / 2)


def test_streaming_histogram_within_its_bound():
    rng = np.random.default_rng(2)
    y = rng.random(200000) < 0.05
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    h = StreamingHistogram(bins=1000)
    for part in np.array_split(np.arange(len(y)), 7):
        h.update(y[part], s[part])
    m = h.metrics()
    assert abs(m["auroc"] - roc_auc_score(y, s)) <= m["auroc_error_bound"] + 1e-12
    assert m["auroc_error_bound"] < 1e-3


def test_false_alarms_by_class_against_a_hand_count():
    from pcdet_anomaly.evaluation.voxel_eval import false_alarms_by_class
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    scores = np.array([.9, .8, .7, .6, .85, .65, .1, .75, .2, .0, .0, .0, .0, .8])
    ids = np.array([30, 30, 30, 30, 9, 9, 9, 6, 6, 1, 1, 1, 1, 3])
    fa = false_alarms_by_class(labels, scores, ids, recalls=(0.5, 0.95))
    half = fa["recall_0.5"]          # 2nd highest anomaly 0.8: vegetation 0.85 and the building's tie at 0.8
    assert half["threshold"] == 0.8 and half["false_alarms"] == 2 and half["precision"] == 0.5
    assert [(c["name"], c["false_alarms"]) for c in half["by_class"]] == [("building", 1), ("vegetation", 1)]
    full = fa["recall_0.95"]         # ceil(0.95 * 4) = 4th anomaly, 0.6
    assert full["threshold"] == 0.6 and full["recall"] == 1.0 and full["false_alarms"] == 4
    veg = next(c for c in full["by_class"] if c["name"] == "vegetation")
    assert veg == {"label_id": 9, "name": "vegetation", "voxels": 3, "false_alarms": 2, "share": 0.5,
                   "rate": 2 / 3}
    assert full["by_class"][0]["name"] == "vegetation"            # most alarms first
    assert all(c["name"] != "road" for c in full["by_class"])      # classes without an alarm are left out
    keep = ids != 9
    assert fa["ap_without_class"]["vegetation"] == pytest.approx(average_precision_score(labels[keep], scores[keep]))
    assert fa["ap_without_class"]["vegetation"] > average_precision_score(labels, scores)
    assert set(fa["ap_without_class"]) == {"vegetation", "building", "pole"}
    assert false_alarms_by_class(np.zeros(3), np.ones(3), np.ones(3)) == {}


def test_evaluator_reports_false_alarms_under_both_policies():
    from pcdet_anomaly.evaluation.report import format_table
    vox = np.stack([np.arange(6), np.zeros(6, int), np.zeros(6, int)], 1)
    ids = np.array([30, 30, 9, 9, 1, 1])
    ev = VoxelEvaluator()
    ev.add("S", 0, vox, ids, (ids == 30).astype(np.int8), vox[[0, 1, 2, 4]], np.array([.9, .3, .5, .1]))
    s = ev.summary()
    zero = s["policies"]["zero"]["false_alarms"]["recall_0.95"]
    assert zero["threshold"] == 0.3 and zero["false_alarms"] == 1 and zero["by_class"][0]["name"] == "vegetation"
    assert s["false_alarms"] == s["policies"]["zero"]["false_alarms"]
    inter = s["policies"]["intersect"]["false_alarms"]["recall_0.95"]   # the unpredicted voxels 3 and 5 drop out
    assert [(c["name"], c["voxels"]) for c in inter["by_class"]] == [("vegetation", 1)]
    table = format_table(s)
    assert "false alarms by class" in table and "vegetation 100%" in table and "left out: vegetation 1.0000" in table


def _ring_voxels(dist_m):
    """Evaluation-grid voxels (0.5 m, offset 250 m) whose centres lie at the given x distances ahead (y = 0.25 m)."""
    ix = np.floor((np.asarray(dist_m, float) + 250.0) / 0.5).astype(int)
    return np.stack([ix, np.full(len(ix), 500), np.full(len(ix), 40)], 1)


def test_range_bands_group_every_voxel_by_distance():
    from pcdet_anomaly.evaluation.voxel_eval import range_band_names, voxel_ranges
    dist = np.array([5, 10, 15, 25, 30, 40, 45, 48, 60, 70.0])
    vox = _ring_voxels(dist)
    assert np.allclose(voxel_ranges(vox), np.hypot(dist + 0.25, 0.25), atol=1e-9)
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 0], np.int8)
    ids = np.where(labels == 1, 30, 14)
    scores = np.array([.9, .1, .2, .4, .6, .3, .8, .7, .5, .0])
    ev = VoxelEvaluator(range_bands=(0, 20, 35, 50))
    ev.add("S", 0, vox, ids, labels, vox, scores)
    s = ev.summary()
    assert set(g for g in s["pooled"] if g.startswith("range:")) == set(range_band_names((0, 20, 35, 50)))
    far = s["pooled"]["range:35-50m"]             # the anomaly at 40 m against the cars at 45 and 48 m only
    assert far["num_pos"] == 1 and far["num_neg"] == 2 and far["ap"] == pytest.approx(1 / 3)
    mid = s["pooled"]["range:20-35m"]
    assert (mid["num_pos"], mid["num_neg"], mid["ap"]) == (1, 1, 0.5)
    assert s["pooled"]["range:50m+"]["num_pos"] == 1 and s["pooled"]["range:0-20m"]["ap"] == 1.0
    # where the false alarms are: at recall 50 % (2nd anomaly score 0.5) the cars at 30, 45 and 48 m
    half = s["false_alarms"]["recall_0.5"]
    assert half["false_alarms"] == 3
    by = {b["band"]: (b["voxels"], b["anomalies"], b["false_alarms"]) for b in half["by_range"]}
    assert by == {"0-20m": (2, 1, 0), "20-35m": (1, 1, 1), "35-50m": (2, 1, 2), "50m+": (1, 1, 0)}
    assert "by range: 0-20m 0" in __import__("pcdet_anomaly.evaluation.report", fromlist=["x"]).format_table(s)
    with pytest.raises(ValueError, match="RANGE_BANDS"):
        range_band_names((0, 20, 20))


def test_range_bands_follow_the_eval_grid_and_survive_sharding():
    from easydict import EasyDict
    eg = EasyDict(VOXEL_SIZE=0.5, GRID_SIZE=[1000, 1000, 64], OFFSET=[250.0, 250.0, 16.0], RANGE_BANDS=[0, 10, 30])
    rng = np.random.default_rng(1)
    whole, parts = VoxelEvaluator(eval_grid=eg), [VoxelEvaluator(eval_grid=eg), VoxelEvaluator(eval_grid=eg)]
    for i in range(4):
        dist = rng.uniform(0, 40, 300)
        vox = _ring_voxels(dist)
        vox[:, 1] += i                              # distinct voxels per frame (y shifts by i * 0.5 m)
        _, first = np.unique(vox, axis=0, return_index=True)
        vox = vox[np.sort(first)]
        lab = (rng.random(len(vox)) < 0.1).astype(np.int8)
        ids = np.where(lab == 1, 30, 14)
        sc = np.round(rng.random(len(vox)), 2)
        whole.add("S", i, vox, ids, lab, vox, sc)
        parts[i % 2].add("S", i, vox, ids, lab, vox, sc)
    parts[0].merge_state(parts[1].state())
    s = whole.summary()
    assert s == parts[0].summary()
    assert {g for g in s["pooled"] if g.startswith("range:")} == {"range:0-10m", "range:10-30m", "range:30m+"}
    total = sum(s["pooled"][g]["num_pos"] + s["pooled"][g]["num_neg"] for g in s["pooled"] if g.startswith("range:"))
    assert total == s["pooled"]["all"]["num_pos"] + s["pooled"]["all"]["num_neg"]
    fa = s["false_alarms"]["recall_0.9"]
    assert sum(b["false_alarms"] for b in fa["by_range"]) == fa["false_alarms"]
