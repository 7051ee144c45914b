"""Write synthetic scenarios in the AnoVox Gen-B on-disk layout (see shared/docs/anovox_format.md).

Each scenario is rendered into a hidden temporary folder and renamed into place when complete, so an interrupted
run never leaves half a scenario; re-running with the same arguments skips the scenarios that already exist.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .scene import SHAPE_FAMILIES, SceneParams, sample_scenario
from .sensors import CameraSpec, LidarSpec, build_voxel_grid, encode_depth, render_camera, scan_lidar

__all__ = ["GeneratorConfig", "generate_dataset", "generate_scenario", "sensor_names"]

POSE = "(0, 0, 1.8)(0, 0, 0)"
ANOMALY_LABELS = [29, 30, 31, 32, 33, 34, 100]


@dataclass
class GeneratorConfig:
    scenarios: int = 12
    frames: int = 10
    seed: int = 0
    anomaly_fraction: float = 0.7
    families: tuple = SHAPE_FAMILIES
    families_per_scenario: int = 2          # anomaly shape families drawn per scenario (from the seed)
    lidar: LidarSpec = field(default_factory=LidarSpec)
    camera: CameraSpec = field(default_factory=CameraSpec)
    first_tick: int = 1370
    z_shift: float = -1.8


def sensor_names(run_digits: str) -> dict:
    return {
        "rgb": f"RGB-CAM{POSE}_{run_digits}", "depth": f"DEPTH_CAM{POSE}_{run_digits}",
        "semantic_cam": f"SEMANTIC-CAM{POSE}_{run_digits}", "instance_cam": f"INSTANCE-CAM{POSE}_{run_digits}",
        "lidar": f"LIDAR{POSE}_{run_digits}", "semantic_lidar": f"SEMANTIC-LIDAR{POSE}_{run_digits}",
    }


def _sensor_setup(cfg: GeneratorConfig, names: dict) -> dict:
    """sensor_setup.json as the official generator writes it: keyed by the full sensor folder names, sensor_type
    = the folder prefix, file_ending with its dot, camera args image_height / image_width / camera_fov, location
    (x, y, z) and rotation (x_rot, y_rot, z_rot) = (roll, pitch, yaw) in degrees."""
    cam = cfg.camera
    cam_args = {"image_height": cam.height, "image_width": cam.width, "camera_fov": float(cam.fov)}
    lid = cfg.lidar
    lidar_args = {"range": float(lid.range), "upper_fov": float(lid.upper_fov), "lower_fov": float(lid.lower_fov),
                  "channels": lid.channels, "rotation_frequency": float(lid.rotation_frequency),
                  "points_per_second": int(lid.channels * lid.azimuth_steps * lid.rotation_frequency),
                  "noise_stddev": float(lid.noise_stddev), "dropoff_rate": float(lid.dropoff_general_rate),
                  "dropoff_intensity_limit": 0.0, "dropoff_zero_intensity": 0.0}
    semantic_args = {k: lidar_args[k] for k in ("range", "upper_fov", "lower_fov", "channels", "rotation_frequency",
                                                "points_per_second")}

    def entry(sensor_type, ending, args):
        return {"sensor_type": sensor_type, "file_ending": ending, "location": [0, 0, 1.8], "rotation": [0, 0, 0],
                "args": dict(args), "save_data": True}

    return {
        names["rgb"]: entry("RGB-CAM", ".png", cam_args),
        names["depth"]: entry("DEPTH_CAM", ".png", cam_args),
        names["semantic_cam"]: entry("SEMANTIC-CAM", ".png", cam_args),
        names["instance_cam"]: entry("INSTANCE-CAM", ".png", cam_args),
        names["lidar"]: entry("LIDAR", ".npy", lidar_args),
        names["semantic_lidar"]: entry("SEMANTIC-LIDAR", ".npy", semantic_args),
    }


LABEL_CATEGORY = {29: "home", 30: "animal", 31: "nature", 32: "special", 33: "airplane", 34: "falling",
                  100: "dynamic"}
# The official `size` is the asset's category; ours is given by the object's largest extent (m).
SIZE_CATEGORIES = ((0.5, "Tiny"), (1.0, "Small"), (2.0, "Medium"), (3.5, "Big"), (float("inf"), "Huge"))


def size_category(extent_m: float) -> str:
    return next(name for upper, name in SIZE_CATEGORIES if extent_m < upper)


def blueprint_id(anomaly: dict) -> str:
    """An official-style blueprint id, `static.prop.o_<name>_<category>` (dynamic ones `dynamic.prop.o_...`)."""
    kind = "dynamic" if anomaly["dynamic"] else "static"
    return f"{kind}.prop.o_{anomaly['family']}_{LABEL_CATEGORY.get(anomaly['label'], 'special')}"


def _tuple(values) -> tuple:
    return tuple(round(float(v), 3) for v in values)


def anomaly_record(scenario, anomalies: list, frame: int, scenario_uuid, time_s: float, ego) -> dict:
    """ANOMALY file content: the official keys, in the official order, for the frame's first anomaly, then this
    project's own facts as extra keys (`anomalies` lists every anomaly of the frame)."""
    rows = []
    for a in anomalies:
        velocity = np.asarray(a.get("velocity", (0.0, 0.0, 0.0)), dtype=np.float64)
        world = np.array([a["location"][0], a["location"][1], a["size"] / 2.0]) + velocity * time_s
        rel = world - np.array([ego[0], ego[1], 0.0]) - np.array([0.0, 0.0, 1.8])
        rows.append({"anomaly_id": int(a["instance"]), "anomaly_type_id": blueprint_id(a),
                     "semantic_tags": [int(a["label"])], "size": size_category(a["size"]),
                     "extent_m": round(float(a["size"]), 3), "shape_family": a["family"],
                     "appearance": a["appearance"], "dynamic": bool(a["dynamic"]),
                     "location": _tuple(world), "velocity": _tuple(velocity), "sensor_location": _tuple(rel)})
    main = rows[0]
    record = {"frame_id": int(frame), "scenario_id": str(scenario_uuid), "anomaly_id": main["anomaly_id"],
              "anomaly_type_id": main["anomaly_type_id"], "anomaly_is_alive": True,
              "semantic_tags": main["semantic_tags"], "location": main["location"], "velocity": main["velocity"],
              "acceleration": (0.0, 0.0, 0.0), "role_name": "prop", "size": main["size"]}
    record.update({"extent_m": main["extent_m"], "shape_family": main["shape_family"],
                   "shape_families": [r["shape_family"] for r in rows], "appearance": main["appearance"],
                   "dynamic": main["dynamic"], "num_anomalies": len(rows), "anomalies": rows})
    return record


def _csv(items: dict) -> str:
    return "".join(f"{key} ; {value}\n" for key, value in items.items())


def _save_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(array, mode=mode).save(path, compress_level=1)


def generate_scenario(out_dir: Path, cfg: GeneratorConfig, index: int, run_digits: str) -> dict:
    """Render scenario `index` into `out_dir/Scenario_<uuid>`; returns a summary dict."""
    seed_seq = np.random.SeedSequence([cfg.seed, index])
    rng = np.random.default_rng(seed_seq)
    scenario_uuid = uuid.UUID(bytes=rng.bytes(16), version=4)
    name = f"Scenario_{scenario_uuid}"
    final = out_dir / name
    if final.is_dir():
        return {"name": name, "skipped": True}
    # the shape families this scenario may use are drawn from its seed, so splits can hold families out
    families = tuple(rng.choice(cfg.families, size=min(cfg.families_per_scenario, len(cfg.families)),
                                replace=False).tolist())
    params = SceneParams(anomaly_fraction=cfg.anomaly_fraction, families=families)
    with_anomaly = bool(rng.random() < cfg.anomaly_fraction)
    for _attempt in range(20):
        scenario = sample_scenario(rng, params, cfg.frames, with_anomaly=with_anomaly)
        if not scenario.anomalies or _anomaly_visible(scenario, cfg, params):
            break
    else:
        raise RuntimeError(f"scenario {index}: could not place a LiDAR-visible anomaly in 20 attempts")

    tmp = out_dir / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    names = sensor_names(run_digits)
    for folder in list(names.values()) + ["ACTION", "ROUTE_MAP", "VOXEL_GRID"] + (
            ["ANOMALY"] if scenario.anomalies else []):
        (tmp / folder).mkdir()
    (tmp / "sensor_setup.json").write_text(json.dumps(_sensor_setup(cfg, names)))
    first_frame = cfg.first_tick + index * (cfg.frames + 37)
    anomaly_points = 0
    for k in range(cfg.frames):
        frame = first_frame + k
        time_s = k * params.frame_dt
        lidar, semantic = scan_lidar(scenario, time_s, cfg.lidar, rng)
        rgb, depth, sem_img, inst = render_camera(scenario, time_s, cfg.camera, rng)
        np.save(tmp / names["lidar"] / f"{names['lidar']}_{frame}.npy", lidar)
        np.save(tmp / names["semantic_lidar"] / f"{names['semantic_lidar']}_{frame}.npy", semantic)
        _save_png(tmp / names["rgb"] / f"{names['rgb']}_{frame}.png", rgb)
        _save_png(tmp / names["depth"] / f"{names['depth']}_{frame}.png", encode_depth(depth))
        _save_png(tmp / names["semantic_cam"] / f"{names['semantic_cam']}_{frame}.png", sem_img, "L")
        instance_rgb = np.stack([sem_img, (inst & 255).astype(np.uint8), ((inst >> 8) & 255).astype(np.uint8)], -1)
        _save_png(tmp / names["instance_cam"] / f"{names['instance_cam']}_{frame}.png", instance_rgb)
        grid = build_voxel_grid(semantic, z_shift=cfg.z_shift)
        np.save(tmp / "VOXEL_GRID" / f"VOXEL_GRID_{frame}.npy", grid)
        ego = scenario.ego_position(time_s)
        speed = float(np.linalg.norm(scenario.ego_velocity))
        (tmp / "ACTION" / f"ACTION_{frame}.csv").write_text(_csv(
            {"throttle": 0.5, "steer": 0.0, "brake": 0.0, "speed": round(speed, 3),
             "location": [round(float(c), 3) for c in ego]}))
        route = np.full((64, 64), 40, dtype=np.uint8)
        route[:, 30:34] = 255
        _save_png(tmp / "ROUTE_MAP" / f"ROUTE_MAP_{frame}.png", route, "L")
        if scenario.anomalies:
            record = anomaly_record(scenario, scenario.anomalies, frame, scenario_uuid, time_s, ego)
            (tmp / "ANOMALY" / f"ANOMALY_{frame}.csv").write_text(_csv(record))
        anomaly_points += int(np.isin(semantic[:, 3], ANOMALY_LABELS).sum())
    os.replace(tmp, final)
    return {"name": name, "skipped": False, "anomalies": [a["family"] for a in scenario.anomalies],
            "families_allowed": families, "anomaly_points": anomaly_points, "first_frame": first_frame}


def _anomaly_visible(scenario, cfg: GeneratorConfig, params: SceneParams) -> bool:
    """A declared anomaly must be seen: enough noise-free LiDAR returns in the first and the last frame
    (15 at the full 64 x 1800 resolution, fewer for coarser test sensors)."""
    density = cfg.lidar.azimuth_steps / 1800 * cfg.lidar.channels / 64
    min_points = max(2, int(round(15 * density)))
    probe = np.random.default_rng(0)
    for k in {0, max(cfg.frames - 1, 0)}:
        _, semantic = scan_lidar(scenario, k * params.frame_dt, cfg.lidar, probe)
        if np.isin(semantic[:, 3], ANOMALY_LABELS).sum() < min_points:
            return False
    return True


def generate_dataset(out_dir: str | os.PathLike, cfg: GeneratorConfig, progress: bool = True) -> list[dict]:
    """Generate `cfg.scenarios` scenarios under `out_dir` (Gen-B). Existing complete scenarios are kept."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(".Scenario_*.tmp"):
        shutil.rmtree(leftover)          # remains of an interrupted run
    config_dir = out_dir / "Scenario_Configuration_Files"
    config_dir.mkdir(exist_ok=True)
    run_digits = str(np.random.default_rng(cfg.seed).integers(10000, 99999))
    summaries = []
    bar = tqdm(range(cfg.scenarios), desc="synthetic AnoVox", unit="scenario", disable=not progress)
    for index in bar:
        summary = generate_scenario(out_dir, cfg, index, run_digits)
        summaries.append(summary)
        bar.set_postfix_str(summary["name"][:17] + ("(kept)" if summary["skipped"] else ""))
    manifest = {"generator": "pcdet_anomaly.synthetic", "config": _jsonable(asdict(cfg)), "scenarios": summaries}
    (config_dir / "synthetic_manifest.json").write_text(json.dumps(manifest, indent=2))
    return summaries


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
