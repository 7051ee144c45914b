"""Multimodal instance copy-paste (OpenPCDet's ground-truth sampling, extended to the camera), and REAL-style outlier
synthesis for the normality regime.

Database: the instances of the training split, each with its LiDAR points and label ids, and its image patch (the
pixels of the instance's label in the SEMANTIC-CAM image near the instance's projected points) with the DEPTH-CAM
depth of every patch pixel. Instances are connected components (`eps` m) of the points of the chosen labels.

Pasting, into a training frame in its original LiDAR frame (before the geometric augmentation):
* the instance turns about the sensor's vertical axis to a new azimuth (inside the camera's field of view when it
  came from it), so its range, height and LiDAR scan pattern stay those of a real scan; REAL mode also rescales it
  about its base (an unknown object made from a known one); with RANGE_SHIFT_PROB it is also moved farther along
  its ray (uniformly up to RANGE_SHIFT_MAX), its base set on the road there, and its scan thinned as a scan from
  there would see it: whole rings kept evenly in proportion r0 / r1, and points within a ring in the same
  proportion (never moved nearer: a scan cannot be densified);
* it is placed only where the frame has drivable ground (road points under the footprint, nothing standing there);
* LiDAR: frame points behind the instance along its rays (same azimuth / elevation bin, farther) are removed, and
  instance points behind frame points are dropped; the instance is thinned like the frame (MAX_POINTS);
* camera: each patch pixel is lifted to 3D with its depth, moved with the instance and re-projected; it is drawn
  where it is nearer than the frame's depth image (depth test), so both modalities agree.
The AnoVox camera and LiDAR share one mounting point (sensor_setup); where they do not, the patch is still moved
with the instance in 3D (only the occlusions seen from two centres may differ slightly).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Instance", "InstanceDatabase", "paste_instances", "free_ground", "recoloured"]

ROAD_IDS = (1, 24)          # road, road line (AnoVox / CARLA ids): drivable ground


@dataclass
class Instance:
    points: np.ndarray          # [n, 4] x, y, z, intensity (LiDAR frame of its source frame)
    label_ids: np.ndarray       # [n]
    pix_uv: np.ndarray          # [m, 2] int pixel (u, v) at the source image resolution
    pix_rgb: np.ndarray         # [m, 3] uint8
    pix_depth: np.ndarray       # [m] planar depth, metres
    source: str


def _components(xyz: np.ndarray, eps: float) -> np.ndarray:
    from ..evaluation.point_eval import connected_components
    return connected_components(xyz, eps)


class InstanceDatabase:
    """Instances of `label_ids` from the given (reader, frame) pairs of a dataset (its point_label_ids gives the
    per-point labels)."""

    def __init__(self, instances: list[Instance]):
        self.instances = instances

    def __len__(self):
        return len(self.instances)

    @classmethod
    def build(cls, dataset, frames, label_ids, min_points: int = 15, eps: float = 0.8, max_extent: float = 8.0,
              logger: logging.Logger | None = None, bad_frame_policy: str = "skip") -> "InstanceDatabase":
        from .anovox.reader import FrameError
        label_ids = np.asarray(sorted(label_ids))
        out = []
        for name, frame in frames:
            reader = dataset.readers[name]
            try:
                points = reader.read_points(frame)
                ids = dataset.point_label_ids(reader, frame, points)
            except FrameError as err:       # a bad frame gives no instance (the training loop reports it again)
                if bad_frame_policy == "stop":
                    raise
                if logger:
                    logger.warning("copy-paste database: skipping bad frame %s %d: %s", name, frame, err)
                continue
            sel = np.isin(ids, label_ids)
            if sel.sum() < min_points:
                continue
            pts, lab = points[sel], ids[sel]
            comp = _components(pts[:, :3], eps)
            try:
                sem_img = reader.read_semantic_image(frame)
                rgb = reader.read_rgb(frame)
                depth = reader.read_depth(frame)
            except FrameError as err:      # no usable camera data: a LiDAR-only instance
                if logger:
                    logger.warning("copy-paste database: %s %d without camera patch (%s)", name, frame, err)
                sem_img = rgb = depth = None
            calib = reader.calibration
            pix_comp = ndimage.label(np.isin(sem_img, label_ids))[0] if sem_img is not None else None
            for c in np.unique(comp):
                m = comp == c
                if m.sum() < min_points or np.ptp(pts[m, :3], 0)[:2].max() > max_extent:
                    continue
                inst_pts = pts[m]
                uv = np.zeros((0, 2), np.int64)
                prgb, pdep = np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
                if pix_comp is not None:
                    cam = inst_pts[:, :3] @ calib.lidar_to_cam[:3, :3].T + calib.lidar_to_cam[:3, 3]
                    front = cam[:, 2] > 0.5
                    if front.any():
                        u = np.round(calib.intrinsics[0, 0] * cam[front, 0] / cam[front, 2] + calib.intrinsics[0, 2])
                        v = np.round(calib.intrinsics[1, 1] * cam[front, 1] / cam[front, 2] + calib.intrinsics[1, 2])
                        H, W = pix_comp.shape
                        ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
                        hits = pix_comp[v[ok].astype(int), u[ok].astype(int)]
                        hits = hits[hits > 0]
                        if len(hits):     # the pixel components the instance's points fall in
                            keep_c = np.unique(hits)
                            vv, uu = np.nonzero(np.isin(pix_comp, keep_c))
                            uv = np.stack([uu, vv], 1)
                            prgb, pdep = rgb[vv, uu], depth[vv, uu]
                out.append(Instance(inst_pts.copy(), lab[m].copy(), uv, prgb, pdep, f"{name}/{frame}"))
        if logger:
            logger.info("copy-paste database: %d instances of labels %s from %d frames (%d with an image patch)",
                        len(out), label_ids.tolist(), len(frames), sum(len(i.pix_uv) > 0 for i in out))
        return cls(out)


def free_ground(points: np.ndarray, label_ids: np.ndarray, near: np.ndarray, road_share: float,
                base_z: float | None = None) -> float | None:
    """A footprint (`near`: a mask of the frame's points) as a place to stand something on: at least 3 points, more
    than `road_share` of them drivable ground, none higher than 0.25 m above `base_z` (default: the median height of
    its road points). -> base_z, or None where the footprint is not free drivable ground."""
    if near.sum() < 3:
        return None
    road = np.isin(label_ids[near], ROAD_IDS)
    if not road.mean() > road_share:
        return None
    if base_z is None:
        base_z = float(np.median(points[near][road, 2]))
    return None if (points[near, 2] > base_z + 0.25).any() else base_z


def _rot_z(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _angles(xyz):
    r = np.linalg.norm(xyz, axis=1)
    az = np.arctan2(xyz[:, 1], xyz[:, 0])
    el = np.arcsin(np.clip(xyz[:, 2] / np.maximum(r, 1e-6), -1, 1))
    return az, el, r


def paste_instances(rng: np.random.Generator, db: InstanceDatabase, points: np.ndarray, label_ids: np.ndarray,
                    rgb: np.ndarray | None, depth: np.ndarray | None, calib, cfg, keep_fraction: float = 1.0,
                    new_label: int | None = None, sem_img: np.ndarray | None = None):
    """Paste up to cfg.MAX_INSTANCES instances. -> (points, label_ids, rgb, number pasted, mask of pasted points).
    `new_label` relabels the pasted points (REAL: an unknown object made from a known one); cfg.SCALE_RANGE rescales
    them about their base. `sem_img` (the frame's SEMANTIC-CAM label image) is painted in place with the pasted
    instance's label where its patch is drawn."""
    is_pasted = np.zeros(len(points), bool)
    if not len(db):
        return points, label_ids, rgb, 0, is_pasted
    n_paste = int(rng.integers(1, int(cfg.MAX_INSTANCES) + 1))
    bin_az, bin_el = np.radians(cfg.OCCLUSION_BIN_DEG[0]), np.radians(cfg.OCCLUSION_BIN_DEG[1])
    hfov = None
    if rgb is not None:
        hfov = 2 * np.arctan(rgb.shape[1] / 2 / calib.intrinsics[0, 0])
    pasted = 0
    occupied = [] if cfg.AVOID_OVERLAP else None
    for _ in range(n_paste):
        for _attempt in range(int(cfg.ATTEMPTS)):
            inst = db.instances[int(rng.integers(len(db)))]
            ip = inst.points[:, :3].astype(np.float64)
            centre = ip.mean(0)
            base_z = ip[:, 2].min()
            scale = float(rng.uniform(*cfg.SCALE_RANGE)) if cfg.SCALE_RANGE else 1.0
            stretch = cfg.get("STRETCH_RANGE", [])
            if stretch:                 # each axis its own factor on top: a shape no known class has
                scale = scale * rng.uniform(float(stretch[0]), float(stretch[1]), 3)
            az0 = np.arctan2(centre[1], centre[0])
            if hfov is not None and len(inst.pix_uv) and rng.random() < cfg.IN_VIEW_PROB:
                target_az = rng.uniform(-0.45 * hfov, 0.45 * hfov)
            else:
                target_az = rng.uniform(-np.pi, np.pi)
            R = _rot_z(target_az - az0)
            new = ip @ R.T
            new_c = centre @ R.T
            if np.any(scale != 1.0):    # about the base point under the centre
                pivot = np.array([new_c[0], new_c[1], base_z])
                new = pivot + (new - pivot) * scale
            shift, r_ratio = np.zeros(3), 1.0
            r0 = float(np.linalg.norm(new_c[:2]))
            if (getattr(cfg, "RANGE_SHIFT_PROB", 0.0) > 0 and r0 > 1.0 and r0 < cfg.RANGE_SHIFT_MAX - 1.0
                    and rng.random() < cfg.RANGE_SHIFT_PROB):
                # farther along its own ray (a scan can be thinned, never densified): the base lands on the road
                # there (the median height of the frame's road points under the new footprint)
                r1 = float(rng.uniform(r0, cfg.RANGE_SHIFT_MAX))
                shift[:2] = new_c[:2] * (r1 / r0 - 1.0)
                r_ratio = r0 / r1
            new, new_c = new + shift, new_c + shift
            radius = max(0.4, 0.5 * np.ptp(new[:, :2], 0).max())
            # drivable ground under the footprint and nothing standing there
            near = np.linalg.norm(points[:, :2] - new_c[:2], axis=1) < radius + 0.3
            if r_ratio < 1.0:           # moved: its base onto the road there
                road = near & np.isin(label_ids, ROAD_IDS)
                if road.sum() < 3:
                    continue
                shift[2] = float(np.median(points[road, 2])) - base_z
                new[:, 2] += shift[2]
                new_c[2] += shift[2]
                base_z += shift[2]
            if free_ground(points, label_ids, near, 0.6, base_z) is None:
                continue
            if occupied is not None and any(np.linalg.norm(new_c[:2] - c) < radius + r + 0.5 for c, r in occupied):
                continue
            break
        else:
            continue
        # thin the instance like the frame (MAX_POINTS), and by scale^2 when it shrinks (a smaller object at the same
        # range meets proportionally fewer beams), never to nothing
        # (stretched: the area it shows the sensor, horizontal extent times height)
        area = scale * scale if np.ndim(scale) == 0 else float(np.sqrt(scale[0] * scale[1]) * scale[2])
        fraction = keep_fraction * min(1.0, area)
        k = np.ones(len(new), bool)
        if r_ratio < 1.0:           # moved farther: the beams it meets there (whole rings, fewer points per ring)
            k &= _ring_thinning(inst.points[:, :3].astype(np.float64), r_ratio, rng)
        if fraction < 1.0:
            k &= rng.random(len(new)) < fraction
        if not k.all():
            if k.sum() < 3:
                continue
            new, inst_pts, inst_lab = new[k], inst.points[k], inst.label_ids[k]
        else:
            inst_pts, inst_lab = inst.points, inst.label_ids
        # LiDAR occlusion by angular bins
        az_t, el_t, r_t = _angles(points[:, :3].astype(np.float64))
        az_o, el_o, r_o = _angles(new)
        key = lambda az, el: (np.floor(az / bin_az).astype(np.int64) * 100_000 + np.floor(el / bin_el).astype(np.int64))
        ko, kt = key(az_o, el_o), key(az_t, el_t)
        order = np.argsort(ko)
        uk, first = np.unique(ko[order], return_index=True)
        min_r = np.minimum.reduceat(r_o[order], first)
        pos = np.clip(np.searchsorted(uk, kt), 0, len(uk) - 1)
        same = uk[pos] == kt
        behind = same & (r_t > min_r[pos] - 0.05)
        # instance points hidden by frame points in front of them
        tk_order = np.argsort(kt)
        utk, tfirst = np.unique(kt[tk_order], return_index=True)
        tmin = np.minimum.reduceat(r_t[tk_order], tfirst)
        opos = np.clip(np.searchsorted(utk, ko), 0, len(utk) - 1)
        hidden = (utk[opos] == ko) & (tmin[opos] < r_o - 0.3)
        keep_obj = ~hidden
        if keep_obj.sum() < 3:
            continue
        recolour = cfg.get("RECOLOR_PROB", 0.0) > 0 and rng.random() < cfg.RECOLOR_PROB
        intensity = inst_pts[keep_obj, 3:4]
        if recolour:                    # an appearance its class does not have, in both modalities
            intensity = intensity * rng.uniform(0.3, 3.0)
        obj = np.concatenate([new[keep_obj], intensity], 1).astype(points.dtype)
        obj_lab = inst_lab[keep_obj] if new_label is None else np.full(int(keep_obj.sum()), new_label, np.int64)
        points = np.concatenate([points[~behind], obj])
        label_ids = np.concatenate([label_ids[~behind], obj_lab])
        is_pasted = np.concatenate([is_pasted[~behind], np.ones(len(obj), bool)])
        if occupied is not None:
            occupied.append((new_c[:2], radius))
        pasted += 1
        # camera: lift the patch to 3D, move it with the instance, re-project with a depth test
        if rgb is not None and len(inst.pix_uv):
            label = new_label if new_label is not None else int(np.bincount(inst.label_ids).argmax())
            colours = recoloured(inst.pix_rgb, rng) if recolour else inst.pix_rgb
            rgb = _paste_patch(rgb, depth, calib, inst, R, scale, base_z - shift[2], new_c - shift, sem_img, label,
                               shift, colours)
    return points, label_ids, rgb, pasted, is_pasted


def _ring_thinning(xyz: np.ndarray, r_ratio: float, rng: np.random.Generator, gap_deg: float = 0.25) -> np.ndarray:
    """Which points of an instance scanned at range r0 a scan at r1 = r0 / r_ratio would keep (approximately): its
    rings (points grouped by elevation, split where consecutive elevations differ by more than `gap_deg`) are kept
    evenly, ceil(n_rings * r_ratio) of them (the beams' angular spacing now spans r1 / r0 times as much of the
    object), and within a kept ring each point with probability r_ratio (so does the azimuth step)."""
    el = np.degrees(np.arctan2(xyz[:, 2], np.linalg.norm(xyz[:, :2], axis=1)))
    order = np.argsort(el)
    ring = np.zeros(len(el), np.int64)
    ring[order] = np.concatenate([[0], np.cumsum(np.diff(el[order]) > gap_deg)])
    n = int(ring.max()) + 1
    n_keep = max(1, int(np.ceil(n * r_ratio)))
    offset = rng.random()
    kept = np.unique(np.floor((np.arange(n_keep) + offset) * n / n_keep).astype(np.int64).clip(0, n - 1))
    return np.isin(ring, kept) & (rng.random(len(el)) < r_ratio)


def recoloured(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour transform of uint8 pixels [m, 3]: channels permuted, each scaled by its own gain in
    [0.4, 1.6], and the result inverted with probability 0.5. Shading survives (the transform is per channel and
    monotone); the hue and brightness of the class do not."""
    out = rgb[:, rng.permutation(3)].astype(np.float32) * rng.uniform(0.4, 1.6, 3).astype(np.float32)
    out = np.clip(out, 0, 255)
    if rng.random() < 0.5:
        out = 255.0 - out
    return out.astype(np.uint8)


def _paste_patch(rgb, depth, calib, inst, R, scale, base_z, new_c, sem_img, label, shift, colours):
    """Draw `colours` (one per patch pixel of `inst`: its own, or recoloured) where the moved patch lands."""
    K, T = calib.intrinsics, calib.lidar_to_cam
    u, v = inst.pix_uv[:, 0].astype(np.float64), inst.pix_uv[:, 1].astype(np.float64)
    d = inst.pix_depth.astype(np.float64)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], 1)
    inv = np.linalg.inv(T)
    lidar = cam @ inv[:3, :3].T + inv[:3, 3]
    moved = lidar @ R.T
    if np.any(scale != 1.0):          # a float, or one factor per axis (STRETCH_RANGE)
        pivot = np.array([new_c[0], new_c[1], base_z])
        moved = pivot + (moved - pivot) * scale
    if shift is not None:
        moved = moved + shift
    cam2 = moved @ T[:3, :3].T + T[:3, 3]
    z = cam2[:, 2]
    ok = z > 0.5
    H, W = rgb.shape[:2]
    foot = int(np.ceil(np.max(scale))) + 1      # splat size: no holes from rounding, nor when the patch grows
    uu = np.floor(K[0, 0] * cam2[ok, 0] / z[ok] + K[0, 2]).astype(np.int64)
    vv = np.floor(K[1, 1] * cam2[ok, 1] / z[ok] + K[1, 2]).astype(np.int64)
    colours, zs = colours[ok], z[ok]
    order = np.argsort(-zs)                     # far first: nearer patch pixels overwrite
    uu, vv, colours, zs = uu[order], vv[order], colours[order], zs[order]
    out = rgb.copy()
    for dy in range(foot):
        for dx in range(foot):
            x, y = uu + dx, vv + dy
            inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
            x, y, c, zz = x[inside], y[inside], colours[inside], zs[inside]
            visible = zz < (depth[y, x] if depth is not None else np.inf)
            out[y[visible], x[visible]] = c[visible]
            if sem_img is not None and sem_img.shape == rgb.shape[:2]:
                sem_img[y[visible], x[visible]] = label
    return out
