"""Vectorised ray casting against a scene of simple primitives plus a ground plane (numba, parallel).

One caster serves the LiDAR and the camera, so both sensors see exactly the same geometry and labels.

Primitive kinds (all may be rotated by a yaw about z):
  BOX       centre, half extents (hx, hy, hz)
  ELLIPSOID centre, semi-axes (ax, ay, az)
  CYLINDER  vertical axis, radius half[0], half height half[2]
  CONE      vertical, base radius half[0] at z = -half[2], apex at z = +half[2]
The ground is the plane z = 0 (world frame); a hit on it returns primitive index GROUND_HIT.
"""
from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["BOX", "ELLIPSOID", "CYLINDER", "CONE", "GROUND_HIT", "MISS", "cast_rays"]

BOX, ELLIPSOID, CYLINDER, CONE = 0, 1, 2, 3
GROUND_HIT, MISS = -1, -2
_EPS = 1e-9


@nb.njit(cache=True, fastmath=True)
def _hit_box(ox, oy, oz, dx, dy, dz, hx, hy, hz):
    tmin, tmax, axis_min, sign_min = -1e30, 1e30, -1, 0.0
    for axis in range(3):
        if axis == 0:
            o, d, h = ox, dx, hx
        elif axis == 1:
            o, d, h = oy, dy, hy
        else:
            o, d, h = oz, dz, hz
        if abs(d) < _EPS:
            if o < -h or o > h:
                return 1e30, 0, 0.0
            continue
        t1 = (-h - o) / d
        t2 = (h - o) / d
        sign = -1.0
        if t1 > t2:
            t1, t2 = t2, t1
            sign = 1.0
        if t1 > tmin:
            tmin, axis_min, sign_min = t1, axis, sign
        if t2 < tmax:
            tmax = t2
        if tmin > tmax:
            return 1e30, 0, 0.0
    if tmin <= 1e-6 or axis_min < 0:
        return 1e30, 0, 0.0
    return tmin, axis_min, sign_min


@nb.njit(cache=True, fastmath=True)
def _smallest_positive_root(a, b, c):
    if abs(a) < _EPS:
        if abs(b) < _EPS:
            return 1e30
        t = -c / b
        return t if t > 1e-6 else 1e30
    disc = b * b - 4.0 * a * c
    if disc < 0.0:
        return 1e30
    sq = np.sqrt(disc)
    t1 = (-b - sq) / (2.0 * a)
    t2 = (-b + sq) / (2.0 * a)
    if t1 > t2:
        t1, t2 = t2, t1
    if t1 > 1e-6:
        return t1
    if t2 > 1e-6:
        return t2
    return 1e30


@nb.njit(parallel=True, cache=True, fastmath=True)
def cast_rays(origin, dirs, max_range, kind, centre, half, yaw):
    """Cast rays from one origin.

    origin [3] float64 world metres; dirs [R, 3] unit vectors; kind [P] int32; centre [P, 3]; half [P, 3];
    yaw [P] radians. Returns t [R] (distance along the ray, inf on a miss), hit [R] int64 (primitive index,
    GROUND_HIT or MISS) and normal [R, 3] (world frame, unit, facing the ray origin).
    """
    n_rays = dirs.shape[0]
    n_prims = kind.shape[0]
    t_out = np.full(n_rays, np.inf)
    hit_out = np.full(n_rays, MISS, dtype=np.int64)
    normal_out = np.zeros((n_rays, 3))
    cos_yaw = np.cos(yaw)
    sin_yaw = np.sin(yaw)
    for r in nb.prange(n_rays):
        dxw, dyw, dzw = dirs[r, 0], dirs[r, 1], dirs[r, 2]
        best_t = max_range
        best = MISS
        nx, ny, nz = 0.0, 0.0, 1.0
        if dzw < -_EPS:
            t = -origin[2] / dzw
            if t < best_t:
                best_t, best = t, GROUND_HIT
        for p in range(n_prims):
            # ray in the primitive's local frame (rotate by -yaw about z)
            rx = origin[0] - centre[p, 0]
            ry = origin[1] - centre[p, 1]
            rz = origin[2] - centre[p, 2]
            c, s = cos_yaw[p], sin_yaw[p]
            ox = c * rx + s * ry
            oy = -s * rx + c * ry
            oz = rz
            dx = c * dxw + s * dyw
            dy = -s * dxw + c * dyw
            dz = dzw
            hx, hy, hz = half[p, 0], half[p, 1], half[p, 2]
            # bounding-sphere rejection
            rad2 = hx * hx + hy * hy + hz * hz
            proj = ox * dx + oy * dy + oz * dz
            if ox * ox + oy * oy + oz * oz - proj * proj > rad2 and (ox * ox + oy * oy + oz * oz) > rad2:
                continue
            k = kind[p]
            t = 1e30
            lnx, lny, lnz = 0.0, 0.0, 0.0
            if k == BOX:
                t, axis, sign = _hit_box(ox, oy, oz, dx, dy, dz, hx, hy, hz)
                if t < best_t:
                    if axis == 0:
                        lnx = sign
                    elif axis == 1:
                        lny = sign
                    else:
                        lnz = sign
            elif k == ELLIPSOID:
                ex, ey, ez = ox / hx, oy / hy, oz / hz
                fx, fy, fz = dx / hx, dy / hy, dz / hz
                t = _smallest_positive_root(fx * fx + fy * fy + fz * fz, 2.0 * (ex * fx + ey * fy + ez * fz),
                                            ex * ex + ey * ey + ez * ez - 1.0)
                if t < best_t:
                    lnx = (ox + t * dx) / (hx * hx)
                    lny = (oy + t * dy) / (hy * hy)
                    lnz = (oz + t * dz) / (hz * hz)
            elif k == CYLINDER or k == CONE:
                radius = hx
                slope = radius / (2.0 * hz) if k == CONE else 0.0
                t_side = 1e30
                if k == CYLINDER:
                    t_side = _smallest_positive_root(dx * dx + dy * dy, 2.0 * (ox * dx + oy * dy),
                                                     ox * ox + oy * oy - radius * radius)
                else:
                    s2 = slope * slope
                    t_side = _smallest_positive_root(dx * dx + dy * dy - s2 * dz * dz,
                                                     2.0 * (ox * dx + oy * dy + s2 * (hz - oz) * dz),
                                                     ox * ox + oy * oy - s2 * (hz - oz) * (hz - oz))
                if t_side < 1e29:
                    zz = oz + t_side * dz
                    if zz < -hz or zz > hz:
                        t_side = 1e30
                t_cap = 1e30
                cap_sign = 0.0
                if abs(dz) > _EPS:
                    caps = 2 if k == CYLINDER else 1
                    for ci in range(caps):
                        zc = -hz if ci == 0 else hz
                        tc = (zc - oz) / dz
                        if tc > 1e-6 and tc < t_cap:
                            px = ox + tc * dx
                            py = oy + tc * dy
                            if px * px + py * py <= radius * radius:
                                t_cap = tc
                                cap_sign = -1.0 if ci == 0 else 1.0
                if t_side < t_cap:
                    t = t_side
                    if t < best_t:
                        lnx = ox + t * dx
                        lny = oy + t * dy
                        lnz = slope * slope * (hz - (oz + t * dz)) if k == CONE else 0.0
                else:
                    t = t_cap
                    lnz = cap_sign
            if t < best_t:
                best_t = t
                best = p
                # rotate the local normal back by +yaw
                nx = c * lnx - s * lny
                ny = s * lnx + c * lny
                nz = lnz
        if best != MISS:
            t_out[r] = best_t
            hit_out[r] = best
            if best == GROUND_HIT:
                nx, ny, nz = 0.0, 0.0, 1.0
            norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
            nx, ny, nz = nx / norm, ny / norm, nz / norm
            if nx * dxw + ny * dyw + nz * dzw > 0.0:
                nx, ny, nz = -nx, -ny, -nz
            normal_out[r, 0] = nx
            normal_out[r, 1] = ny
            normal_out[r, 2] = nz
    return t_out, hit_out, normal_out
