"""Raised road patches (REL's "point raise"): an outlier synthesis for the normality regime that borrows no known
class's shape.

A patch of drivable ground of the training frame is raised into a mesa: a superellipse footprint (semi-axes a, b,
exponent p, turned by a yaw), a top at height H above the local road (tilted, slightly rough) and sloped sides (the
outer fraction w of the footprint falls to the road with a smoothstep). No anomaly shape family of the synthetic
generator is a deformation of the road itself, and its dome-free profile is not a rock (the held-out "boulder").

Both modalities see the same surface, by ray casting:
* LiDAR: every frame point whose ray passes over the footprint is re-cast against the raised surface along its own
  ray (the scan pattern stays the frame's); where the ray meets the surface before its recorded return, the point
  moves to the hit and is labelled `new_label` (what was behind is hidden by construction);
* camera: the pixels whose ray meets the surface before the frame's depth image are redrawn with the road texture
  under the hit (the colour the road had there), shaded by the surface's tilt (its sides darker); the SEMANTIC-CAM
  image, when given, gets `new_label` there.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .copy_paste import ROAD_IDS, free_ground

__all__ = ["Mesa", "sample_mesa", "raise_patches"]

_STEP = 0.04            # m, ray-marching step


@nb.njit(cache=True, fastmath=True)
def _height(x, y, prm):
    """Height above the road plane at (x, y) (scalars); prm: cx, cy, a, b, p, cos yaw, sin yaw, height, side,
    tilt u, tilt v, roughness amplitude, wavenumber, phase u, phase v."""
    dx, dy = x - prm[0], y - prm[1]
    u = prm[5] * dx + prm[6] * dy
    v = -prm[6] * dx + prm[5] * dy
    p = prm[4]
    d = (abs(u / prm[2]) ** p + abs(v / prm[3]) ** p) ** (1.0 / p)
    s = min(max((1.0 - d) / prm[8], 0.0), 1.0)
    if s <= 0.0:
        return 0.0
    top = prm[7] * (1.0 + prm[9] * u / prm[2] + prm[10] * v / prm[3])
    top += prm[11] * np.sin(prm[12] * u + prm[13]) * np.sin(prm[12] * v + prm[14])
    return s * s * (3.0 - 2.0 * s) * max(top, 0.05)


@nb.njit(cache=True)
def _heights(x, y, prm):
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = _height(x[i], y[i], prm)
    return out


@nb.njit(cache=True)
def _march(o, dirs, t0, t1, z0, prm, step):
    """First t in [t0, t1] per ray where o + t * dir is under the surface (raised by more than 1 cm there: the
    road around it, with its own unevenness, is never "hit"); inf where none. A ray that starts under it is not
    cast from outside: no hit."""
    out = np.full(dirs.shape[0], np.inf)
    for i in range(dirs.shape[0]):
        dx, dy, dz = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        speed = (dx * dx + dy * dy + dz * dz) ** 0.5
        if t1[i] <= t0[i] or speed == 0.0:
            continue
        n = int(np.ceil((t1[i] - t0[i]) * speed / step)) + 1
        prev = t0[i]
        for k in range(n + 1):
            t = t0[i] + (t1[i] - t0[i]) * k / n
            x, y, z = o[0] + t * dx, o[1] + t * dy, o[2] + t * dz
            h = _height(x, y, prm)
            if h > 0.01 and z <= z0 + h:
                if k == 0:
                    break
                lo, hi = prev, t
                for _ in range(10):
                    mid = 0.5 * (lo + hi)
                    hm = _height(o[0] + mid * dx, o[1] + mid * dy, prm)
                    if hm > 0.01 and o[2] + mid * dz <= z0 + hm:
                        hi = mid
                    else:
                        lo = mid
                out[i] = hi
                break
            prev = t
    return out


class Mesa:
    """Height above the local road plane z0 of a raised patch, as a function of (x, y)."""

    def __init__(self, centre, z0, a, b, p, yaw, height, side, tilt, rough):
        self.c = np.asarray(centre, np.float64)
        self.z0, self.a, self.b = float(z0), float(a), float(b)
        self.prm = np.array([self.c[0], self.c[1], a, b, p, np.cos(yaw), np.sin(yaw), height, side, tilt[0],
                             tilt[1], *rough], np.float64)
        self.radius = max(self.a, self.b) * 2 ** 0.5         # encloses the superellipse for any p >= 1
        self.top = height * (1.0 + abs(tilt[0]) + abs(tilt[1])) + abs(rough[0])    # bounds the surface's height

    def height_at(self, x, y):
        x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return _heights(x.ravel(), y.ravel(), self.prm).reshape(x.shape)

    def normal_z(self, x, y, eps=0.02):
        gx = (self.height_at(x + eps, y) - self.height_at(x - eps, y)) / (2 * eps)
        gy = (self.height_at(x, y + eps) - self.height_at(x, y - eps)) / (2 * eps)
        return 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)

    def intersect(self, origin, dirs, t_max):
        """First hit of rays origin + t * dirs (t in [0, t_max]) with the surface: t per ray, inf where none. Each
        ray is marched only where it is inside the vertical cylinder around the footprint and between the road
        plane and the surface's highest point."""
        o = np.asarray(origin, np.float64)
        dirs = np.ascontiguousarray(dirs, np.float64)
        ox, oy = o[0] - self.c[0], o[1] - self.c[1]
        A = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
        B = 2 * (ox * dirs[:, 0] + oy * dirs[:, 1])
        C = ox * ox + oy * oy - self.radius ** 2
        disc = B * B - 4 * A * C
        ok = (disc > 0) & (A > 1e-12)
        sq = np.sqrt(np.where(ok, disc, 0.0))
        A2 = np.maximum(2 * A, 1e-12)
        t0 = np.clip((-B - sq) / A2, 0.0, None)
        t1 = np.minimum((-B + sq) / A2, t_max)
        # the slab z0 - 1 cm .. z0 + top
        dz = dirs[:, 2]
        lo_z, hi_z = self.z0 - 0.01 - o[2], self.z0 + self.top + 0.01 - o[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = lo_z / dz, hi_z / dz
        flat = np.abs(dz) < 1e-12
        inside = (lo_z <= 0) & (hi_z >= 0)
        s0 = np.where(flat, np.where(inside, 0.0, np.inf), np.minimum(ta, tb))
        s1 = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb))
        t0, t1 = np.maximum(t0, s0), np.minimum(t1, s1)
        t0 = np.where(ok, t0, 0.0)
        t1 = np.where(ok, t1, -1.0)
        return _march(o, dirs, t0, t1, self.z0, self.prm, _STEP)


def sample_mesa(rng, centre, z0, cfg) -> Mesa:
    a, b = rng.uniform(*cfg.RADIUS_RANGE, size=2)
    return Mesa(centre, z0, a, b, p=rng.uniform(1.5, 4.0), yaw=rng.uniform(-np.pi, np.pi),
                height=rng.uniform(*cfg.HEIGHT_RANGE), side=rng.uniform(0.1, 0.5), tilt=rng.uniform(-0.3, 0.3, 2),
                rough=(rng.uniform(0.0, 0.04), rng.uniform(3.0, 10.0), *rng.uniform(0, 2 * np.pi, 2)))


def _place(rng, points, label_ids, cfg, hfov):
    """A footprint centre on drivable ground with nothing standing there, and the road height there; None if no
    placement was found in cfg.ATTEMPTS tries."""
    road = np.isin(label_ids, ROAD_IDS)
    rng_xy = np.linalg.norm(points[:, :2], axis=1)
    cand = np.nonzero(road & (rng_xy > cfg.RAISE.RANGE[0]) & (rng_xy < cfg.RAISE.RANGE[1]))[0]
    if not len(cand):
        return None
    az = np.arctan2(points[cand, 1], points[cand, 0])
    in_view = cand[np.abs(az) < 0.45 * hfov] if hfov is not None else cand[:0]
    for _ in range(int(cfg.ATTEMPTS)):
        pool = in_view if len(in_view) and rng.random() < cfg.IN_VIEW_PROB else cand
        c = points[pool[int(rng.integers(len(pool)))], :2].astype(np.float64)
        mesa = sample_mesa(rng, c, 0.0, cfg.RAISE)
        near = np.linalg.norm(points[:, :2] - c, axis=1) < mesa.radius + 0.3
        z0 = free_ground(points, label_ids, near, 0.8)
        if z0 is None:
            continue
        mesa.z0 = z0
        return mesa
    return None


def raise_patches(rng: np.random.Generator, points: np.ndarray, label_ids: np.ndarray, rgb: np.ndarray | None,
                  depth: np.ndarray | None, calib, cfg, new_label: int, sem_img: np.ndarray | None = None):
    """Raise up to cfg.MAX_INSTANCES road patches. -> (points, label_ids, rgb, number raised, mask of raised points).
    Points keep their order and count (a raised point is the frame point moved nearer along its own ray)."""
    points, label_ids = points.copy(), label_ids.copy()
    is_raised = np.zeros(len(points), bool)
    hfov = 2 * np.arctan(rgb.shape[1] / 2 / calib.intrinsics[0, 0]) if rgb is not None else None
    raised = 0
    for _ in range(int(rng.integers(1, int(cfg.MAX_INSTANCES) + 1))):
        mesa = _place(rng, points, label_ids, cfg, hfov)
        if mesa is None:
            continue
        xyz = points[:, :3].astype(np.float64)
        t = mesa.intersect(np.zeros(3), xyz, 1.0)           # rays through each point: t = 1 at its return
        hit = np.isfinite(t) & (t < 1.0 - 1e-3)
        if hit.sum() < int(cfg.RAISE.MIN_POINTS):
            continue
        points[hit, :3] = (xyz[hit] * t[hit, None]).astype(points.dtype)
        label_ids[hit] = new_label
        is_raised |= hit
        raised += 1
        if rgb is not None and depth is not None:
            rgb = _draw(rgb, depth, calib, mesa, sem_img, new_label)
    return points, label_ids, rgb, raised, is_raised


def _draw(rgb, depth, calib, mesa, sem_img, label):
    """Redraw the pixels whose camera ray meets the raised surface before the frame's depth."""
    K, T = calib.intrinsics, calib.lidar_to_cam
    inv = np.linalg.inv(T)
    cam_o = inv[:3, 3]
    # the bounding box of the raised volume, projected: the pixels worth casting
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = np.stack([mesa.c[0] + mesa.radius * np.cos(ang), mesa.c[1] + mesa.radius * np.sin(ang)], 1)
    top = mesa.z0 + mesa.top + 0.05
    corners = np.concatenate([np.c_[ring, np.full(16, mesa.z0)], np.c_[ring, np.full(16, top)]])
    cam = corners @ T[:3, :3].T + T[:3, 3]
    if (cam[:, 2] < 0.5).any():
        return rgb                                   # partly behind the camera: not drawn
    H, W = rgb.shape[:2]
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]
    v = K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]
    u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())), W - 1)
    v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())), H - 1)
    if u0 > u1 or v0 > v1:
        return rgb
    vv, uu = np.mgrid[v0:v1 + 1, u0:u1 + 1]
    vv, uu = vv.ravel(), uu.ravel()
    # rays with unit camera depth: t is the planar depth
    d_cam = np.stack([(uu + 0.5 - K[0, 2]) / K[0, 0], (vv + 0.5 - K[1, 2]) / K[1, 1], np.ones(len(uu))], 1)
    d_lidar = d_cam @ inv[:3, :3].T
    t = mesa.intersect(cam_o, d_lidar, 1e3)
    frame_d = depth[vv, uu].astype(np.float64)
    vis = np.isfinite(t) & (t < frame_d - 0.05)
    if not vis.any():
        return rgb
    uu, vv, t = uu[vis], vv[vis], t[vis]
    hitp = cam_o + t[:, None] * d_lidar[vis]
    # the road's colour under the hit (where the frame's image shows that ground), shaded by the slope
    g = np.c_[hitp[:, :2], np.full(len(hitp), mesa.z0)] @ T[:3, :3].T + T[:3, 3]
    gu = np.clip(np.floor(K[0, 0] * g[:, 0] / g[:, 2] + K[0, 2]), 0, W - 1).astype(np.int64)
    gv = np.clip(np.floor(K[1, 1] * g[:, 1] / g[:, 2] + K[1, 2]), 0, H - 1).astype(np.int64)
    shade = 0.45 + 0.55 * mesa.normal_z(hitp[:, 0], hitp[:, 1])
    out = rgb.copy()
    out[vv, uu] = np.clip(rgb[gv, gu].astype(np.float64) * shade[:, None], 0, 255).astype(rgb.dtype)
    if sem_img is not None and sem_img.shape == rgb.shape[:2]:
        sem_img[vv, uu] = label
    return out
