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

__all__ = ["FrameError", "Calibration", "ScenarioReader", "detect_layout", "list_scenarios", "parse_kv_csv"]

_FRAME_RE = re.compile(r"_(\d+)$")


class FrameError(ValueError):
    """A file of a frame is missing or malformed. `path` is the offending file (or folder)."""

    def __init__(self, path, message):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


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
    raise FrameError(scenario, f"unknown layout: no LIDAR* (Gen-B) or PCD (Gen-A) folder; found {sorted(names)}")


def _rotation(roll_deg, pitch_deg, yaw_deg) -> np.ndarray:
    """Vehicle frame with y to the left: CARLA's yaw and roll change sign when y is mirrored."""
    r, p, y = np.deg2rad([-roll_deg, pitch_deg, -yaw_deg])
    Rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    Ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    Rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def _pose(location, rotation) -> np.ndarray:
    """location [x, y, z] (CARLA, y right), rotation [pitch, yaw, roll] degrees -> 4x4 sensor -> vehicle (y left)."""
    T = np.eye(4)
    pitch, yaw, roll = (float(v) for v in rotation)
    T[:3, :3] = _rotation(roll, pitch, yaw)
    T[:3, 3] = [float(location[0]), -float(location[1]), float(location[2])]
    return T


# sensor frame (x fwd, y left, z up) -> OpenCV camera (x right, y down, z fwd)
AXES_TO_OPENCV = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def calibration_from_setup(camera: dict, lidar: dict, source: str) -> Calibration:
    args = camera.get("args", {})
    width, height = int(args.get("image_size_x", 768)), int(args.get("image_size_y", 512))
    fov = float(args.get("fov", 90.0))
    f = width / (2.0 * np.tan(np.deg2rad(fov) / 2.0))
    K = np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1.0]])
    T_cam = _pose(camera.get("location", [0, 0, 1.8]), camera.get("rotation", [0, 0, 0]))
    T_lidar = _pose(lidar.get("location", [0, 0, 1.8]), lidar.get("rotation", [0, 0, 0]))
    lidar_to_cam = AXES_TO_OPENCV @ np.linalg.inv(T_cam) @ T_lidar
    return Calibration(K, lidar_to_cam, (height, width), source)


DEFAULT_CAMERA = {"location": [0, 0, 1.8], "rotation": [0, 0, 0],
                  "args": {"image_size_x": 768, "image_size_y": 512, "fov": 90}}
DEFAULT_LIDAR = {"location": [0, 0, 1.8], "rotation": [0, 0, 0]}

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
        if self.layout not in ("gen_b", "gen_a", "gen_a_npy"):
            raise ValueError(f"{self.path}: layout must be auto, gen_b or gen_a, got {layout!r}")
        self.files: dict[str, dict[int, Path]] = {}
        self.problems: list[str] = []
        self._find_files()
        self.calibration = self._read_calibration()

    # ---- inventory
    def _find_files(self) -> None:
        if self.layout == "gen_b":
            folders = [p for p in self.path.iterdir() if p.is_dir()]
            for key, (prefix, _, ext, required) in GEN_B_SENSORS.items():
                # 'LIDAR' does not match 'SEMANTIC-LIDAR...': prefixes are compared from the first character
                matches = [p for p in folders if p.name.startswith(prefix)]
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
        if not setup_path.is_file():
            return calibration_from_setup(DEFAULT_CAMERA, DEFAULT_LIDAR, "default mono sensor set (no sensor_setup.json)")
        try:
            setup = json.loads(setup_path.read_text())
        except json.JSONDecodeError as err:
            raise FrameError(setup_path, f"malformed JSON: {err}") from err
        camera = next((v for k, v in setup.items() if k.startswith("RGB-CAM")), None)
        lidar = next((v for k, v in setup.items() if k.startswith("LIDAR")), None)
        if camera is None or lidar is None:
            raise FrameError(setup_path, "needs an RGB-CAM* and a LIDAR* entry")
        return calibration_from_setup(camera, lidar, str(setup_path))

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
        self._check_points(path, points)
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
        self._check_points(path, points)
        return points

    @staticmethod
    def _check_points(path, points):
        if len(points) == 0:
            raise FrameError(path, "empty point cloud (0 points)")
        bad = ~np.isfinite(points).all(1)
        if bad.any():
            raise FrameError(path, f"{int(bad.sum())} of {len(points)} points contain NaN or inf")

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
        if not self.has("anomaly", frame):
            return None
        return parse_kv_csv(self.file("anomaly", frame))

    def scenario_anomaly_info(self) -> dict | None:
        """The ANOMALY record of the first frame that has one (the scenario's anomaly), or None (normality)."""
        if not self.files.get("anomaly"):
            return None
        first = min(self.files["anomaly"])
        return parse_kv_csv(self.files["anomaly"][first])


assert len(GEN_A_PALETTE) >= 29
