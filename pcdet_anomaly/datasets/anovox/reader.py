"""Raw AnoVox reader: file I/O and validation only (no training logic).

Reads the Gen-B layout (sensor folders found by prefix, integer frame ids, sensor_setup.json) and the Gen-A layout
(fixed folder names, colour-coded semantics, Open3D .pcd clouds, or .npy clouds in the intermediate variant).
Every problem raises FrameError naming the file and what is wrong.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .labels import GEN_A_PALETTE, colours_to_ids

__all__ = ["FrameError", "check_points", "Calibration", "ScenarioReader", "detect_layout", "list_scenarios",
           "parse_kv_csv", "anomaly_rows", "OFFICIAL_SENSOR_TYPES"]

_FRAME_RE = re.compile(r"_(\d+)$")


class FrameError(ValueError):
    """A file of a frame is missing or malformed. `path` is the offending file (or folder)."""

    def __init__(self, path, message):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


def check_points(path, points: np.ndarray) -> None:
    """A point cloud must hold points, all finite (FrameError naming the file otherwise)."""
    if len(points) == 0:
        raise FrameError(path, "empty point cloud (0 points)")
    bad = ~np.isfinite(points).all(1)
    if bad.any():
        raise FrameError(path, f"{int(bad.sum())} of {len(points)} points contain NaN or inf")


@dataclass
class Calibration:
    intrinsics: np.ndarray      # [3, 3] pixels
    lidar_to_cam: np.ndarray    # [4, 4] LiDAR frame (x fwd, y left, z up) -> camera (OpenCV: x right, y down, z fwd)
    image_hw: tuple             # (H, W)
    source: str                 # where the numbers came from

    def scaled(self, new_hw) -> "Calibration":
        sy, sx = new_hw[0] / self.image_hw[0], new_hw[1] / self.image_hw[1]
        K = self.intrinsics.copy()
        K[0] *= sx
        K[1] *= sy
        return Calibration(K, self.lidar_to_cam.copy(), tuple(new_hw), self.source)


def parse_kv_csv(path: Path) -> dict:
    """ANOMALY / ACTION files: one `key ; value` per line, value written with Python's str()."""
    out = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ";" not in line:
            raise FrameError(path, f"line {lineno}: expected 'key ; value', got {line!r}")
        key, value = line.split(";", 1)
        key, value = key.strip(), value.strip()
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def frame_id_of(path: Path) -> int:
    match = _FRAME_RE.search(path.stem)
    if match is None:
        raise FrameError(path, "file name has no integer frame id after its last '_'")
    return int(match.group(1))


def list_scenarios(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found (DATA_CONFIG.DATA_PATH)")
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("Scenario_")
                  and p.name != "Scenario_Configuration_Files")


def detect_layout(scenario: Path) -> str:
    names = [p.name for p in Path(scenario).iterdir() if p.is_dir()]
    if any(n.startswith("LIDAR") for n in names):
        return "gen_b"
    if "PCD" in names:
        pcd = Path(scenario) / "PCD"
        return "gen_a_npy" if any(pcd.glob("*.npy")) else "gen_a"
    if "VOXEL_GRID" in names:
        return "gt_only"      # ground truth alone (an evaluation server's copy): VOXEL_GRID and ANOMALY
    raise FrameError(scenario, f"unknown layout: no LIDAR* (Gen-B), PCD (Gen-A) or VOXEL_GRID folder; found "
                               f"{sorted(names)}")


def _rotation(roll_deg, pitch_deg, yaw_deg) -> np.ndarray:
    """Vehicle frame with y to the left: CARLA's yaw and roll change sign when y is mirrored."""
    r, p, y = np.deg2rad([-roll_deg, pitch_deg, -yaw_deg])
    Rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    Ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    Rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def _pose(location, rotation, convention: str = "official") -> np.ndarray:
    """location [x, y, z] (simulator axes, y right) and rotation in degrees -> 4x4 sensor -> vehicle (y left).

    convention 'official': rotation = (x_rot, y_rot, z_rot) = (roll, pitch, yaw), as the AnoVox generator writes it;
    'legacy': rotation = [pitch, yaw, roll] (this project's writer before it followed the official format)."""
    T = np.eye(4)
    if convention == "official":
        roll, pitch, yaw = (float(v) for v in rotation)
    else:
        pitch, yaw, roll = (float(v) for v in rotation)
    T[:3, :3] = _rotation(roll, pitch, yaw)
    T[:3, 3] = [float(location[0]), -float(location[1]), float(location[2])]
    return T


# sensor frame (x fwd, y left, z up) -> OpenCV camera (x right, y down, z fwd)
AXES_TO_OPENCV = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)

# sensor_type values of the official generator (the folder-name prefixes)
OFFICIAL_SENSOR_TYPES = ("RGB-CAM", "DEPTH_CAM", "SEMANTIC-CAM", "INSTANCE-CAM", "LIDAR", "SEMANTIC-LIDAR")


def setup_convention(entry: dict) -> str:
    """'official' (args image_width / image_height / camera_fov, rotation roll-pitch-yaw) or 'legacy' (args
    image_size_x / image_size_y / fov, sensor_type 'sensor.camera.rgb', rotation pitch-yaw-roll)."""
    args = entry.get("args", {}) or {}
    if "image_size_x" in args or str(entry.get("sensor_type", "")).startswith("sensor."):
        return "legacy"
    return "official"


def _camera_args(camera: dict, path) -> tuple[int, int, float]:
    args = camera.get("args", {}) or {}
    if setup_convention(camera) == "legacy":
        keys = ("image_size_x", "image_size_y", "fov")
    else:
        keys = ("image_width", "image_height", "camera_fov")
    missing = [k for k in keys if k not in args]
    if missing:
        raise FrameError(path, f"camera entry: args lacks {missing} (has {sorted(args)})")
    try:
        return int(args[keys[0]]), int(args[keys[1]]), float(args[keys[2]])
    except (TypeError, ValueError) as err:
        raise FrameError(path, f"camera entry: args {keys} must be numbers, got "
                               f"{[args[k] for k in keys]}") from err


def calibration_from_setup(camera: dict, lidar: dict, source: str) -> Calibration:
    width, height, fov = _camera_args(camera, source)
    f = width / (2.0 * np.tan(np.deg2rad(fov) / 2.0))
    K = np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1.0]])
    for name, entry in (("camera", camera), ("lidar", lidar)):
        for key in ("location", "rotation"):
            value = entry.get(key, [0, 0, 0])
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise FrameError(source, f"{name} entry: '{key}' must be 3 numbers, got {value!r}")
    T_cam = _pose(camera.get("location", [0, 0, 1.8]), camera.get("rotation", [0, 0, 0]), setup_convention(camera))
    T_lidar = _pose(lidar.get("location", [0, 0, 1.8]), lidar.get("rotation", [0, 0, 0]), setup_convention(lidar))
    lidar_to_cam = AXES_TO_OPENCV @ np.linalg.inv(T_cam) @ T_lidar
    return Calibration(K, lidar_to_cam, (height, width), source)


DEFAULT_CAMERA = {"sensor_type": "RGB-CAM", "location": [0, 0, 1.8], "rotation": [0, 0, 0],
                  "args": {"image_height": 512, "image_width": 768, "camera_fov": 90.0}}
DEFAULT_LIDAR = {"sensor_type": "LIDAR", "location": [0, 0, 1.8], "rotation": [0, 0, 0]}


def anomaly_rows(record: dict | None) -> list[dict]:
    """The anomalies of one ANOMALY record, one dict each with `label_ids` (set of int), `type` (the blueprint id of
    official files, or the label id of this project's files before the official format), `size` (the official
    category string when there is one), `extent_m` (a numeric extent when known) and `sensor_location` ((x, y, z) in
    the LiDAR frame when known, which tells apart two anomalies that carry the same label).

    Official files hold one anomaly (`semantic_tags`, `anomaly_type_id`, `size`); this project's writer adds an
    `anomalies` key listing every anomaly of the frame. Dynamic-anomaly records (vehicle_id, no size) map to label
    100."""
    if not record:
        return []
    items = record.get("anomalies")
    if isinstance(items, (list, tuple)) and items and all(isinstance(i, dict) for i in items):
        return [_normalise_row(i) for i in items]
    return [_normalise_row(record)]


def _int_tags(value) -> set:
    if isinstance(value, (list, tuple, set)):
        out = set()
        for v in value:
            try:
                out.add(int(v))
            except (TypeError, ValueError):
                pass
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {int(value)}
    return set()


def _normalise_row(row: dict) -> dict:
    labels = _int_tags(row.get("semantic_tags"))
    type_id = row.get("anomaly_type_id", row.get("vehicle_type_id"))
    if isinstance(type_id, (int, float)) and not isinstance(type_id, bool):
        labels.add(int(type_id))         # this project's files before the official format: a label id
        type_id = int(type_id)
    if not labels and ("vehicle_id" in row or "vehicle_type_id" in row):
        labels = {100}
    size = row.get("size")
    extent = row.get("extent_m")
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        extent, size = float(size), None     # legacy numeric size
    loc = row.get("sensor_location")
    return {"label_ids": labels, "type": type_id if type_id is not None else "unknown",
            "size": str(size) if size is not None else None,
            "extent_m": float(extent) if isinstance(extent, (int, float)) else None,
            "sensor_location": tuple(float(v) for v in loc) if isinstance(loc, (list, tuple)) and len(loc) == 3
            else None,
            "family": row.get("shape_family")}


GEN_B_SENSORS = {  # key -> (folder prefix, unused, extension, required)
    "lidar": ("LIDAR", None, ".npy", True),
    "semantic_lidar": ("SEMANTIC-LIDAR", None, ".npy", True),
    "rgb": ("RGB-CAM", None, ".png", True),
    "depth": ("DEPTH_CAM", None, ".png", False),
    "semantic_cam": ("SEMANTIC-CAM", None, ".png", False),
    "voxel_grid": ("VOXEL_GRID", None, ".npy", True),
    "anomaly": ("ANOMALY", None, ".csv", False),
}
GEN_A_SENSORS = {
    "lidar": ("PCD", ".pcd", True), "semantic_lidar": ("SEMANTIC_PCD", ".pcd", True), "rgb": ("RGB_IMG", ".png", True),
    "depth": ("DEPTH_IMG", ".png", False), "semantic_cam": ("SEMANTIC_IMG", ".png", False),
    "voxel_grid": ("VOXEL_GRID", ".npy", True), "anomaly": ("ANOMALY", ".csv", False),
}


class ScenarioReader:
    """All frames of one scenario. `frames` lists integer frame ids present in every required sensor, in numeric
    order; `problems` lists frames dropped because a required sensor lacks them."""

    def __init__(self, path: str | Path, layout: str = "auto"):
        self.path = Path(path)
        self.name = self.path.name
        self.layout = detect_layout(self.path) if layout == "auto" else layout
        if self.layout not in ("gen_b", "gen_a", "gen_a_npy", "gt_only"):
            raise ValueError(f"{self.path}: layout must be auto, gen_b, gen_a or gt_only, got {layout!r}")
        self.files: dict[str, dict[int, Path]] = {}
        self.problems: list[str] = []
        self._find_files()
        self.calibration = self._read_calibration()

    # ---- inventory
    def _find_files(self) -> None:
        if self.layout in ("gen_b", "gt_only"):
            folders = [p for p in self.path.iterdir() if p.is_dir()]
            for key, (prefix, _, ext, required) in GEN_B_SENSORS.items():
                # 'LIDAR' does not match 'SEMANTIC-LIDAR...': prefixes are compared from the first character
                matches = [p for p in folders if p.name.startswith(prefix)]
                if self.layout == "gt_only" and key not in ("voxel_grid", "anomaly"):
                    required = False
                self._register(key, matches, ext, required, prefix + "*")
        else:
            for key, (folder, ext, required) in GEN_A_SENSORS.items():
                if key in ("lidar", "semantic_lidar") and self.layout == "gen_a_npy":
                    ext = ".npy"
                path = self.path / folder
                self._register(key, [path] if path.is_dir() else [], ext, required, folder)
        required = [k for k, v in self.files.items() if self._required(k)]
        common = set.intersection(*(set(self.files[k]) for k in required)) if required else set()
        for key in required:
            for frame in sorted(set(self.files[key]) - common):
                missing = [k for k in required if frame not in self.files[k]]
                self.problems.append(f"frame {frame}: present in {key} ({self.files[key][frame].name}) but "
                                     f"missing in {', '.join(missing)}")
        self.frames = sorted(common)

    def _required(self, key: str) -> bool:
        if self.layout == "gt_only":
            return key == "voxel_grid"
        table = GEN_B_SENSORS if self.layout == "gen_b" else GEN_A_SENSORS
        return table[key][-1]

    def _register(self, key, folders, ext, required, pattern):
        if len(folders) > 1:
            raise FrameError(self.path, f"several folders match {pattern}: {[f.name for f in folders]}")
        if not folders:
            if required:
                raise FrameError(self.path, f"missing sensor folder {pattern} (layout {self.layout})")
            self.files[key] = {}
            return
        self.files[key] = {frame_id_of(f): f for f in folders[0].iterdir() if f.suffix == ext}

    def _read_calibration(self) -> Calibration:
        setup_path = self.path / "sensor_setup.json"
        self.sensor_setup: dict = {}
        if not setup_path.is_file():
            return calibration_from_setup(DEFAULT_CAMERA, DEFAULT_LIDAR, "default mono sensor set (no sensor_setup.json)")
        try:
            setup = json.loads(setup_path.read_text())
        except json.JSONDecodeError as err:
            raise FrameError(setup_path, f"malformed JSON: {err}") from err
        if not isinstance(setup, dict) or not all(isinstance(v, dict) for v in setup.values()):
            raise FrameError(setup_path, "expected {sensor folder name: {sensor_type, location, rotation, args, ...}}")
        self.sensor_setup = setup
        camera = self._setup_entry(setup, "rgb", "RGB-CAM")
        lidar = self._setup_entry(setup, "lidar", "LIDAR")
        if camera is None or lidar is None:
            if self.layout == "gt_only":
                return calibration_from_setup(DEFAULT_CAMERA, DEFAULT_LIDAR, "default mono sensor set")
            raise FrameError(setup_path, f"needs an RGB-CAM and a LIDAR entry; keys: {sorted(setup)}")
        return calibration_from_setup(camera, lidar, str(setup_path))

    def _setup_entry(self, setup: dict, key: str, sensor_type: str) -> dict | None:
        """The sensor_setup.json entry of a sensor: keyed by its full folder name (official), else the one entry
        whose sensor_type or key prefix names the sensor (older files)."""
        folder = next(iter(self.files.get(key, {}).values()), None)
        if folder is not None and folder.parent.name in setup:
            return setup[folder.parent.name]
        typed = [v for v in setup.values() if v.get("sensor_type") == sensor_type]
        if typed:
            return typed[0]
        prefixed = [v for k, v in setup.items() if k.startswith(sensor_type) and
                    not (sensor_type == "LIDAR" and k.startswith("SEMANTIC"))]
        return prefixed[0] if prefixed else None

    @property
    def lidar_height(self) -> float:
        """The LiDAR's mounting height (m) from sensor_setup.json (1.8 m, the mono set, without one)."""
        entry = self._setup_entry(self.sensor_setup, "lidar", "LIDAR") if self.sensor_setup else None
        try:
            return float((entry or DEFAULT_LIDAR)["location"][2])
        except (KeyError, IndexError, TypeError, ValueError):
            return 1.8

    def file(self, key: str, frame: int) -> Path:
        try:
            return self.files[key][frame]
        except KeyError:
            raise FrameError(self.path, f"frame {frame} has no {key} file") from None

    def has(self, key: str, frame: int) -> bool:
        return frame in self.files.get(key, {})

    # ---- readers
    def _load_npy(self, path: Path, dtype_kind: str, cols: int) -> np.ndarray:
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises ValueError/OSError/EOFError on truncated files
            raise FrameError(path, f"cannot read .npy ({type(err).__name__}: {err})") from err
        if arr.ndim != 2 or arr.shape[1] != cols or arr.dtype.kind != dtype_kind:
            raise FrameError(path, f"expected {'float' if dtype_kind == 'f' else 'uint'} (N, {cols}), got "
                                   f"{arr.dtype} {arr.shape}")
        return arr

    def _read_pcd(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        import open3d as o3d
        cloud = o3d.io.read_point_cloud(str(path))
        xyz = np.asarray(cloud.points)
        if len(xyz) == 0:
            raise FrameError(path, "empty or unreadable point cloud")
        colours = np.asarray(cloud.colors) if cloud.has_colors() else np.zeros_like(xyz)
        return xyz, colours

    def read_points(self, frame: int) -> np.ndarray:
        """[N, 4] float32: x, y, z, intensity (sensor frame: x forward, y left, z up)."""
        path = self.file("lidar", frame)
        if self.layout == "gen_a":
            xyz, colours = self._read_pcd(path)
            points = np.concatenate([xyz, colours[:, :1]], 1).astype(np.float32)
        else:
            points = self._load_npy(path, "f", 4).astype(np.float32, copy=False)
        check_points(path, points)
        return points

    def read_semantic_points(self, frame: int) -> np.ndarray:
        """[M, 4] float64: x, y, z, label id."""
        path = self.file("semantic_lidar", frame)
        if self.layout == "gen_a":
            xyz, colours = self._read_pcd(path)
            ids = colours_to_ids(np.round(colours * 255).astype(np.int64))
            points = np.concatenate([xyz, ids[:, None]], 1).astype(np.float64)
        else:
            points = self._load_npy(path, "f", 4).astype(np.float64, copy=False)
        check_points(path, points)
        return points


    def _read_png(self, key: str, frame: int, mode: str) -> np.ndarray:
        path = self.file(key, frame)
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert(mode) if img.mode != mode else img)
        except Exception as err:
            raise FrameError(path, f"cannot read PNG ({type(err).__name__}: {err})") from err
        H, W = self.calibration.image_hw
        if arr.shape[:2] != (H, W):
            raise FrameError(path, f"image is {arr.shape[1]} x {arr.shape[0]}, sensor_setup says {W} x {H}")
        return arr

    def read_rgb(self, frame: int) -> np.ndarray:
        return self._read_png("rgb", frame, "RGB")

    def read_depth(self, frame: int) -> np.ndarray:
        """Planar depth in metres, float32 [H, W]."""
        rgb = self._read_png("depth", frame, "RGB").astype(np.float64)
        return (1000.0 * (rgb[..., 0] + 256.0 * rgb[..., 1] + 65536.0 * rgb[..., 2]) / (256 ** 3 - 1)).astype(
            np.float32)

    def read_semantic_image(self, frame: int) -> np.ndarray:
        if self.layout == "gen_b":
            return self._read_png("semantic_cam", frame, "L")
        rgb = self._read_png("semantic_cam", frame, "RGB").astype(np.int64)
        return colours_to_ids(rgb.reshape(-1, 3)).reshape(rgb.shape[:2]).astype(np.uint8)

    def read_voxel_grid(self, frame: int) -> np.ndarray:
        """[M, 4] uint16 ix, iy, iz, label id."""
        path = self.file("voxel_grid", frame)
        arr = self._load_npy(path, "u", 4)
        return arr.astype(np.uint16, copy=False)

    def read_anomaly(self, frame: int) -> dict | None:
        """The frame's ANOMALY record; None without a file. An empty or unparsable file gives {} and a warning that
        names it (the frame still holds an anomaly: its voxels say so, only the row is lost)."""
        if not self.has("anomaly", frame):
            return None
        path = self.file("anomaly", frame)
        try:
            record = parse_kv_csv(path)
        except FrameError as err:
            self._warn_anomaly(path, f"malformed ANOMALY file ({err}); its anomaly type and size are unknown")
            return {}
        if not record:
            self._warn_anomaly(path, "empty ANOMALY file: its anomaly type and size are unknown")
        return record

    def _warn_anomaly(self, path, message):
        warned = self.__dict__.setdefault("_anomaly_warned", set())
        if path not in warned:
            warned.add(path)
            import logging
            logging.getLogger("pcdet_anomaly").warning("%s: %s", path, message)

    def anomaly_rows(self, frame: int) -> list[dict]:
        """The anomalies of a frame (see `anomaly_rows`); [] without an ANOMALY file."""
        return anomaly_rows(self.read_anomaly(frame))

    def scenario_anomaly_info(self) -> dict | None:
        """The ANOMALY record of the first frame that has one (the scenario's anomaly), or None (normality)."""
        if not self.files.get("anomaly"):
            return None
        first = min(self.files["anomaly"])
        return self.read_anomaly(first)

    def anomaly_file_problems(self, frames=None) -> list[str]:
        """Empty or malformed ANOMALY files among `frames` (default: all)."""
        out = []
        for frame in sorted(self.files.get("anomaly", {})) if frames is None else frames:
            if not self.has("anomaly", frame):
                continue
            path = self.file("anomaly", frame)
            try:
                if not parse_kv_csv(path):
                    out.append(f"{path}: empty ANOMALY file (anomaly type and size unknown)")
            except FrameError as err:
                out.append(f"{err} (malformed ANOMALY file)")
        return out


assert len(GEN_A_PALETTE) >= 29
