"""AnoVox (official Gen-B layout, e.g. our synthetic set) -> SemanticKITTI / STU layout.

Each scenario becomes a sequence (named 100, 101, ... in scenario order, the STU numbering of evaluated sequences;
`sequences.json` maps names back), each frame a scan:
    velodyne/<frame:06d>.bin   every LiDAR point of the frame (float32 x, y, z, intensity; nothing filtered)
    labels/<frame:06d>.label   semantic: the point's AnoVox label (voxel-grid lookup, as training uses) mapped to
                               SemanticKITTI raw ids (ANOVOX_TO_SEMANTICKITTI); anomalies -> 2 and ignored labels
                               -> 0 (STU's convention); instance: one id per anomaly object (the nearest anomaly
                               row of the frame's ANOMALY file), 0 elsewhere
    image_2/<frame:06d>.png    the RGB image; calib.txt: P0..P3 = [K | 0], Tr = LiDAR -> camera (KITTI odometry)
    poses.txt                  identity poses (the synthetic scenarios have a static ego vehicle)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from .reader import write_bin, write_label

__all__ = ["ANOVOX_TO_SEMANTICKITTI", "convert_anovox", "SEMANTICKITTI_LEARNING_MAP"]

# AnoVox (CARLA) label id -> SemanticKITTI raw id (inliers only; anomalies -> 2, ignored -> 0 by the converter)
ANOVOX_TO_SEMANTICKITTI = {
    1: 40, 2: 48, 3: 50, 4: 52, 5: 51, 6: 80, 7: 80, 8: 81, 9: 70, 10: 72, 11: 0, 12: 30, 13: 31, 14: 10, 15: 18,
    16: 13, 17: 16, 18: 15, 19: 11, 20: 99, 21: 99, 22: 99, 23: 49, 24: 60, 25: 49, 26: 52, 27: 49, 28: 51,
}

# SemanticKITTI's learning map (raw id -> the 19 training classes, 0 = ignored)
SEMANTICKITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11, 49: 12,
    50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8,
    256: 5, 257: 5, 258: 4, 259: 5,
}


def _raw_ids(anovox_ids: np.ndarray, anomaly_ids, ignore_ids) -> np.ndarray:
    lut = np.zeros(65536, np.int64)
    for a, k in ANOVOX_TO_SEMANTICKITTI.items():
        lut[a] = k
    out = lut[np.clip(anovox_ids, 0, 65535)]
    out[np.isin(anovox_ids, list(ignore_ids))] = 0
    out[np.isin(anovox_ids, list(anomaly_ids))] = 2
    return out


def _instances(points: np.ndarray, is_anomaly: np.ndarray, rows: list) -> np.ndarray:
    inst = np.zeros(len(points), np.int64)
    if not is_anomaly.any():
        return inst
    centres = [r.get("sensor_location") for r in rows if r.get("sensor_location") is not None]
    if not centres:
        inst[is_anomaly] = 1
        return inst
    _, nearest = cKDTree(np.asarray(centres, np.float64)[:, :2]).query(points[is_anomaly, :2], k=1)
    inst[is_anomaly] = nearest + 1
    return inst


def _calib_text(K: np.ndarray, lidar_to_cam: np.ndarray) -> str:
    P = np.concatenate([K, np.zeros((3, 1))], 1).reshape(-1)
    fmt = lambda a: " ".join(f"{v:.12e}" for v in a)
    lines = [f"P{k}: {fmt(P)}" for k in range(4)] + [f"Tr: {fmt(lidar_to_cam[:3].reshape(-1))}"]
    return "\n".join(lines) + "\n"


def convert_anovox(src: Path, dst: Path, data_cfg, images: bool = True, progress: bool = True, logger=None) -> dict:
    """Write the SemanticKITTI-layout copy of the AnoVox set at `src` (labels and z shift from `data_cfg`, an AnoVox
    DATA_CONFIG). Returns {sequence name: scenario name}."""
    from ..anovox.dataset import AnoVoxDataset
    from easydict import EasyDict
    cfg = EasyDict(json.loads(json.dumps(data_cfg)))
    cfg.DATA_PATH, cfg.IMAGE.ENABLED, cfg.AUGMENTATION.ENABLED = str(src), False, False
    dataset = AnoVoxDataset(cfg, split="all", training=False, logger=logger)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    names = {f"{100 + i:03d}": scenario for i, scenario in enumerate(dataset.scenarios)}
    labels = cfg.LABELS
    bar = tqdm(names.items(), desc="to SemanticKITTI layout", unit="sequence", disable=not progress)
    for seq, scenario in bar:
        reader = dataset.readers[scenario]
        out = dst / seq
        calib = reader.calibration
        (out / "velodyne").mkdir(parents=True, exist_ok=True)
        (out / "calib.txt").write_text(_calib_text(calib.intrinsics, calib.lidar_to_cam))
        poses = []
        for frame in reader.frames:
            points = reader.read_points(frame)
            ids = dataset.point_label_ids(reader, frame, points)
            raw = _raw_ids(ids, labels.ANOMALY_IDS, labels.IGNORE_IDS)
            inst = _instances(points, raw == 2, reader.anomaly_rows(frame))
            write_bin(out / "velodyne" / f"{frame:06d}.bin", points)
            write_label(out / "labels" / f"{frame:06d}.label", raw, inst)
            if images:
                (out / "image_2").mkdir(exist_ok=True)
                shutil.copyfile(reader.file("rgb", frame), out / "image_2" / f"{frame:06d}.png")
            poses.append(np.eye(4)[:3].reshape(-1))
        np.savetxt(out / "poses.txt", np.asarray(poses), fmt="%.9e")
    (dst / "sequences.json").write_text(json.dumps(names, indent=2))
    return names
