"""STU / SemanticKITTI layout: the point-level protocol against an in-test transcription of the official
compute_point_level_ood.py (ties, distance filter, skipped frames, sklearn's dropped ROC points), the object level
against a transcription of its UQEvaluator, reader errors, calibration and an end-to-end run on the converted
synthetic set (train, tools/test.py predictions, tools/eval_points.py, the official transcription on the files)."""
import json

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import auc, average_precision_score, roc_curve

from pcdet_anomaly.config import load_config
from pcdet_anomaly.datasets import build_dataset
from pcdet_anomaly.datasets.anovox.reader import FrameError
from pcdet_anomaly.datasets.semantickitti.convert import convert_anovox
from pcdet_anomaly.datasets.semantickitti.reader import (SequenceReader, read_bin, read_kitti_calib, read_label,
                                                         read_ros_camera, remap_bilinear, undistort_map, write_bin,
                                                         write_label, _distort)
from pcdet_anomaly.evaluation.point_eval import (ObjectEvaluator, PointEvaluator, connected_components,
                                                 instances_from_scores)
from pcdet_anomaly.utils.common_utils import ROOT_DIR


# ------------------------------------------------------------------ transcription of the official code (STU repo)
class OfficialPointOOD:
    min_eval_distance, max_eval_distance, min_num_points_to_eval = 2.5, 50, 5

    def __init__(self):
        self.all_scores, self.all_labels = [], []

    def update(self, points, scores, target):
        distances = np.linalg.norm(points, axis=1)
        inlier_labels = np.where(target != 0, 0, -1)
        processed_labels = np.where(target == 2, 1, inlier_labels)
        processed_labels = np.where((distances > self.max_eval_distance) | (distances < self.min_eval_distance), -1,
                                    processed_labels)
        ignore_mask = processed_labels != -1
        labels = processed_labels[ignore_mask]
        if np.sum(labels) < self.min_num_points_to_eval:
            return
        if len(scores) != len(target):
            raise ValueError("Prediction and label count mismatch")
        self.all_scores.append(scores[ignore_mask])
        self.all_labels.append(labels)

    def compute_metrics(self):
        targets = np.concatenate(self.all_labels, axis=0)
        predictions = np.concatenate(self.all_scores, axis=0)
        AP = average_precision_score(y_true=targets, y_score=predictions)
        fpr, tpr, thresholds = roc_curve(y_true=targets, y_score=predictions)
        roc_auc = auc(fpr, tpr)
        fpr_best, optimal_threshold = 0, 0
        for tpr_val, fpr_val, thr in zip(tpr, fpr, thresholds):
            if tpr_val > 0.95:
                fpr_best, optimal_threshold = fpr_val, thr
                break
        return {"AP": AP * 100, "FPR95": fpr_best * 100, "AUROC": roc_auc * 100, "threshold": optimal_threshold}


def official_object_counts(frames, min_points=5):
    """UQEvaluator.addBatchUnknown (instance class 1) after ObjectOODMetricsCalculator.update's filtering."""
    tp = fp = fn = 0
    iou_sum = 0.0
    for points, x_sem, x_inst, y_sem_raw, y_inst in frames:
        d = np.linalg.norm(points, axis=1)
        lab = np.where(y_sem_raw == 2, 1, np.where(y_sem_raw != 0, 0, -1))
        lab = np.where((d > 50) | (d < 2.5), -1, lab)
        m = lab != -1
        y_sem = lab[m]
        if np.sum(y_sem) < min_points:
            continue
        x_sem_row, x_inst_row, y_inst_row = x_sem[m], x_inst[m] + 1, y_inst[m] + 1
        x_in = x_inst_row * (x_sem_row == 1).astype(np.int64)
        y_in = y_inst_row * (y_sem == 1).astype(np.int64)
        unique_pred, counts_pred = np.unique(x_in[x_in > 0], return_counts=True)
        id2idx_pred = {i: k for k, i in enumerate(unique_pred)}
        matched_pred = np.array([False] * unique_pred.shape[0])
        unique_gt, counts_gt = np.unique(y_in[y_in > 0], return_counts=True)
        id2idx_gt = {i: k for k, i in enumerate(unique_gt)}
        matched_gt = np.array([False] * unique_gt.shape[0])
        valid = np.logical_and(x_in > 0, y_in > 0)
        combo = x_in[valid] + 2 ** 32 * y_in[valid]
        unique_combo, counts_combo = np.unique(combo, return_counts=True)
        gt_labels, pred_labels = unique_combo // 2 ** 32, unique_combo % 2 ** 32
        gt_areas = np.array([counts_gt[id2idx_gt[i]] for i in gt_labels])
        pred_areas = np.array([counts_pred[id2idx_pred[i]] for i in pred_labels])
        unions = gt_areas + pred_areas - counts_combo
        ious = counts_combo.astype(np.float64) / unions.astype(np.float64)
        tp_idx = ious > 0.5
        tp += int(np.sum(tp_idx))
        iou_sum += float(np.sum(ious[tp_idx]))
        matched_gt[[id2idx_gt[i] for i in gt_labels[tp_idx]]] = True
        matched_pred[[id2idx_pred[i] for i in pred_labels[tp_idx]]] = True
        fn += int(np.sum(np.logical_and(counts_gt >= min_points, matched_gt == False)))  # noqa: E712
        fp += int(np.sum(np.logical_and(counts_pred >= min_points, matched_pred == False)))  # noqa: E712
    return tp, fp, fn, iou_sum


def random_frames(seed, n_frames=8, n=3000):
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(n_frames):
        pts = rng.normal(0, 25, (n, 3)).astype(np.float32)
        pts[:4] = [[2.5, 0, 0], [50, 0, 0], [0, 0, 2.4999], [0, 50.001, 0]]     # on and just beyond the limits
        sem = rng.choice([0, 1, 40, 48, 70, 2], size=n, p=[0.05, 0.1, 0.4, 0.2, 0.2, 0.05])
        if f % 3 == 0:       # frames with fewer than 5 anomaly points in range: skipped
            sem[sem == 2] = 40
            sem[10:13] = 2
        scores = np.round(rng.random(n) * 20) / 20                                  # heavy ties
        scores[sem == 2] = np.clip(scores[sem == 2] + 0.3, 0, 1)
        frames.append((pts, sem, scores.astype(np.float32)))
    return frames


def test_point_protocol_equals_official_transcription():
    for seed in range(3):
        official, ours = OfficialPointOOD(), PointEvaluator()
        for i, (pts, sem, scores) in enumerate(random_frames(seed)):
            official.update(pts, scores, sem)
            ours.add("100", i, pts, sem, scores)
        ref = official.compute_metrics()
        got = ours.summary()
        assert got["stu"]["AP"] == ref["AP"] and got["stu"]["AUROC"] == ref["AUROC"], (got["stu"], ref)
        assert got["stu"]["FPR95"] == ref["FPR95"] and got["stu"]["threshold"] == ref["threshold"], (got["stu"], ref)
        assert ours.coverage["frames_skipped"] == 3 and got["frames"] == 5
        # the boundary points: 2.5 m and 50 m count, 2.4999 and 50.001 do not
        labels = ours.arrays("all")[0]
        assert len(labels) == sum(len(a) for a in official.all_labels)


def test_fpr95_uses_sklearns_dropped_roc_points():
    """95 positives alone at the top, then five ties of one positive and one negative: the ROC points (1, 96) ..
    (4, 99) are collinear and sklearn drops them, so the first kept point with TPR > 0.95 is (5, 100): FPR 0.05, not
    the 0.01 an undropped curve gives."""
    scores = np.r_[np.linspace(1.0, 0.9, 95), np.repeat([0.8, 0.7, 0.6, 0.5, 0.4], 2), np.linspace(0.3, 0.0, 95)]
    sem = np.r_[np.full(95, 2), np.tile([2, 40], 5), np.full(95, 40)]
    pts = np.tile([[10.0, 0, 0]], (len(sem), 1)).astype(np.float32)
    official, ours = OfficialPointOOD(), PointEvaluator()
    official.update(pts, scores.astype(np.float32), sem)
    ours.add("100", 0, pts, sem, scores)
    assert official.compute_metrics()["FPR95"] == pytest.approx(5.0)
    assert ours.summary()["stu"]["FPR95"] == official.compute_metrics()["FPR95"]


def test_point_evaluator_errors_and_shards():
    pts = np.zeros((10, 3), np.float32) + 10
    with pytest.raises(ValueError, match="9 scores for 10 labelled points"):
        PointEvaluator().add("100", 0, pts, np.full(10, 2), np.zeros(9), source="x.txt")
    frames = random_frames(7)
    whole, a, b = PointEvaluator(), PointEvaluator(), PointEvaluator()
    for i, (p, s, sc) in enumerate(frames):
        whole.add("100", i, p, s, sc)
        (a if i % 2 else b).add("100", i, p, s, sc)
    a.merge_state(b.state())
    assert a.summary()["stu"] == whole.summary()["stu"]


def test_object_level_equals_official_transcription():
    rng = np.random.default_rng(5)
    frames, ours = [], ObjectEvaluator()
    for f in range(6):
        centres = rng.uniform(-30, 30, (5, 3))       # 4 anomalies and one normal object the model flags
        pts = np.concatenate([c + rng.normal(0, 0.4, (30, 3)) for c in centres] + [rng.uniform(-45, 45, (300, 3))])
        gt_inst = np.r_[np.repeat([1, 2, 3, 4], 30), np.zeros(330, int)]
        sem = np.where(gt_inst > 0, 2, 40)
        sem[rng.random(len(sem)) < 0.03] = 0
        scores = np.where(gt_inst > 0, rng.uniform(0.3, 1.0, len(sem)), rng.uniform(0, 0.6, len(sem)))
        scores[120:150] = rng.uniform(0.55, 1.0, 30)                 # false positive object
        scores[90:120] = rng.uniform(0.0, 0.52, 30)                  # a missed anomaly (a few points above 0.5)
        x_sem, x_inst = instances_from_scores(pts, scores, 0.5, 1.0)
        frames.append((pts.astype(np.float32), x_sem, x_inst, sem, gt_inst))
        ours.add(pts.astype(np.float32), x_sem, x_inst, sem, gt_inst)
    tp, fp, fn, iou_sum = official_object_counts(frames)
    m = ours.metrics()
    assert (m["TP"], m["FP"], m["FN"]) == (tp, fp, fn) and tp > 0 and fp > 0 and fn > 0
    assert m["SQ"] == pytest.approx(iou_sum / tp * 100)


def test_connected_components_are_dbscan_min_samples_1():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 10, (400, 3))
    ours = connected_components(pts, 0.8)
    ref = DBSCAN(eps=0.8, min_samples=1).fit(pts).labels_
    pairs = lambda lab: {(i, j) for i in range(0, 400, 7) for j in range(0, 400, 5) if lab[i] == lab[j]}
    assert pairs(ours) == pairs(ref) and len(set(ours)) == len(set(ref)) > 5


# ------------------------------------------------------------------ files and calibration
def test_bin_label_roundtrip_and_errors(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    write_bin(tmp_path / "velodyne" / "000000.bin", pts)
    sem, inst = np.arange(50) % 7, np.arange(50) % 3
    write_label(tmp_path / "labels" / "000000.label", sem, inst)
    assert np.array_equal(read_bin(tmp_path / "velodyne" / "000000.bin"), pts)
    s, i = read_label(tmp_path / "labels" / "000000.label", 50)
    assert np.array_equal(s, sem) and np.array_equal(i, inst)
    raw = np.fromfile(tmp_path / "labels" / "000000.label", np.uint32)
    assert np.array_equal(raw & 0xFFFF, sem) and np.array_equal(raw >> 16, inst)
    truncated = tmp_path / "velodyne" / "000001.bin"
    truncated.write_bytes((tmp_path / "velodyne" / "000000.bin").read_bytes()[:-6])
    with pytest.raises(FrameError, match=r"000001\.bin.*not a multiple of 16"):
        read_bin(truncated)
    with pytest.raises(FrameError, match=r"000000\.label.*50 labels, its scan has 49"):
        read_label(tmp_path / "labels" / "000000.label", 49)
    with pytest.raises(FrameError, match=r"000009\.label.*missing"):
        read_label(tmp_path / "labels" / "000009.label", 5)


def test_stu_camera_config_tf_chain_and_undistortion(tmp_path):
    """STU's published calibration (camera_config/ of kumuji/stu_dataset, port_a_camera_0): our TF chain gives the
    rotation STU's own image loader hard-codes as ZYX Euler angles (its yaw and roll differ by 0.004 rad, swapped);
    a point drawn where plumb_bob distortion puts it lands on the pinhole projection after undistortion."""
    (tmp_path / "intrinsics.txt").write_text(
        'port_a_camera_0:\nheader:\n  frame_id: "port_a_camera_0"\nheight: 120\nwidth: 192\n'
        'distortion_model: "plumb_bob"\nD: [-0.260735, 0.046071, 0.001173, -0.000154, 0.0]\n'
        'K: [182.748989, 0.0, 92.591346, 0.0, 183.588358, 64.207154, 0.0, 0.0, 1.0]\n')
    (tmp_path / "extrinsics.txt").write_text(
        'transforms:\n  -\n    header:\n      frame_id: "base_link"\n    child_frame_id: "os_sensor"\n    transform:\n'
        '      translation: {x: 0.7, y: 0.0, z: 1.8}\n      rotation: {x: 0.0, y: 0.0, z: 0.005, w: 0.99998750}\n'
        '---\ntransforms:\n  -\n    header:\n      frame_id: "os_sensor"\n    child_frame_id: "port_a_camera_0"\n'
        '    transform:\n      translation: {x: 0.7658, y: 0.0124, z: -0.3925}\n'
        '      rotation: {x: -0.496146480946, y: 0.498388981228, z: -0.494329641699, w: 0.510965065512}\n')
    calib, model, D = read_ros_camera(tmp_path, "port_a_camera_0", "os_sensor")
    from scipy.spatial.transform import Rotation
    R_stu = Rotation.from_euler("ZYX", [-1.5599, 0.0188, -1.5563]).as_matrix()
    cam_pose = np.linalg.inv(calib.lidar_to_cam)
    assert np.allclose(cam_pose[:3, 3], [0.7658, 0.0124, -0.3925])
    assert np.degrees(Rotation.from_matrix(cam_pose[:3, :3] @ R_stu.T).magnitude()) < 0.5
    forward = calib.lidar_to_cam @ np.array([10.0, 0.0, 0.0, 1.0])      # 10 m ahead of the LiDAR: in front
    assert forward[2] > 9
    # undistortion: a dot drawn at the distorted position of a 3D point lands at its pinhole pixel
    K = calib.intrinsics
    p = np.array([1.5, -0.8, 4.0])
    x, y = p[0] / p[2], p[1] / p[2]
    xd, yd = _distort(np.array([x]), np.array([y]), model, D)
    u_d, v_d = K[0, 0] * xd[0] + K[0, 2], K[1, 1] * yd[0] + K[1, 2]
    u, v = K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]
    assert abs(u - u_d) + abs(v - v_d) > 3          # the distortion is visible at this pixel
    img = np.zeros((120, 192, 3), np.uint8)
    img[int(round(v_d)) - 1:int(round(v_d)) + 2, int(round(u_d)) - 1:int(round(u_d)) + 2] = 255
    out = remap_bilinear(img, *undistort_map(K, (120, 192), model, D))
    vv, uu = np.unravel_index(np.argmax(out[..., 0].astype(float)), out.shape[:2])
    assert abs(uu - u) <= 1.5 and abs(vv - v) <= 1.5


def test_kitti_calib_camera_offset(tmp_path):
    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    P2 = np.concatenate([K, K @ np.array([[0.06], [0.0], [0.0]])], 1)
    Tr = np.array([[0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27]], float)
    text = "".join(f"P{k}: " + " ".join(map(str, (P2 if k == 2 else np.c_[K, np.zeros(3)]).ravel())) + "\n"
                   for k in range(4)) + "Tr: " + " ".join(map(str, Tr.ravel())) + "\n"
    (tmp_path / "calib.txt").write_text(text)
    calib = read_kitti_calib(tmp_path / "calib.txt", 2, (370, 1226))
    p = np.array([20.0, 1.0, -0.5, 1.0])
    uvw = P2 @ np.r_[Tr @ p, 1.0]            # KITTI: x_img = P2 @ Tr @ X
    mine = calib.intrinsics @ (calib.lidar_to_cam @ p)[:3]
    assert np.allclose(uvw[:2] / uvw[2], mine[:2] / mine[2])
    (tmp_path / "bad.txt").write_text("P2: 1 2 3\n")
    with pytest.raises(FrameError, match=r"bad\.txt.*'P2' with 12 numbers"):
        read_kitti_calib(tmp_path / "bad.txt")


# ------------------------------------------------------------------ the dataset on the converted synthetic set
@pytest.fixture(scope="module")
def sk_root(synth_root, tmp_path_factory):
    root, _ = synth_root
    out = tmp_path_factory.mktemp("sk")
    names = convert_anovox(root, out, load_config(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml").DATA_CONFIG,
                           progress=False)
    return out, names


def _sk_cfg(root, cfg="cfgs/stu/synth_lidar_only_cpu.yaml"):
    cfg = load_config(ROOT_DIR / cfg)
    cfg.DATA_CONFIG.DATA_PATH = str(root)
    return cfg


def test_converted_set_and_dataset_contract(sk_root, synth_root):
    root, names = sk_root
    assert sorted(names) == [f"{100 + i}" for i in range(4)]
    cfg = _sk_cfg(root)
    d = cfg.DATA_CONFIG
    d.SPLIT.MODE, d.SPLIT.LISTS = "lists", {"train": ["10[0-2]"], "val": [], "test": ["103"]}
    ds = build_dataset(d, "train", True)
    assert ds.scenarios == ["100", "101", "102"] and ds.eval_protocol == "point"
    s = ds[0]
    assert {"points", "voxel_coords", "point2voxel", "point_labels", "voxel_labels", "aug_matrix"} <= set(s)
    # every AnoVox point keeps its label: anomaly points of the AnoVox dataset = raw id 2 of the converted labels
    from pcdet_anomaly.datasets.anovox.dataset import AnoVoxDataset
    acfg = load_config(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml").DATA_CONFIG
    acfg.DATA_PATH = str(synth_root[0])
    av = AnoVoxDataset(acfg, "all", False)
    total_av = total_sk = 0
    for seq, scen in names.items():
        r = av.readers[scen]
        for f in r.frames:
            pts = r.read_points(f)
            total_av += int((av.targets.binary(av.point_label_ids(r, f, pts)) == 1).sum())
            total_sk += int((np.fromfile(root / seq / "labels" / f"{f:06d}.label", np.uint32) & 0xFFFF == 2).sum())
    assert total_av == total_sk > 0
    # the camera path reads image_2 and calib.txt: LiDAR points land inside the image in front of the car
    fcfg = _sk_cfg(root, "cfgs/stu/synth_fusion_cpu.yaml")
    fds = build_dataset(fcfg.DATA_CONFIG, "all", False)
    sample = fds[0]
    assert sample["image"].shape == (3, *fcfg.DATA_CONFIG.IMAGE.SIZE)
    reader = fds.readers["100"]
    assert np.allclose(reader.calibration.lidar_to_cam, av.readers[names["100"]].calibration.lidar_to_cam, atol=1e-9)
    # images missing -> a clear error naming the camera folder and the LiDAR-only alternative
    fcfg.DATA_CONFIG.CAMERA.IMAGE_DIR = "port_a_cam_0"
    with pytest.raises(FrameError, match="no image folder 'port_a_cam_0'.*LiDAR-only"):
        build_dataset(fcfg.DATA_CONFIG, "all", False)


def test_bad_frames_in_dataset(sk_root, tmp_path):
    import shutil
    root, _ = sk_root
    work = tmp_path / "seqs"
    shutil.copytree(root / "100", work / "100")
    lab = sorted((work / "100" / "labels").glob("*.label"))
    lab[0].write_bytes(lab[0].read_bytes()[:-4])                       # wrong length
    lab[1].unlink()                                                    # missing
    cfg = _sk_cfg(work)
    d = cfg.DATA_CONFIG
    d.SPLIT.MODE, d.SPLIT.LISTS = "lists", {"train": [], "val": [], "test": ["100"]}
    ds = build_dataset(d, "test", False)
    out = [ds[i] for i in range(len(ds))]
    bad = [o for o in out if "bad_frame" in o]
    assert len(bad) == 2 and "labels" in bad[0]["error"] and "its scan has" in bad[0]["error"]
    assert "missing" in bad[1]["error"]
    d.BAD_FRAME_POLICY = "stop"
    with pytest.raises(FrameError, match=r"\.label"):
        build_dataset(d, "test", False)[0]


def test_end_to_end_on_semantickitti_layout(sk_root, tmp_path):
    """Train a tiny LiDAR-only model on the layout, write STU predictions with tools/test.py, evaluate them with
    tools/eval_points.py; the official transcription over the same files gives the same numbers."""
    import subprocess
    import sys
    root, names = sk_root
    cfg = _sk_cfg(root)
    d = cfg.DATA_CONFIG
    d.SPLIT.MODE, d.SPLIT.LISTS = "lists", {"train": ["100"], "val": ["101"], "test": ["10[2-3]"]}
    d.MAX_POINTS, d.VOXELIZE.GRID_SIZE = 8000, [60, 60, 8]
    cfg.MODEL.BACKBONE_3D.INIT_SIZE = 4
    cfg.OPTIMIZATION.NUM_EPOCHS, cfg.TRAIN.NUM_WORKERS = 1, 0
    from pcdet_anomaly.config import save_config
    cfg_path = tmp_path / "cfg.yaml"
    save_config(cfg, cfg_path)
    run = tmp_path / "run"
    for tool in ("train.py", "test.py"):
        proc = subprocess.run([sys.executable, str(ROOT_DIR / "tools" / tool), "--cfg", str(cfg_path), "--output_dir",
                               str(run), "--no_progress"], cwd=ROOT_DIR, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    pred = run / "eval" / "best" / "test" / "predictions"
    in_memory = json.loads((pred.parent / "metrics.json").read_text())
    files = sorted(pred.glob("*/*.txt"))
    assert {f.parent.name for f in files} == {"102", "103"}
    official = OfficialPointOOD()
    for f in files:           # the official main loop: every prediction file, its scan and its labels
        scan = np.fromfile(root / f.parent.name / "velodyne" / f"{f.stem}.bin", np.float32).reshape(-1, 4)
        sem = np.fromfile(root / f.parent.name / "labels" / f"{f.stem}.label", np.uint32).astype(np.int32) & 0xFFFF
        scores = np.loadtxt(f).astype(np.float32)
        assert len(scores) == len(scan)                                # every point of the scan has a score
        official.update(scan[:, :3], scores, sem)
    ref = official.compute_metrics()
    assert in_memory["stu"]["AP"] == pytest.approx(ref["AP"], abs=1e-12)
    assert in_memory["stu"]["AUROC"] == pytest.approx(ref["AUROC"], abs=1e-12)
    assert in_memory["stu"]["FPR95"] == pytest.approx(ref["FPR95"], abs=1e-12)
    from tools.eval_points import main as eval_points
    folder = eval_points(["--data", str(root), "--pred", str(pred), "--out", str(tmp_path / "ev"), "--no_progress",
                          "--cfg", str(cfg_path)])
    assert folder["stu"] == in_memory["stu"] and folder["object"]["FN"] == in_memory["object"]["FN"]
    assert (tmp_path / "ev" / "metrics_points.txt").read_text().count("STU point level") == 1
    # a missing prediction is an error unless allowed (and then listed)
    files[0].unlink()
    with pytest.raises(Exception, match="predictions missing"):
        eval_points(["--data", str(root), "--pred", str(pred), "--out", str(tmp_path / "ev2"), "--no_progress",
                     "--cfg", str(cfg_path)])
    partial = eval_points(["--data", str(root), "--pred", str(pred), "--out", str(tmp_path / "ev2"), "--no_progress",
                           "--cfg", str(cfg_path), "--allow_missing"])
    assert partial["missing_predictions"]["num_frames"] == 1


def test_learning_map_feeds_semantic_classes(sk_root):
    """cfgs/stu/synth_normality_cpu.yaml: raw SemanticKITTI ids -> learning map -> grouped classes; anomalies (raw 2)
    and ignored points (raw 0) are ignored by the semantic head, and only normality sequences train."""
    root, _ = sk_root
    cfg = _sk_cfg(root, "cfgs/stu/synth_normality_cpu.yaml")
    d = cfg.DATA_CONFIG
    ds = build_dataset(d, "all", False)
    seq = ds.scenarios[0]
    pts, raw, _ = ds.read_frame(seq, ds.readers[seq].frames[0])
    sem = ds.semantic_targets(raw)
    assert (sem[raw == 40] == 0).all() and (sem[raw == 48] == 1).all() and (sem[raw == 10] == 7).all()
    assert (sem[raw == 2] == 255).all() and (sem[raw == 0] == 255).all() and (raw == 40).any()
    train = build_dataset(d, "train", True)
    assert all(not train._has_anomaly(train.readers[n]) for n in train.scenarios)
    s = train[0]
    assert set(np.unique(s["point_semantic"])) <= set(range(8)) | {255} and (s["point_labels"] != 1).all()


def test_label_scan_is_shared_and_reads_each_file_once(sk_root, monkeypatch):
    """The normality-only split and anomaly-frame-aware sampling both ask which frames hold an anomaly: each .label
    file is read once for both, and the answers match the files."""
    from pcdet_anomaly.datasets import anomaly_frame_weights
    root, _ = sk_root
    cfg = _sk_cfg(root)
    d = cfg.DATA_CONFIG
    d.SPLIT.MODE, d.SPLIT.LISTS = "lists", {"train": ["10[0-3]"], "val": [], "test": []}
    ds = build_dataset(d, "train", False)
    reads = []
    real = np.fromfile
    monkeypatch.setattr(np, "fromfile", lambda path, *a, **k: (reads.append(str(path)), real(path, *a, **k))[1])
    weights = anomaly_frame_weights(ds, 3.0)
    label_reads = [p for p in reads if p.endswith(".label")]
    assert len(label_reads) == len(set(label_reads)) == len(ds.frames)
    truth = [bool(((real(root / n / "labels" / f"{f:06d}.label", np.uint32) & 0xFFFF) == 2).any())
             for n, f in ds.frames]
    assert 0 < sum(truth) < len(truth)
    assert weights == [3.0 if t else 1.0 for t in truth]
    reads.clear()
    assert [ds._has_anomaly(ds.readers[n]) for n in ds.scenarios] == [
        any(t for (m, _), t in zip(ds.frames, truth) if m == n) for n in ds.scenarios]
    assert anomaly_frame_weights(ds, 3.0) == weights
    assert not [p for p in reads if p.endswith(".label")]       # the sequence scan and a second draw read nothing
