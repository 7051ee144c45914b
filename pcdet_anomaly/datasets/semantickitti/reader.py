"""SemanticKITTI-layout reader (SemanticKITTI itself, and the STU anomaly benchmark that follows its layout).

    <root>/[sequences/]<seq>/velodyne/<frame:06d>.bin    float32 N x 4: x, y, z, intensity (LiDAR frame)
    <root>/[sequences/]<seq>/labels/<frame:06d>.label    uint32 N: semantic = value & 0xFFFF, instance = value >> 16
    <root>/[sequences/]<seq>/poses.txt, calib.txt          (optional)
    <root>/[sequences/]<seq>/<image dir>/<frame:06d>.png (optional: image_2 for SemanticKITTI, port_a_cam_0 for STU)

Camera calibration, in this order: a ROS camera folder (`camera_info` YAML of the camera, plumb_bob or equidistant
distortion, and a TF tree giving the camera's pose in the LiDAR frame, as STU's `camera_config/` ships them), else
the sequence's KITTI `calib.txt` (P<k> and Tr). Distorted images are undistorted onto the pinhole camera K when read,
so the model's pinhole projection is exact. Every problem raises FrameError naming the file and what is wrong.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ..anovox.reader import Calibration, FrameError, check_points

__all__ = ["SequenceReader", "list_sequences", "read_bin", "read_label", "write_bin", "write_label",
           "read_kitti_calib", "read_ros_camera", "undistort_map", "quat_to_matrix"]

_FRAME_RE = re.compile(r"^(\d+)$")


# ------------------------------------------------------------------------------------------------ files
def read_bin(path: Path) -> np.ndarray:
    """[N, 4] float32 x, y, z, intensity."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as err:
        raise FrameError(path, f"cannot read ({err})") from err
    size = path.stat().st_size
    if size % 16:
        raise FrameError(path, f"velodyne scan: {size} bytes is not a multiple of 16 (float32 x, y, z, intensity "
                               f"per point): the file is truncated or not a KITTI .bin")
    points = raw.reshape(-1, 4)
    check_points(path, points)
    return points


def read_label(path: Path, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (semantic [N] int64 = value & 0xFFFF, instance [N] int64 = value >> 16); the count must match the scan."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(path, "label file missing (every scan of a labelled sequence needs its .label)")
    size = path.stat().st_size
    if size % 4:
        raise FrameError(path, f"label file: {size} bytes is not a multiple of 4 (uint32 per point)")
    raw = np.fromfile(path, dtype=np.uint32)
    if len(raw) != num_points:
        raise FrameError(path, f"label file has {len(raw)} labels, its scan has {num_points} points")
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


def write_bin(path: Path, points: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(points[:, :4], dtype=np.float32).tofile(path)


def write_label(path: Path, semantic: np.ndarray, instance: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    value = ((np.asarray(instance).astype(np.uint32) & 0xFFFF) << 16) | (np.asarray(semantic).astype(np.uint32)
                                                                          & 0xFFFF)
    value.astype(np.uint32).tofile(path)


# ------------------------------------------------------------------------------------------------ calibration
def quat_to_matrix(x, y, z, w) -> np.ndarray:
    q = np.array([w, x, y, z], dtype=np.float64)
    n = np.linalg.norm(q)
    if n < 1e-9:
        raise ValueError("zero quaternion")
    w, x, y, z = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def read_kitti_calib(path: Path, camera: int = 2, image_hw=None) -> Calibration:
    """KITTI odometry calib.txt: `P<k>: 12 numbers` (rectified projection of camera k) and `Tr: 12 numbers`
    (LiDAR -> camera 0, rectification folded in). Camera k's pose differs from camera 0 by K^-1 P<k>[:, 3]."""
    path = Path(path)
    values = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise FrameError(path, f"line {lineno}: expected 'KEY: numbers', got {line!r}")
        key, rest = line.split(":", 1)
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError as err:
            raise FrameError(path, f"line {lineno} ({key.strip()}): {err}") from err
    for key in (f"P{camera}", "Tr"):
        if key not in values or len(values[key]) != 12:
            raise FrameError(path, f"needs '{key}' with 12 numbers (keys: {sorted(values)})")
    P = values[f"P{camera}"].reshape(3, 4)
    K = P[:, :3].copy()
    T = np.eye(4)
    T[:3] = values["Tr"].reshape(3, 4)
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(K, P[:, 3])
    return Calibration(K, offset @ T, tuple(image_hw) if image_hw else (0, 0), f"{path} (P{camera}, Tr)")


def _yaml_docs(path: Path) -> list:
    try:
        return [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise FrameError(path, f"malformed YAML: {err}") from err


_CAMERA_INFO_FIELDS = {"header", "height", "width", "distortion_model", "D", "K", "R", "P", "binning_x", "binning_y",
                       "roi"}


def _camera_infos(path: Path) -> dict:
    """{camera name: camera_info dict}. STU's intrinsics.txt is a `rostopic echo` dump per camera: a line
    `<name>:` at column 0, then the message's fields, also at column 0 (so it is not one YAML mapping); a properly
    nested YAML file ({name: {K: ..., ...}}) is read as well."""
    text = Path(path).read_text()
    blocks, name, lines = {}, None, []
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_./-]+):\s*$", line)
        if m and m.group(1) not in _CAMERA_INFO_FIELDS:
            if name is not None:
                blocks[name] = "\n".join(lines)
            name, lines = m.group(1), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        blocks[name] = "\n".join(lines)
    out = {}
    for cam, body in blocks.items():
        try:
            parsed = yaml.safe_load(body) if body.strip() else None
        except yaml.YAMLError as err:
            raise FrameError(path, f"camera '{cam}': malformed YAML: {err}") from err
        if isinstance(parsed, dict) and parsed:
            out[cam] = parsed
    if not out:                                      # nested YAML: {name: {K: ...}}
        for doc in _yaml_docs(path):
            if isinstance(doc, dict):
                out.update({k: v for k, v in doc.items() if isinstance(v, dict)})
    return out


def read_ros_camera(folder: Path, camera: str, lidar_frame: str = "os_sensor"):
    """STU's camera_config/: `intrinsics.txt` (ROS camera_info per camera name) and `extrinsics.txt` (a TF tree, one
    YAML document per transform). -> (Calibration with the camera matrix K, distortion model, coefficients D).

    A TF transform gives the child frame's pose in the parent frame (p_parent = R p_child + t); the chain from the
    LiDAR frame to the camera is composed, so lidar_to_cam = inverse(pose of the camera in the LiDAR frame)."""
    folder = Path(folder)
    intr_path, extr_path = folder / "intrinsics.txt", folder / "extrinsics.txt"
    for p in (intr_path, extr_path):
        if not p.is_file():
            raise FrameError(p, "missing (a ROS camera folder needs intrinsics.txt and extrinsics.txt)")
    info = _camera_infos(intr_path)
    if camera not in info:
        raise FrameError(intr_path, f"no camera '{camera}' (has {sorted(info)})")
    cam = info[camera]
    try:
        K = np.asarray(cam["K"], dtype=np.float64).reshape(3, 3)
        D = np.asarray(cam.get("D", []), dtype=np.float64)
        hw = (int(cam["height"]), int(cam["width"]))
        model = str(cam.get("distortion_model", "plumb_bob"))
    except (KeyError, ValueError, TypeError) as err:
        raise FrameError(intr_path, f"camera '{camera}': needs K (9 numbers), height, width ({err})") from err
    if model not in ("plumb_bob", "rational_polynomial", "equidistant"):
        raise FrameError(intr_path, f"camera '{camera}': distortion_model {model!r} is not supported "
                                    f"(plumb_bob, equidistant)")
    edges = {}
    for doc in _yaml_docs(extr_path):
        for tf in (doc or {}).get("transforms", []):
            try:
                parent, child = tf["header"]["frame_id"], tf["child_frame_id"]
                t, r = tf["transform"]["translation"], tf["transform"]["rotation"]
                pose = np.eye(4)
                pose[:3, :3] = quat_to_matrix(r["x"], r["y"], r["z"], r["w"])
                pose[:3, 3] = [t["x"], t["y"], t["z"]]
            except (KeyError, TypeError, ValueError) as err:
                raise FrameError(extr_path, f"malformed transform ({err})") from err
            edges[child] = (parent, pose)
    pose, frame = np.eye(4), camera         # pose of the camera in `frame`, walking up to the LiDAR frame
    seen = set()
    while frame != lidar_frame:
        if frame not in edges or frame in seen:
            raise FrameError(extr_path, f"no TF chain from '{lidar_frame}' to '{camera}' (frames: {sorted(edges)})")
        seen.add(frame)
        parent, p = edges[frame]
        pose, frame = p @ pose, parent
    return Calibration(K, np.linalg.inv(pose), hw, f"{folder} ({camera}, {model})"), model, D


def _distort(x, y, model, D):
    """Normalised undistorted pinhole coordinates -> distorted normalised coordinates."""
    if model == "equidistant":
        k = np.r_[D, np.zeros(4)][:4]
        r = np.sqrt(x * x + y * y)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + k[0] * t2 + k[1] * t2 ** 2 + k[2] * t2 ** 3 + k[3] * t2 ** 4)
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return x * scale, y * scale
    d = np.r_[D, np.zeros(8)][:8]          # k1 k2 p1 p2 k3 [k4 k5 k6]
    r2 = x * x + y * y
    radial = (1 + d[0] * r2 + d[1] * r2 ** 2 + d[4] * r2 ** 3) / (1 + d[5] * r2 + d[6] * r2 ** 2 + d[7] * r2 ** 3)
    xd = x * radial + 2 * d[2] * x * y + d[3] * (r2 + 2 * x * x)
    yd = y * radial + d[2] * (r2 + 2 * y * y) + 2 * d[3] * x * y
    return xd, yd


@lru_cache(maxsize=8)
def _cached_map(K_bytes, hw, model, D_bytes):
    K = np.frombuffer(K_bytes).reshape(3, 3)
    D = np.frombuffer(D_bytes)
    H, W = hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    xd, yd = _distort(x, y, model, D)
    return (K[0, 0] * xd + K[0, 2]).astype(np.float32), (K[1, 1] * yd + K[1, 2]).astype(np.float32)


def undistort_map(K: np.ndarray, hw, model: str, D: np.ndarray):
    """For each pixel of the undistorted (pinhole K) image, where to sample the distorted image: (map_x, map_y)."""
    return _cached_map(np.ascontiguousarray(K, np.float64).tobytes(), tuple(hw), model,
                       np.ascontiguousarray(D, np.float64).tobytes())


def remap_bilinear(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Bilinear sampling of an HxWxC image at (map_x, map_y); outside the source -> 0."""
    H, W = image.shape[:2]
    x0, y0 = np.floor(map_x).astype(np.int64), np.floor(map_y).astype(np.int64)
    fx, fy = (map_x - x0)[..., None], (map_y - y0)[..., None]
    img = image.astype(np.float32)
    out = np.zeros(map_x.shape + image.shape[2:], np.float32)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < W) & (y0 + 1 < H)
    xi, yi = x0[inside], y0[inside]
    a, b = img[yi, xi], img[yi, xi + 1]
    c, d = img[yi + 1, xi], img[yi + 1, xi + 1]
    fxi, fyi = fx[inside], fy[inside]
    out[inside] = (a * (1 - fxi) + b * fxi) * (1 - fyi) + (c * (1 - fxi) + d * fxi) * fyi
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ sequences
def list_sequences(root: Path) -> list[Path]:
    """Sequence folders (those holding velodyne/), under root or root/sequences."""
    root = Path(root)
    base = root / "sequences" if (root / "sequences").is_dir() else root
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and (p / "velodyne").is_dir())


class SequenceReader:
    """One sequence: frames, scans, labels, images and calibration (camera: a dict of DATA_CONFIG.CAMERA keys)."""

    def __init__(self, path: Path, camera=None, require_labels: bool = True):
        self.path = Path(path)
        self.name = self.path.name
        self.problems: list[str] = []
        self.frames = []
        for f in sorted((self.path / "velodyne").glob("*.bin")):
            if _FRAME_RE.match(f.stem):
                self.frames.append(int(f.stem))
        self.stems = {int(f.stem): f.stem for f in (self.path / "velodyne").glob("*.bin") if _FRAME_RE.match(f.stem)}
        self.has_labels = (self.path / "labels").is_dir()
        if require_labels and not self.has_labels:
            self.problems.append(f"{self.path / 'labels'}: no labels folder")
        self.camera = camera
        self._calib = None
        self._undistort = None
        self.image_dir = None
        if camera is not None and camera.get("IMAGE_DIR"):
            folder = self.path / camera["IMAGE_DIR"]
            self.image_dir = folder if folder.is_dir() else None

    def stem(self, frame: int) -> str:
        return self.stems.get(frame, f"{frame:06d}")

    def scan_path(self, frame: int) -> Path:
        return self.path / "velodyne" / f"{self.stem(frame)}.bin"

    def label_path(self, frame: int) -> Path:
        return self.path / "labels" / f"{self.stem(frame)}.label"

    def read_points(self, frame: int) -> np.ndarray:
        return read_bin(self.scan_path(frame))

    def read_labels(self, frame: int, num_points: int) -> tuple[np.ndarray, np.ndarray]:
        return read_label(self.label_path(frame), num_points)

    def image_path(self, frame: int) -> Path | None:
        if self.image_dir is None:
            return None
        for ext in (".png", ".jpg"):
            p = self.image_dir / f"{self.stem(frame)}{ext}"
            if p.is_file():
                return p
        return None

    @property
    def calibration(self) -> Calibration:
        """Pinhole calibration of the (undistorted) image; FrameError when none is available."""
        if self._calib is None:
            cam = self.camera or {}
            if cam.get("CONFIG_DIR"):
                from ...utils.common_utils import resolve_path
                calib, model, D = read_ros_camera(resolve_path(cam["CONFIG_DIR"]), cam["NAME"], cam["LIDAR_FRAME"])
                if np.any(D != 0):
                    self._undistort = (model, D)
            elif (self.path / "calib.txt").is_file():
                hw = None
                first = self.image_path(self.frames[0]) if self.frames else None
                if first is not None:
                    with Image.open(first) as img:
                        hw = (img.height, img.width)
                calib = read_kitti_calib(self.path / "calib.txt", int(cam.get("KITTI_CAMERA", 2)), hw)
            else:
                raise FrameError(self.path, "no camera calibration: neither DATA_CONFIG.CAMERA.CONFIG_DIR (ROS "
                                            "camera_info + TF) nor the sequence's calib.txt")
            self._calib = calib
        return self._calib

    def read_rgb(self, frame: int) -> np.ndarray:
        """H x W x 3 uint8, undistorted onto the calibration's pinhole camera K."""
        path = self.image_path(frame)
        if path is None:
            raise FrameError(self.path / str(self.camera.get("IMAGE_DIR") if self.camera else "?"),
                             f"frame {frame}: no image")
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception as err:
            raise FrameError(path, f"cannot read image ({type(err).__name__}: {err})") from err
        calib = self.calibration
        if calib.image_hw == (0, 0):
            calib.image_hw = rgb.shape[:2]
        if rgb.shape[:2] != tuple(calib.image_hw):
            raise FrameError(path, f"image is {rgb.shape[1]} x {rgb.shape[0]}, the calibration says "
                                   f"{calib.image_hw[1]} x {calib.image_hw[0]}")
        if self._undistort is not None:
            model, D = self._undistort
            mx, my = undistort_map(calib.intrinsics, calib.image_hw, model, D)
            rgb = remap_bilinear(rgb, mx, my)
        return rgb

    def read_poses(self) -> np.ndarray | None:
        path = self.path / "poses.txt"
        if not path.is_file():
            return None
        try:
            poses = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise FrameError(path, f"malformed ({err})") from err
        if poses.shape[1] != 12:
            raise FrameError(path, f"expected 12 numbers per line (3 x 4 pose), got {poses.shape[1]}")
        out = np.tile(np.eye(4), (len(poses), 1, 1))
        out[:, :3] = poses.reshape(-1, 3, 4)
        return out
