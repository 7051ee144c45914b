"""Synthetic LiDAR, camera and voxel-grid sensors over a Scenario (mono AnoVox sensor set geometry)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .raycast import GROUND_HIT, MISS, cast_rays
from .scene import CLASS_STYLE, Scenario

__all__ = ["LidarSpec", "CameraSpec", "scan_lidar", "render_camera", "build_voxel_grid", "encode_depth",
           "ground_labels"]

SKY, ROAD, ROAD_LINE, TERRAIN = 11, 1, 24, 10


@dataclass
class LidarSpec:
    channels: int = 64
    upper_fov: float = 15.0
    lower_fov: float = -25.0
    range: float = 100.0
    azimuth_steps: int = 1800
    rotation_frequency: float = 10.0
    noise_stddev: float = 0.1
    dropoff_general_rate: float = 0.1
    atmosphere_attenuation_rate: float = 0.004
    height: float = 1.8


@dataclass
class CameraSpec:
    width: int = 768
    height: int = 512
    fov: float = 90.0
    height_m: float = 1.8

    @property
    def intrinsics(self) -> np.ndarray:
        f = self.width / (2.0 * np.tan(np.deg2rad(self.fov) / 2.0))
        return np.array([[f, 0, self.width / 2.0], [0, f, self.height / 2.0], [0, 0, 1.0]])


def ground_labels(xy: np.ndarray, road_half_width: float) -> np.ndarray:
    """Label of ground hits by position: road, lane markings (dashed centre and lane lines, solid edges), terrain."""
    x, y = xy[:, 0], xy[:, 1]
    labels = np.full(len(xy), TERRAIN, dtype=np.int32)
    on_road = np.abs(y) <= road_half_width
    labels[on_road] = ROAD
    dashed = (np.mod(x, 6.0) < 3.0)
    line = (np.abs(y) < 0.08) & dashed
    line |= (np.abs(np.abs(y) - 3.5) < 0.08) & dashed
    line |= np.abs(np.abs(y) - (road_half_width - 0.25)) < 0.08
    labels[on_road & line] = ROAD_LINE
    return labels


def _hit_semantics(scenario: Scenario, arrays: dict, points_world: np.ndarray, hit: np.ndarray):
    """Label, instance id, reflectivity per hit (hit >= 0: primitive; GROUND_HIT: ground; MISS: sky)."""
    labels = np.full(len(hit), SKY, dtype=np.int32)
    instance = np.zeros(len(hit), dtype=np.int32)
    reflect = np.zeros(len(hit))
    prim = hit >= 0
    labels[prim] = arrays["label"][hit[prim]]
    instance[prim] = arrays["instance"][hit[prim]]
    reflect[prim] = arrays["reflectivity"][hit[prim]]
    ground = hit == GROUND_HIT
    labels[ground] = ground_labels(points_world[ground, :2], scenario.params.road_half_width)
    instance[ground] = 1
    reflect[ground] = np.where(labels[ground] == ROAD_LINE, CLASS_STYLE[24][1],
                               np.where(labels[ground] == ROAD, CLASS_STYLE[1][1], CLASS_STYLE[10][1]))
    return labels, instance, reflect


def lidar_directions(spec: LidarSpec) -> np.ndarray:
    elevation = np.deg2rad(np.linspace(spec.upper_fov, spec.lower_fov, spec.channels))
    azimuth = np.linspace(-np.pi, np.pi, spec.azimuth_steps, endpoint=False)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)


def scan_lidar(scenario: Scenario, time_s: float, spec: LidarSpec, rng: np.random.Generator):
    """One LiDAR sweep at `time_s`.

    Returns (lidar [N, 4] float32 x, y, z, intensity with noise and dropout; semantic [M, 4] float64 x, y, z,
    label from a noise-free sensor at the same pose). Both in the sensor frame (x forward, y left, z up).
    """
    arrays = scenario.prims.arrays(time_s)
    sensor = scenario.ego_position(time_s) + np.array([0.0, 0.0, spec.height])
    dirs = lidar_directions(spec)
    t, hit, _ = cast_rays(sensor, dirs, spec.range, arrays["kind"], arrays["centre"], arrays["half"],
                          arrays["yaw"])
    valid = hit != MISS
    t, hit, dirs = t[valid], hit[valid], dirs[valid]
    points_world = sensor + dirs * t[:, None]
    labels, _, reflect = _hit_semantics(scenario, arrays, points_world, hit)
    semantic = np.concatenate([dirs * t[:, None], labels[:, None].astype(np.float64)], 1)
    keep = rng.random(len(t)) >= spec.dropoff_general_rate
    noisy_t = t[keep] + rng.normal(0.0, spec.noise_stddev, keep.sum())
    xyz = dirs[keep] * noisy_t[:, None]
    intensity = reflect[keep] * np.exp(-spec.atmosphere_attenuation_rate * noisy_t)
    intensity = np.clip(intensity + rng.normal(0.0, 0.02, len(intensity)), 0.0, 1.0)
    lidar = np.concatenate([xyz, intensity[:, None]], 1).astype(np.float32)
    return lidar, semantic.astype(np.float64)


def _value_noise(points: np.ndarray, scale: float) -> np.ndarray:
    cell = np.floor(points * scale).astype(np.int64)
    h = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (cell[:, 2] * 83492791)
    return ((h & 0xFFFF) / 65535.0).astype(np.float64)


def render_camera(scenario: Scenario, time_s: float, spec: CameraSpec, rng: np.random.Generator):
    """Render RGB (uint8 H x W x 3), planar depth in metres (float32 H x W), semantic ids (uint8), instance ids."""
    arrays = scenario.prims.arrays(time_s)
    cam = scenario.ego_position(time_s) + np.array([0.0, 0.0, spec.height_m])
    K = spec.intrinsics
    u, v = np.meshgrid(np.arange(spec.width) + 0.5, np.arange(spec.height) + 0.5)
    X = (u - K[0, 2]) / K[0, 0]
    Y = (v - K[1, 2]) / K[1, 1]
    # camera (X right, Y down, Z forward) -> world (x forward, y left, z up)
    d = np.stack([np.ones_like(X), -X, -Y], -1).reshape(-1, 3)
    planar = np.linalg.norm(d, axis=1)
    dirs = d / planar[:, None]
    t, hit, normal = cast_rays(cam, dirs, 1000.0, arrays["kind"], arrays["centre"], arrays["half"], arrays["yaw"])
    hit_world = cam + dirs * np.where(np.isfinite(t), t, 0.0)[:, None]
    labels, instance, _ = _hit_semantics(scenario, arrays, hit_world, hit)
    depth = np.where(np.isfinite(t), t / planar, 1000.0)

    w = scenario.weather
    colour = np.zeros((len(t), 3))
    prim = hit >= 0
    idx = hit[prim]
    pattern = arrays["pattern"][idx]
    local = hit_world[prim] - arrays["centre"][idx]
    checker = (np.floor(local * 2.5).sum(1).astype(np.int64) % 2 == 0)
    stripes = (np.floor(local[:, 2] * 4.0).astype(np.int64) % 2 == 0)
    use_b = np.where(pattern == 1, checker, np.where(pattern == 2, stripes, False))
    colour[prim] = np.where(use_b[:, None], arrays["colour_b"][idx], arrays["colour_a"][idx])
    ground = hit == GROUND_HIT
    for label_id in (ROAD, ROAD_LINE, TERRAIN):
        colour[ground & (labels == label_id)] = CLASS_STYLE[label_id][0]
    solid = prim | ground
    texture = 0.85 + 0.3 * _value_noise(hit_world[solid], 6.0) * 0.5 + 0.15 * _value_noise(hit_world[solid], 1.0)
    shade = 0.45 + 0.75 * np.clip(normal[solid] @ w["sun"], 0.0, 1.0)
    colour[solid] *= (texture * shade)[:, None]
    sky_rows = np.clip(0.6 + 0.4 * dirs[~solid, 2:3], 0, 1)
    colour[~solid] = np.asarray(w["sky"]) * sky_rows + (1 - sky_rows) * 0.9
    fog = 1.0 - np.exp(-w["fog"] * np.minimum(depth, 300.0))
    colour = colour * (1 - fog[:, None]) + 0.75 * fog[:, None]
    colour = colour * w["brightness"] * np.asarray(w["tint"])
    colour += rng.normal(0.0, w["noise"], colour.shape)
    rgb = (np.clip(colour, 0, 1) * 255).round().astype(np.uint8).reshape(spec.height, spec.width, 3)
    shape = (spec.height, spec.width)
    return rgb, depth.reshape(shape).astype(np.float32), labels.reshape(shape).astype(np.uint8), \
        instance.reshape(shape).astype(np.int32)


def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    """Simulator depth encoding: depth_m = 1000 * (R + 256 G + 65536 B) / (256**3 - 1)."""
    value = np.round(np.clip(depth_m, 0, 1000.0) / 1000.0 * (256 ** 3 - 1)).astype(np.int64)
    return np.stack([value & 255, (value >> 8) & 255, (value >> 16) & 255], -1).astype(np.uint8)


def build_voxel_grid(semantic_points: np.ndarray, voxel_size: float = 0.5, grid_size=(1000, 1000, 64),
                     offset=(250.0, 250.0, 16.0), z_shift: float = -1.8) -> np.ndarray:
    """AnoVox generator rule: a voxel holding any road-line point is 24, else the label of the point nearest the
    voxel's lower corner. Returns uint16 [M, 4] (ix, iy, iz, label) sorted by ix + 1000 iy + 10^6 iz."""
    xyz = semantic_points[:, :3] + np.array([0.0, 0.0, z_shift])
    labels = semantic_points[:, 3].astype(np.int64)
    idx = np.floor((xyz + np.asarray(offset)) / voxel_size).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(grid_size)), axis=1)
    idx, labels, xyz = idx[inside], labels[inside], xyz[inside]
    if len(idx) == 0:
        return np.zeros((0, 4), dtype=np.uint16)
    key = idx[:, 0] + 1000 * idx[:, 1] + 1_000_000 * idx[:, 2]
    corner = idx * voxel_size - np.asarray(offset)
    dist = np.linalg.norm(xyz - corner, axis=1)
    is_line = labels == ROAD_LINE
    # within a voxel: road-line points first, then by distance to the lower corner
    order = np.lexsort((dist, ~is_line, key))
    key_sorted = key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = key_sorted[1:] != key_sorted[:-1]
    chosen = order[first]
    return np.concatenate([idx[chosen], labels[chosen, None]], 1).astype(np.uint16)
