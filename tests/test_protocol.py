"""Protocol fidelity: official AnoVox files in (a fixture written from the official field list, not by our writer),
official AnoVox numbers out (against an in-test transcription of the official `compute_metrics`), every ground-truth
voxel accounted for."""
import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import auc, average_precision_score, confusion_matrix, f1_score, roc_curve

from pcdet_anomaly.config import load_config
from pcdet_anomaly.datasets import build_dataset
from pcdet_anomaly.datasets.anovox.reader import ScenarioReader, anomaly_rows, list_scenarios
from pcdet_anomaly.datasets.anovox.zshift import ZShiftError, detect_z_shift, resolve_z_shift
from pcdet_anomaly.evaluation import VoxelEvaluator, anovox_threshold_metrics, ranking_metrics
from pcdet_anomaly.evaluation.folder_eval import PredictionError, evaluate_folder
from pcdet_anomaly.evaluation.report import format_table
from pcdet_anomaly.utils.common_utils import ROOT_DIR

sys.path.insert(0, str(ROOT_DIR / "tools"))
CFG = load_config(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml")
LABELS, EG = CFG.DATA_CONFIG.LABELS, CFG.DATA_CONFIG.EVAL_GRID


# ----------------------------------------------------------------------------------------------------------------
# A transcription of the official benchmark/eval/metrics.py compute_metrics (AUROC, AP, FPR95, F1, precision)
def official_compute_metrics(preds, gts):
    ap = average_precision_score(gts, preds)
    fpr, tpr, _ = roc_curve(gts, preds)
    auroc = auc(fpr, tpr)
    fpr95 = None
    for threshold in np.arange(1, -0.01, -0.01):
        preds_bin = np.where(preds > threshold, 1, 0)
        tn, fp, fn, tp = confusion_matrix(gts, preds_bin).ravel()
        if tp / (tp + fn) >= 0.95:
            fpr95 = fp / (fp + tn)
            break
    precision_scores, f1_scores = [], []
    for threshold in np.arange(start=0.25, stop=0.75, step=0.05):
        preds_bin = np.where(preds > threshold, 1, 0)
        tn, fp, fn, tp = confusion_matrix(gts, preds_bin).ravel()
        precision_scores.append(tp / (tp + fp) if (tp + fp) else 0)
        f1_scores.append(f1_score(gts, preds_bin, zero_division=0))
    return {"auroc": float(auroc), "aupr": float(ap), "fpr95": float(fpr95), "f1_score": float(np.mean(f1_scores)),
            "ppv": float(np.mean(precision_scores))}


def ours(preds, gts):
    r = ranking_metrics(gts, preds)
    t = anovox_threshold_metrics(gts, preds)
    return {"auroc": r.auroc, "aupr": r.ap, "fpr95": t["fpr95_anovox"], "f1_score": t["f1_mean"],
            "ppv": t["precision_mean"]}


@pytest.mark.parametrize("seed", range(6))
def test_official_metrics_bit_equal_on_threshold_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 3000))
    gts = (rng.random(n) < rng.uniform(0.02, 0.4)).astype(np.int64)
    # scores rounded to 2 decimals: many sit exactly on the official thresholds (0.41, 0.45, ...), 0 and 1 included
    preds = np.clip(np.round(0.35 * gts + rng.random(n) * 0.7, 2), 0, 1)
    preds[:5] = [0.0, 1.0, 0.45, 0.41, 0.7]
    assert ours(preds, gts) == official_compute_metrics(preds, gts)       # bit-equal, not approximately


def test_official_thresholds_are_unrounded_floats():
    """The issue's case: scores on 0.40, 0.45, ... The official thresholds are np.arange floats, so a score of 0.41
    is not above the threshold printed as 0.41; rounding the thresholds (the old code) moves such ties."""
    rng = np.random.default_rng(7)
    gts = (rng.random(4000) < 0.15).astype(np.int64)
    preds = np.round(np.clip(0.25 * gts + rng.random(4000) * 0.75, 0, 1), 2)
    official = official_compute_metrics(preds, gts)
    assert ours(preds, gts) == official
    rounded = [round(t, 2) for t in np.arange(1, -0.01, -0.01)]
    assert any(t != r for t, r in zip(np.arange(1, -0.01, -0.01), rounded))
    # what rounding would have given: a different F1 on the same tied scores
    f1_rounded = np.mean([f1_score(gts, (preds > round(t, 2)).astype(int)) for t in np.arange(0.25, 0.75, 0.05)])
    assert f1_rounded != official["f1_score"]


def test_default_metrics_equal_sklearn_bitwise():
    rng = np.random.default_rng(1)
    gts = (rng.random(5000) < 0.1).astype(np.int64)
    preds = np.round(rng.random(5000) + 0.3 * gts, 3)
    r = ranking_metrics(gts, preds)
    fpr, tpr, _ = roc_curve(gts, preds)
    assert r.auroc == auc(fpr, tpr) and r.ap == average_precision_score(gts, preds)


# ----------------------------------------------------------------------------------------------------------------
# An AnoVox scenario written from the official field list (shared/docs/anovox_format.md), not by our writer.
OFFICIAL_ANOMALY = """frame_id ; {frame}
scenario_id ; 54427809-3ef8-4658-bb02-dbd9c74425aa
anomaly_id ; 271
anomaly_type_id ; static.prop.o_barbedwire_special
anomaly_is_alive ; True
semantic_tags ; [32]
location ; (102.364, -57.411, 0.276)
velocity ; (0.0, 0.0, 0.0)
acceleration ; (0.0, 0.0, 0.0)
role_name ; prop
size ; Medium
"""


def official_sensor_setup(hc="8812", hl="4471", cam_rotation=(0, 0, 0)):
    cam_args = {"image_height": 64, "image_width": 96, "camera_fov": 90.0}
    lidar_args = {"range": 100.0, "upper_fov": 15.0, "lower_fov": -25.0, "channels": 64, "rotation_frequency": 200.0,
                  "points_per_second": 1000000, "noise_stddev": 0.1, "dropoff_rate": 0.0,
                  "dropoff_intensity_limit": 0.0, "dropoff_zero_intensity": 0.0}
    setup = {}
    for stype in ("RGB-CAM", "DEPTH_CAM", "SEMANTIC-CAM", "INSTANCE-CAM"):
        setup[f"{stype}(0, 0, 1.8)(0, 0, 0)_{hc}"] = {
            "sensor_type": stype, "file_ending": ".png", "location": [0, 0, 1.8], "rotation": list(cam_rotation),
            "args": cam_args, "save_data": True}
    for stype in ("LIDAR", "SEMANTIC-LIDAR"):
        setup[f"{stype}(0, 0, 1.8)(0, 0, 0)_{hl}"] = {
            "sensor_type": stype, "file_ending": ".npy", "location": [0, 0, 1.8], "rotation": [0, 0, 0],
            "args": lidar_args, "save_data": True}
    return setup


def official_voxel_grid(points_xyz, labels, z_shift):
    idx = np.floor((points_xyz + np.array([0, 0, z_shift]) + np.array([250.0, 250.0, 16.0])) / 0.5).astype(np.int64)
    key = idx[:, 0] + 1000 * idx[:, 1] + 1_000_000 * idx[:, 2]
    _, first = np.unique(key, return_index=True)
    return np.concatenate([idx[first], labels[first, None]], 1).astype(np.uint16)


def write_official_scenario(root, name="Scenario_54427809-3ef8-4658-bb02-dbd9c74425aa", frames=(4884, 4885),
                            z_shift=-1.8, anomaly=True, cam_rotation=(0, 0, 0), road=True):
    scen = root / name
    setup = official_sensor_setup(cam_rotation=cam_rotation)
    for folder in setup:
        (scen / folder).mkdir(parents=True)
    (scen / "VOXEL_GRID").mkdir()
    (scen / "ACTION").mkdir()
    if anomaly:
        (scen / "ANOMALY").mkdir()
    (scen / "sensor_setup.json").write_text(json.dumps(setup))      # one line, default separators
    rng = np.random.default_rng(frames[0])
    folders = {s["sensor_type"]: k for k, s in setup.items()}
    for frame in frames:
        # road plane 1.8 m below the sensor, a wall, and a 1.5 m anomaly (label 32) 12 m ahead
        n = 6000
        road_xy = rng.uniform([-30, -8], [30, 8], (n, 2))
        pts = [np.c_[road_xy, np.full(n, -1.8 if road else -40.0)]]
        lab = [np.full(n, 1 if road else 3)]
        wall = np.c_[rng.uniform(-30, 30, 1500), np.full(1500, 9.0), rng.uniform(-1.8, 3, 1500)]
        pts.append(wall)
        lab.append(np.full(1500, 3))
        anom = np.c_[rng.uniform(11.5, 13.0, 400), rng.uniform(-0.7, 0.7, 400), rng.uniform(-1.8, -0.3, 400)]
        pts.append(anom)
        lab.append(np.full(400, 32 if anomaly else 3))
        xyz, labels = np.concatenate(pts), np.concatenate(lab)
        sem = np.c_[xyz, labels].astype(np.float64)
        lidar = np.c_[xyz + rng.normal(0, 0.02, xyz.shape), rng.random(len(xyz))].astype(np.float32)
        lidar_dir, sem_dir = folders["LIDAR"], folders["SEMANTIC-LIDAR"]
        np.save(scen / lidar_dir / f"{lidar_dir}_{frame}.npy", lidar)
        np.save(scen / sem_dir / f"{sem_dir}_{frame}.npy", sem)
        for stype, mode, shape in (("RGB-CAM", "RGB", (64, 96, 3)), ("DEPTH_CAM", "RGB", (64, 96, 3)),
                                   ("SEMANTIC-CAM", "L", (64, 96)), ("INSTANCE-CAM", "RGB", (64, 96, 3))):
            folder = folders[stype]
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(scen / folder / f"{folder}_{frame}.png")
        np.save(scen / "VOXEL_GRID" / f"VOXEL_GRID_{frame}.npy", official_voxel_grid(xyz, labels.astype(np.int64),
                                                                                        z_shift))
        (scen / "ACTION" / f"ACTION_{frame}.csv").write_text(f"frame_id ; {frame}\nspeed ; 4.2\n")
        if anomaly:
            (scen / "ANOMALY" / f"ANOMALY_{frame}.csv").write_text(OFFICIAL_ANOMALY.format(frame=frame))
    return scen


def test_reader_and_dataset_on_official_files(tmp_path):
    root = tmp_path / "official"
    write_official_scenario(root)
    write_official_scenario(root, "Scenario_00000000-0000-4000-8000-000000000001", frames=(9001, 9002),
                            anomaly=False)
    (root / "Scenario_Configuration_Files").mkdir()
    reader = ScenarioReader(root / "Scenario_54427809-3ef8-4658-bb02-dbd9c74425aa")
    assert reader.layout == "gen_b" and reader.frames == [4884, 4885]
    assert reader.calibration.image_hw == (64, 96)
    assert reader.calibration.intrinsics[0, 0] == pytest.approx(48.0)         # 96 / (2 tan 45 deg)
    rows = reader.anomaly_rows(4884)
    assert rows == [{"label_ids": {32}, "type": "static.prop.o_barbedwire_special", "size": "Medium",
                     "extent_m": None, "sensor_location": None, "family": None}]
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml").DATA_CONFIG
    cfg.DATA_PATH = str(root)
    cfg.IMAGE.SIZE = [64, 96]
    cfg.SPLIT.RATIOS = [1.0, 0.0, 0.0]
    ds = build_dataset(cfg, "train", training=True)            # the split metadata used to crash on int(blueprint)
    assert ds.meta["Scenario_54427809-3ef8-4658-bb02-dbd9c74425aa"]["labels"] == {32}
    assert ds.meta["Scenario_00000000-0000-4000-8000-000000000001"]["normality"]
    i = next(i for i, (name, _) in enumerate(ds.frames) if name == reader.name)
    sample = ds[i]
    assert (sample["point_labels"] == 1).sum() > 300         # labels come through the detected z shift
    assert ds.z_shift(reader.name) == -1.8


def test_official_rotation_is_roll_pitch_yaw(tmp_path):
    """rotation (x_rot, y_rot, z_rot) = (roll, pitch, yaw): a camera with z_rot 90 looks to the right, so a LiDAR
    point 10 m to the right projects to the image centre at depth 10."""
    scen = write_official_scenario(tmp_path, cam_rotation=(0, 0, 90), frames=(1,))
    cal = ScenarioReader(scen).calibration
    cam = cal.lidar_to_cam @ np.array([0.0, -10.0, 0.0, 1.0])
    assert cam[:3] == pytest.approx([0.0, 0.0, 10.0], abs=1e-9)


@pytest.mark.parametrize("z_shift", [-1.8, 0.0])
def test_z_shift_detected_from_the_data(tmp_path, z_shift):
    scen = write_official_scenario(tmp_path, z_shift=z_shift)
    reader = ScenarioReader(scen)
    evidence = detect_z_shift(reader, EG)
    assert evidence.shift == z_shift, evidence.describe()
    assert resolve_z_shift(reader, EG) == z_shift
    # a configured number that the data contradicts is an error that names the scenario
    wrong = dict(EG)
    wrong["Z_SHIFT"] = 0.0 if z_shift else -1.8
    with pytest.raises(ZShiftError, match=f"{scen.name}.*data says"):
        resolve_z_shift(ScenarioReader(scen), type("G", (), wrong))


def test_z_shift_undecidable_is_an_error(tmp_path):
    scen = write_official_scenario(tmp_path, road=False)
    with pytest.raises(ZShiftError, match="cannot tell"):
        resolve_z_shift(ScenarioReader(scen), EG)


def test_synthetic_writer_follows_the_official_fields(synth_root):
    root, _ = synth_root
    official_keys = ["frame_id", "scenario_id", "anomaly_id", "anomaly_type_id", "anomaly_is_alive", "semantic_tags",
                     "location", "velocity", "acceleration", "role_name", "size"]
    seen_anomaly = False
    for scen in list_scenarios(root):
        text = (scen / "sensor_setup.json").read_text()
        assert "\n" not in text.strip()
        setup = json.loads(text)
        folders = {p.name for p in scen.iterdir() if p.is_dir()}
        assert set(setup) <= folders and len(setup) == 6
        assert [v["sensor_type"] for v in setup.values()] == ["RGB-CAM", "DEPTH_CAM", "SEMANTIC-CAM", "INSTANCE-CAM",
                                                              "LIDAR", "SEMANTIC-LIDAR"]
        for key, v in setup.items():
            assert key.startswith(v["sensor_type"] + "(") and v["file_ending"] in (".png", ".npy")
        assert set(setup[next(iter(setup))]["args"]) == {"image_height", "image_width", "camera_fov"}
        for f in sorted((scen / "ANOMALY").glob("*.csv")) if (scen / "ANOMALY").is_dir() else []:
            seen_anomaly = True
            lines = f.read_text().splitlines()
            assert [ln.split(" ; ")[0] for ln in lines[:11]] == official_keys
            rec = dict(ln.split(" ; ", 1) for ln in lines)
            assert rec["anomaly_type_id"].startswith(("static.prop.o_", "dynamic.prop.o_"))
            assert rec["size"] in ("Tiny", "Small", "Medium", "Big", "Huge")
            assert rec["location"].startswith("(") and rec["anomaly_is_alive"] == "True"
    assert seen_anomaly


def test_legacy_files_still_read(tmp_path):
    """Files this project wrote before the official format: sensor_setup keys without the hash, image_size_x / fov,
    rotation [pitch, yaw, roll], a label id as anomaly_type_id, a numeric size."""
    scen = write_official_scenario(tmp_path, frames=(3,))
    legacy = {}
    for key, v in json.loads((scen / "sensor_setup.json").read_text()).items():
        v = dict(v, sensor_type="sensor.camera.rgb" if v["sensor_type"] == "RGB-CAM" else "sensor.lidar.ray_cast",
                 file_ending=v["file_ending"][1:], rotation=[0, 90, 0])     # [pitch, yaw, roll]: yaw 90
        if "image_width" in v["args"]:
            v["args"] = {"image_size_x": 96, "image_size_y": 64, "fov": 90}
        legacy[key.rsplit("_", 1)[0]] = v
    (scen / "sensor_setup.json").write_text(json.dumps(legacy, indent=2))
    (scen / "ANOMALY" / "ANOMALY_3.csv").write_text("anomaly_type_id ; 32\nsemantic_tags ; [32]\nsize ; 1.4\n")
    reader = ScenarioReader(scen)
    assert reader.calibration.intrinsics[0, 0] == pytest.approx(48.0)
    # camera and LiDAR carry the same legacy rotation: the relative pose is the identity
    assert reader.calibration.lidar_to_cam[:3, :3] == pytest.approx(np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]]))
    assert anomaly_rows(reader.read_anomaly(3))[0]["extent_m"] == 1.4


# ----------------------------------------------------------------------------------------------------------------
def _frame(ev, scene="S", frame=1, rows=()):
    gt = np.array([[500 + i, 500, 24] for i in range(10)])
    ids = np.array([32, 32, 1, 1, 1, 1, 3, 3, 3, 3])
    lab = (ids == 32).astype(np.int8)
    pred_vox = gt[[0, 2, 3, 4, 5, 6, 7]]         # one anomalous and two normal voxels unpredicted
    pred = np.array([0.9, 0.2, 0.1, 0.3, 0.4, 0.6, 0.05])
    ev.add(scene, frame, gt, ids, lab, np.r_[pred_vox, [[10, 10, 10]]], np.r_[pred, 0.5], rows)
    return gt, lab


def test_coverage_and_both_policies_in_every_report():
    ev = VoxelEvaluator(max_range=50.0)
    _frame(ev)
    s = ev.summary()
    c = s["coverage"]
    assert (c["gt_voxels"], c["gt_voxels_predicted"], c["gt_voxels_unpredicted"]) == (10, 7, 3)
    assert (c["anomaly_voxels"], c["anomaly_voxels_predicted"], c["anomaly_voxels_unpredicted"]) == (2, 1, 1)
    assert c["pred_voxels_without_gt"] == 1 and "50 m" in c["range"]
    zero, inter = s["policies"]["zero"]["pooled"]["all"], s["policies"]["intersect"]["pooled"]["all"]
    assert (zero["num_pos"], zero["num_neg"]) == (2, 8) and (inter["num_pos"], inter["num_neg"]) == (1, 6)
    assert s["policy"] == "zero" and s["pooled"]["all"] == zero
    # zero: the unpredicted anomaly voxel scores 0, below 6 of the 8 normals
    labels = np.r_[1, 1, np.zeros(8)]
    scores = np.r_[0.9, 0.0, 0.2, 0.1, 0.3, 0.4, 0.6, 0.05, 0.0, 0.0]
    assert zero["ap"] == ranking_metrics(labels, scores).ap
    table = format_table(s)
    assert "coverage" in table and "[zero] pooled: all" in table and "[intersect] pooled: all" in table


def test_groups_by_voxel_not_by_first_anomaly():
    rows = [{"label_ids": {32}, "type": "static.prop.o_a_special", "size": "Medium", "extent_m": 1.2,
             "sensor_location": (0.25, 0.25, 0.0), "family": None},
            {"label_ids": {32}, "type": "static.prop.o_b_special", "size": "Tiny", "extent_m": 0.3,
             "sensor_location": (0.75, 0.25, 0.0), "family": None}]
    ev = VoxelEvaluator()
    _frame(ev, rows=rows)      # voxel 0 (x centre 0.25 m) is anomaly a's, voxel 1 (0.75 m) is b's
    pooled = ev.summary()["pooled"]
    assert pooled["size:Medium"]["num_pos"] == 1 and pooled["size:Tiny"]["num_pos"] == 1
    assert pooled["size:Medium"]["num_neg"] == 8 and pooled["type:static.prop.o_b_special"]["num_pos"] == 1
    assert pooled["label:32"]["num_pos"] == 2 and "extent:medium (0.5-1.5 m)" in pooled


def test_out_of_grid_predictions_are_refused(synth_root, tmp_path):
    root, _ = synth_root
    scen = list_scenarios(root)[0]
    reader = ScenarioReader(scen)
    pred = tmp_path / "pred" / scen.name
    pred.mkdir(parents=True)
    for frame in reader.frames:
        np.save(pred / f"VOXEL_PRED_{frame}.npy", np.array([[500.0, 500, 24, 0.5], [1000, 3, 24, 0.1]]))
    with pytest.raises(PredictionError, match=r"VOXEL_PRED_\d+\.npy: 1 predicted voxel\(s\) outside the evaluation grid"):
        evaluate_folder(root, tmp_path / "pred", LABELS, EG, allow_missing=True)


def test_eval_voxels_needs_only_ground_truth(synth_root, tmp_path):
    """An evaluation server's copy: VOXEL_GRID and ANOMALY only."""
    import eval_voxels
    root, _ = synth_root
    gt_only = tmp_path / "gt_only"
    pred = tmp_path / "pred"
    for scen in list_scenarios(root):
        for folder in ("VOXEL_GRID", "ANOMALY"):
            if (scen / folder).is_dir():
                shutil.copytree(scen / folder, gt_only / scen.name / folder)
        (pred / scen.name).mkdir(parents=True)
        for f in (scen / "VOXEL_GRID").glob("*.npy"):
            grid = np.load(f).astype(np.float64)
            score = np.isin(grid[:, 3], LABELS.ANOMALY_IDS) * 0.8 + 0.1
            np.save(pred / scen.name / f.name.replace("VOXEL_GRID", "PRED"), np.c_[grid[:, :3], score][::2])
    summary = eval_voxels.main(["--data", str(gt_only), "--pred", str(pred), "--out", str(tmp_path / "rep"),
                                "--protocol", "anovox"])
    cov = summary["coverage"]
    assert cov["gt_voxels_predicted"] < cov["gt_voxels"] and cov["max_range_m"] == 50.0
    assert summary["policies"]["intersect"]["pooled"]["all"]["auroc"] == 1.0
    assert summary["policies"]["zero"]["pooled"]["all"]["auroc"] < 1.0
    assert "coverage" in (tmp_path / "rep" / "metrics.txt").read_text()


def test_inference_sees_every_point(synth_root):
    root, _ = synth_root
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml").DATA_CONFIG
    cfg.DATA_PATH = str(root)
    cfg.MAX_POINTS = 1000
    cfg.IMAGE.ENABLED = False
    train = build_dataset(cfg, "all", training=True)
    test = build_dataset(cfg, "all", training=False)
    reader = test.readers[test.frames[0][0]]
    pts = reader.read_points(test.frames[0][1])
    r = cfg.POINT_FILTER_RANGE
    inside = np.all((pts[:, :3] >= r[:3]) & (pts[:, :3] < r[3:]), axis=1).sum()
    assert len(test[0]["points"]) == inside > 1000
    assert len(train[0]["points"]) <= 1000


def test_fill_radius_predicts_empty_voxels_near_points():
    from pcdet_anomaly.evaluation.fill import fill_around_points
    # two points in voxel (500, 500, 32) (shift 0, 0.5 m grid, sensor at the grid centre) and one 3 m away
    pts = np.array([[0.1, 0.1, 0.1], [0.4, 0.2, 0.1], [3.1, 0.1, 0.1]])
    sc = np.array([0.9, 0.8, 0.2])
    vox = np.array([[500, 500, 32], [506, 500, 32]])
    vs = np.array([0.85, 0.2])
    out_v, out_s = fill_around_points(pts, sc, vox, vs, 0.5, 0.5, (1000, 1000, 64), (250.0, 250.0, 16.0), 0.0)
    table = {tuple(v): s for v, s in zip(out_v.tolist(), out_s)}
    assert table[(500, 500, 32)] == 0.85 and table[(506, 500, 32)] == 0.2       # occupied voxels keep their score
    assert table[(501, 500, 32)] == 0.8        # centre (0.75, 0.25, 0.25): nearest point (0.4, 0.2, 0.1), 0.38 m
    assert (503, 500, 32) not in table         # centre 1.75 m from every point
    assert len(out_v) == len(table)            # no voxel twice
    same = fill_around_points(pts, sc, vox, vs, 0.0, 0.5, (1000, 1000, 64), (250.0, 250.0, 16.0), 0.0)
    assert np.array_equal(same[0], vox)
