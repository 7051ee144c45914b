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


def _sensor_setup(cfg: GeneratorConfig) -> dict:
    cam_args = {"image_size_x": cfg.camera.width, "image_size_y": cfg.camera.height, "fov": cfg.camera.fov}
    lid = cfg.lidar
    lidar_args = {"channels": lid.channels, "upper_fov": lid.upper_fov, "lower_fov": lid.lower_fov,
                  "range": lid.range, "rotation_frequency": lid.rotation_frequency,
                  "points_per_second": int(lid.channels * lid.azimuth_steps * lid.rotation_frequency),
                  "noise_stddev": lid.noise_stddev, "dropoff_general_rate": lid.dropoff_general_rate,
                  "atmosphere_attenuation_rate": lid.atmosphere_attenuation_rate}
    location, rotation = [0, 0, 1.8], [0, 0, 0]
    entry = lambda sensor_type, ending, args: {"sensor_type": sensor_type, "file_ending": ending,
                                               "location": location, "rotation": rotation, "args": args,
                                               "save_data": True}
    return {
        f"RGB-CAM{POSE}": entry("sensor.camera.rgb", "png", cam_args),
        f"DEPTH_CAM{POSE}": entry("sensor.camera.depth", "png", cam_args),
        f"SEMANTIC-CAM{POSE}": entry("sensor.camera.semantic_segmentation", "png", cam_args),
        f"INSTANCE-CAM{POSE}": entry("sensor.camera.instance_segmentation", "png", cam_args),
        f"LIDAR{POSE}": entry("sensor.lidar.ray_cast", "npy", lidar_args),
        f"SEMANTIC-LIDAR{POSE}": entry("sensor.lidar.ray_cast_semantic", "npy",
                                       {k: v for k, v in lidar_args.items() if "noise" not in k and "drop" not in k}),
    }


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
    (tmp / "sensor_setup.json").write_text(json.dumps(_sensor_setup(cfg), indent=2))
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
            lines = {}
            main = scenario.anomalies[0]
            lines["anomaly_type_id"] = main["label"]
            lines["semantic_tags"] = sorted({a["label"] for a in scenario.anomalies})
            lines["size"] = main["size"]
            rel = [round(float(main["location"][0] - ego[0]), 3), round(float(main["location"][1] - ego[1]), 3), 0.0]
            lines["location"] = rel
            lines["shape_family"] = main["family"]
            lines["shape_families"] = [a["family"] for a in scenario.anomalies]
            lines["appearance"] = main["appearance"]
            lines["dynamic"] = main["dynamic"]
            lines["num_anomalies"] = len(scenario.anomalies)
            (tmp / "ANOMALY" / f"ANOMALY_{frame}.csv").write_text(_csv(lines))
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
