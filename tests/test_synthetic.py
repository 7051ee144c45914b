import json
import re

import numpy as np
import pytest
from PIL import Image

from pcdet_anomaly.datasets.anovox.reader import ScenarioReader, list_scenarios, parse_kv_csv
from pcdet_anomaly.datasets.synthetic import GeneratorConfig, generate_dataset
from pcdet_anomaly.datasets.synthetic.sensors import build_voxel_grid

ANOMALY_IDS = [29, 30, 31, 32, 33, 34, 100]


def test_gen_b_layout_names_dtypes_shapes(synth_root):
    root, summaries = synth_root
    scenarios = list_scenarios(root)
    assert len(scenarios) == 4 and (root / "Scenario_Configuration_Files").is_dir()
    for scen in scenarios:
        assert re.fullmatch(r"Scenario_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", scen.name)
        folders = {p.name for p in scen.iterdir() if p.is_dir()}
        for prefix in ("RGB-CAM(0, 0, 1.8)(0, 0, 0)_", "DEPTH_CAM(0, 0, 1.8)(0, 0, 0)_", "SEMANTIC-CAM(",
                       "INSTANCE-CAM(", "LIDAR(0, 0, 1.8)(0, 0, 0)_", "SEMANTIC-LIDAR("):
            assert sum(f.startswith(prefix) for f in folders) == 1, prefix
        assert {"ACTION", "ROUTE_MAP", "VOXEL_GRID"} <= folders
        setup = json.loads((scen / "sensor_setup.json").read_text())
        for entry in setup.values():
            assert set(entry) == {"sensor_type", "file_ending", "location", "rotation", "args", "save_data"}
        lidar_dir = next(scen.glob("LIDAR*"))
        for f in lidar_dir.iterdir():
            assert f.name.startswith(lidar_dir.name + "_") and re.fullmatch(r"\d+", f.stem.rsplit("_", 1)[1])
            arr = np.load(f)
            assert arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == 4
            assert 20000 < len(arr) <= 64 * 1800
        sem = np.load(next(next(scen.glob("SEMANTIC-LIDAR*")).iterdir()))
        assert sem.dtype == np.float64 and sem.shape[1] == 4
        assert set(np.unique(sem[:, 3]).astype(int)) <= set(range(0, 35)) | {100}
        rgb = Image.open(next(next(scen.glob("RGB-CAM*")).iterdir()))
        assert rgb.mode == "RGB" and rgb.size == (768, 512)
        assert Image.open(next(next(scen.glob("SEMANTIC-CAM*")).iterdir())).mode == "L"
        assert Image.open(next(next(scen.glob("DEPTH_CAM*")).iterdir())).mode == "RGB"
        grid = np.load(next((scen / "VOXEL_GRID").iterdir()))
        assert grid.dtype == np.uint16 and grid.shape[1] == 4
        g = grid.astype(np.int64)   # never uint16: 1000 * iy overflows
        key = g[:, 0] + 1000 * g[:, 1] + 1_000_000 * g[:, 2]
        assert np.all(np.diff(key) > 0), "VOXEL_GRID rows must be sorted by ix + 1000 iy + 1e6 iz, unique"


def test_anomaly_present_exactly_as_declared(synth_root):
    root, summaries = synth_root
    by_name = {s["name"]: s for s in summaries}
    assert any(s["anomalies"] for s in summaries) and any(not s["anomalies"] for s in summaries)
    for scen in list_scenarios(root):
        reader = ScenarioReader(scen)
        sem_ids = np.concatenate([reader.read_semantic_points(f)[:, 3] for f in reader.frames])
        has_points = np.isin(sem_ids, ANOMALY_IDS).any()
        declared = bool(by_name[scen.name]["anomalies"])
        assert (scen / "ANOMALY").is_dir() == declared
        assert has_points == declared, scen.name
        if declared:
            info = parse_kv_csv(next((scen / "ANOMALY").iterdir()))
            assert info["anomaly_type_id"].startswith(("static.prop.o_", "dynamic.prop.o_"))   # a blueprint id
            assert set(info["semantic_tags"]) <= set(ANOMALY_IDS)
            assert info["shape_family"] in by_name[scen.name]["anomalies"]
            assert sorted(r["shape_family"] for r in info["anomalies"]) == sorted(by_name[scen.name]["anomalies"])
            assert set(info["semantic_tags"]) <= set(np.unique(sem_ids).astype(int)) | {100}


def test_lidar_points_project_onto_pixels_of_the_same_label(synth_root):
    root, _ = synth_root
    for scen in list_scenarios(root):
        reader = ScenarioReader(scen)
        frame = reader.frames[0]
        sem = reader.read_semantic_points(frame)
        image = reader.read_semantic_image(frame)
        cal = reader.calibration
        homo = np.concatenate([sem[:, :3], np.ones((len(sem), 1))], 1) @ cal.lidar_to_cam.T
        front = homo[:, 2] > 1.0
        uv = homo[front, :2] / homo[front, 2:3] @ cal.intrinsics[:2, :2].T + cal.intrinsics[:2, 2]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < 768) & (uv[:, 1] >= 0) & (uv[:, 1] < 512)
        px = np.floor(uv[inside]).astype(int)
        agree = image[px[:, 1], px[:, 0]] == sem[front][inside, 3]
        assert inside.sum() > 5000 and agree.mean() > 0.95, agree.mean()


def test_voxel_grid_follows_generator_rule():
    # two points in one voxel: nearest to the lower corner wins; a road-line point anywhere in it wins over all
    pts = np.array([[0.30, 0.30, 1.8 + 0.30, 14], [0.05, 0.05, 1.8 + 0.05, 3], [5.2, 0.1, 1.8 + 0.1, 1],
                    [5.4, 0.4, 1.8 + 0.4, 24]], dtype=np.float64)
    grid = build_voxel_grid(pts)
    assert grid.dtype == np.uint16 and len(grid) == 2
    assert grid[0].tolist() == [500, 500, 32, 3]
    assert grid[1].tolist() == [510, 500, 32, 24]
    # the voxel grid of a synthetic frame agrees with its semantic cloud
    

def test_voxel_grid_consistent_with_semantic_points(synth_root):
    root, _ = synth_root
    scen = list_scenarios(root)[0]
    reader = ScenarioReader(scen)
    frame = reader.frames[0]
    assert np.array_equal(build_voxel_grid(reader.read_semantic_points(frame)), reader.read_voxel_grid(frame))
    grid = reader.read_voxel_grid(frame)
    road = grid[grid[:, 3] == 1]
    assert abs(np.median(road[:, 2]) - 24) <= 1     # z shifted by the sensor height (format doc)


def test_deterministic_and_interrupt_safe(tmp_path):
    cfg = GeneratorConfig(scenarios=1, frames=1, seed=11)
    cfg.lidar.azimuth_steps = 300
    cfg.camera.width, cfg.camera.height = 96, 64
    a = generate_dataset(tmp_path / "a", cfg, progress=False)
    (tmp_path / "b" / ".Scenario_leftover.tmp").mkdir(parents=True)   # remains of an interrupted run
    b = generate_dataset(tmp_path / "b", cfg, progress=False)
    assert a[0]["name"] == b[0]["name"]
    assert not (tmp_path / "b" / ".Scenario_leftover.tmp").exists()
    fa = sorted((tmp_path / "a" / a[0]["name"]).rglob("*.npy"))
    fb = sorted((tmp_path / "b" / b[0]["name"]).rglob("*.npy"))
    assert [f.name for f in fa] == [f.name for f in fb]
    for x, y in zip(fa, fb):
        assert np.array_equal(np.load(x), np.load(y))
    again = generate_dataset(tmp_path / "b", cfg, progress=False)
    assert again[0]["skipped"]


def test_families_are_drawn_per_scenario_from_the_seed(tmp_path):
    cfg = GeneratorConfig(scenarios=3, frames=1, seed=5, anomaly_fraction=1.0, families=("cone", "barrel"),
                          families_per_scenario=1)
    cfg.lidar.azimuth_steps = 200
    cfg.camera.width, cfg.camera.height = 64, 48
    for s in generate_dataset(tmp_path, cfg, progress=False):
        assert s["anomalies"] and set(s["anomalies"]) <= set(s["families_allowed"]) <= {"cone", "barrel"}
