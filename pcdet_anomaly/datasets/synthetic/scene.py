"""Random street scenes for synthetic AnoVox: layout, agents, anomalies, weather, ego motion.

World frame: x along the road, y to the left, z up, ground at z = 0. The ego drives along +x in the right inner lane.
Everything is drawn from one numpy Generator, so a scenario is a pure function of its seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .raycast import BOX, CONE, CYLINDER, ELLIPSOID

__all__ = ["SHAPE_FAMILIES", "FAMILY_LABEL", "SceneParams", "Primitives", "Scenario", "sample_scenario"]

# Anomaly shape families and the AnoVox label id each one carries (dynamic anomalies carry 100).
FAMILY_LABEL = {
    "crate": 29,      # home: boxes, furniture-like
    "flat": 29,       # home: a lost board or rug; hardly any height, so LiDAR barely sees it
    "animal": 30,     # ellipsoid body, legs, head
    "boulder": 31,    # nature: ellipsoid rock
    "cone": 32,       # special: traffic-cone-like
    "barrel": 32,     # special: upright cylinder
    "carlike": 32,    # special: the shape of a car, an appearance no car has
    "airplane": 33,   # fuselage and wings
    "falling": 34,    # an object in mid-air
}
SHAPE_FAMILIES = tuple(FAMILY_LABEL)

# per-class base colour (RGB 0..1) and LiDAR reflectivity
CLASS_STYLE = {
    1: ((0.28, 0.28, 0.30), 0.25), 2: ((0.55, 0.53, 0.50), 0.35), 3: ((0.60, 0.50, 0.42), 0.40),
    4: ((0.50, 0.50, 0.48), 0.40), 5: ((0.45, 0.40, 0.35), 0.30), 6: ((0.35, 0.35, 0.38), 0.50),
    8: ((0.20, 0.35, 0.70), 0.90), 9: ((0.20, 0.45, 0.15), 0.30), 10: ((0.42, 0.38, 0.22), 0.35),
    12: ((0.50, 0.30, 0.25), 0.30), 14: ((0.45, 0.45, 0.50), 0.60), 24: ((0.92, 0.92, 0.88), 0.85),
}
VIVID = np.array([[0.95, 0.10, 0.55], [0.10, 0.90, 0.95], [0.98, 0.85, 0.05], [0.60, 0.10, 0.95],
                  [0.05, 0.95, 0.20], [1.00, 0.45, 0.00]])


@dataclass
class SceneParams:
    road_half_width: float = 7.0
    sidewalk_width: float = 2.5
    length: float = 260.0
    anomaly_fraction: float = 0.7          # fraction of scenarios with anomalies (the rest are normality ones)
    families: tuple = SHAPE_FAMILIES
    ego_speed: tuple = (5.0, 9.0)          # m/s
    frame_dt: float = 0.1                  # s between saved frames


@dataclass
class Primitives:
    """Flat arrays for the caster plus appearance. Index i describes primitive i."""
    kind: list = field(default_factory=list)
    centre: list = field(default_factory=list)
    half: list = field(default_factory=list)
    yaw: list = field(default_factory=list)
    label: list = field(default_factory=list)
    instance: list = field(default_factory=list)
    colour_a: list = field(default_factory=list)
    colour_b: list = field(default_factory=list)
    pattern: list = field(default_factory=list)     # 0 noise, 1 checker, 2 stripes
    reflectivity: list = field(default_factory=list)
    velocity: list = field(default_factory=list)    # m/s, world frame

    def add(self, kind, centre, half, yaw, label, instance, colour_a, colour_b=None, pattern=0,
            reflectivity=0.4, velocity=(0.0, 0.0, 0.0)):
        self.kind.append(kind)
        self.centre.append(tuple(centre))
        self.half.append(tuple(half))
        self.yaw.append(float(yaw))
        self.label.append(int(label))
        self.instance.append(int(instance))
        self.colour_a.append(tuple(colour_a))
        self.colour_b.append(tuple(colour_a if colour_b is None else colour_b))
        self.pattern.append(int(pattern))
        self.reflectivity.append(float(reflectivity))
        self.velocity.append(tuple(velocity))

    def arrays(self, time_s: float = 0.0) -> dict:
        centre = np.asarray(self.centre, dtype=np.float64).reshape(-1, 3)
        velocity = np.asarray(self.velocity, dtype=np.float64).reshape(-1, 3)
        return {
            "kind": np.asarray(self.kind, dtype=np.int32), "centre": centre + velocity * time_s,
            "half": np.asarray(self.half, dtype=np.float64).reshape(-1, 3),
            "yaw": np.asarray(self.yaw, dtype=np.float64), "label": np.asarray(self.label, dtype=np.int32),
            "instance": np.asarray(self.instance, dtype=np.int32),
            "colour_a": np.asarray(self.colour_a, dtype=np.float64).reshape(-1, 3),
            "colour_b": np.asarray(self.colour_b, dtype=np.float64).reshape(-1, 3),
            "pattern": np.asarray(self.pattern, dtype=np.int32),
            "reflectivity": np.asarray(self.reflectivity, dtype=np.float64),
        }


@dataclass
class Scenario:
    prims: Primitives
    anomalies: list            # dicts: family, label, size, location, appearance, dynamic, instance
    ego_start: np.ndarray      # [3] vehicle origin (ground level)
    ego_velocity: np.ndarray   # [3]
    weather: dict
    params: SceneParams

    def ego_position(self, time_s: float) -> np.ndarray:
        return self.ego_start + self.ego_velocity * time_s


def _jitter(rng, colour, amount=0.06):
    return tuple(np.clip(np.asarray(colour) + rng.normal(0.0, amount, 3), 0.0, 1.0))


def _style(label):
    return CLASS_STYLE.get(label, ((0.5, 0.5, 0.5), 0.4))


def _add_car(prims, rng, x, y, yaw, instance, velocity=(0.0, 0.0, 0.0), colour=None, colour_b=None, pattern=0,
             label=14, reflectivity=None):
    length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.95)
    base_colour = colour if colour is not None else _jitter(rng, rng.choice(
        [(0.7, 0.1, 0.1), (0.15, 0.2, 0.6), (0.8, 0.8, 0.8), (0.1, 0.1, 0.1), (0.45, 0.45, 0.5)]), 0.05)
    refl = _style(14)[1] if reflectivity is None else reflectivity
    c, s = np.cos(yaw), np.sin(yaw)
    prims.add(BOX, (x, y, 0.65), (length / 2, width / 2, 0.4), yaw, label, instance, base_colour, colour_b,
              pattern, refl, velocity)
    off = -0.2 * length / 2
    prims.add(BOX, (x + c * off, y + s * off, 1.3), (length * 0.3, width / 2 - 0.08, 0.26), yaw, label, instance,
              base_colour, colour_b, pattern, refl, velocity)
    return length


def _add_anomaly(prims, rng, family, centre_xy, size, instance, appearance, dynamic, params):
    """Build one anomaly from primitives; returns its description for the ANOMALY csv."""
    label = 100 if dynamic else FAMILY_LABEL[family]
    x, y = centre_xy
    yaw = rng.uniform(-np.pi, np.pi)
    if appearance == "vivid":
        pick = rng.choice(len(VIVID), 2, replace=False)
        colour_a, colour_b, pattern = VIVID[pick[0]], VIVID[pick[1]], int(rng.integers(1, 3))
    else:   # camouflage: asphalt-like colour and texture, ordinary reflectivity
        colour_a = _jitter(rng, _style(1)[0], 0.03)
        colour_b, pattern = colour_a, 0
    refl = _style(1)[1] if appearance == "camouflage" else rng.uniform(0.3, 0.6)
    velocity = (0.0, 0.0, 0.0)
    if dynamic:
        speed = rng.uniform(1.0, 3.0) * rng.choice([-1.0, 1.0])
        velocity = (0.0, speed, 0.0)
    h = size / 2
    add = lambda kind, c, hh, yy=yaw: prims.add(kind, c, hh, yy, label, instance, colour_a, colour_b, pattern,
                                                refl, velocity)
    if family == "crate":
        add(BOX, (x, y, h * 0.8), (h, h * rng.uniform(0.6, 1.0), h * 0.8))
    elif family == "flat":
        add(BOX, (x, y, 0.06), (h * 1.2, h, 0.06))
    elif family == "boulder":
        add(ELLIPSOID, (x, y, h * 0.6), (h, h * rng.uniform(0.7, 1.0), h * 0.7))
    elif family == "cone":
        add(CONE, (x, y, h), (h * 0.45, h * 0.45, h))
    elif family == "barrel":
        add(CYLINDER, (x, y, h * 0.9), (h * 0.4, h * 0.4, h * 0.9))
    elif family == "falling":
        add(ELLIPSOID, (x, y, rng.uniform(1.5, 3.0)), (h, h * 0.5, h * 0.35))
    elif family == "animal":
        body_h = h * 0.35
        leg_len = h * 0.6
        c, s = np.cos(yaw), np.sin(yaw)
        add(ELLIPSOID, (x, y, leg_len + body_h), (h * 0.8, h * 0.32, body_h))
        for lx, ly in ((0.55, 0.2), (0.55, -0.2), (-0.55, 0.2), (-0.55, -0.2)):
            px, py = x + c * lx * h - s * ly * h, y + s * lx * h + c * ly * h
            add(CYLINDER, (px, py, leg_len / 2 + 0.02), (h * 0.07, h * 0.07, leg_len / 2))
        add(ELLIPSOID, (x + c * h * 0.95, y + s * h * 0.95, leg_len + body_h * 2.2), (h * 0.25, h * 0.18, h * 0.2))
    elif family == "airplane":
        add(ELLIPSOID, (x, y, h * 0.35 + 0.3), (h, h * 0.16, h * 0.16))
        add(BOX, (x, y, h * 0.35 + 0.3), (h * 0.18, h * 0.95, h * 0.03))
        c, s = np.cos(yaw), np.sin(yaw)
        add(BOX, (x - c * h * 0.85, y - s * h * 0.85, h * 0.55 + 0.3), (h * 0.1, h * 0.05, h * 0.22))
    elif family == "carlike":
        # ordinary car geometry: LiDAR alone cannot tell it from a parked car; its paint gives it away
        size = _add_car(prims, rng, x, y, rng.choice([0.0, np.pi]), instance, velocity, colour=colour_a,
                        colour_b=colour_b, pattern=max(pattern, 1), label=label,
                        reflectivity=_style(14)[1])
    else:
        raise ValueError(f"unknown anomaly shape family '{family}'")
    return {"family": family, "label": label, "size": float(round(size, 3)), "location": (float(x), float(y)),
            "appearance": appearance, "dynamic": bool(dynamic), "instance": instance, "velocity": velocity}


def sample_scenario(rng: np.random.Generator, params: SceneParams, num_frames: int,
                    with_anomaly: bool | None = None) -> Scenario:
    prims = Primitives()
    W, SW, L = params.road_half_width, params.sidewalk_width, params.length
    next_instance = [1]

    def new_instance():
        next_instance[0] += 1
        return next_instance[0]

    # sidewalks: raised slabs along both sides
    for side in (-1, 1):
        prims.add(BOX, (L / 2 - 40, side * (W + SW / 2), 0.075), (L / 2, SW / 2, 0.075), 0.0, 2, new_instance(),
                  _jitter(rng, _style(2)[0], 0.03), reflectivity=_style(2)[1])
    # buildings, fences, vegetation, poles along both sides
    for side in (-1, 1):
        x = -40.0
        while x < L - 40:
            width = rng.uniform(8, 25)
            if rng.random() < 0.75:
                depth = rng.uniform(8, 15)
                offset = W + SW + rng.uniform(6, 12)
                height = rng.uniform(5, 22)
                label = 3 if rng.random() < 0.85 else 4
                prims.add(BOX, (x + width / 2, side * (offset + depth / 2), height / 2),
                          (width / 2, depth / 2, height / 2), 0.0, label, new_instance(),
                          _jitter(rng, _style(label)[0], 0.1), pattern=0, reflectivity=_style(label)[1])
            elif rng.random() < 0.5:
                prims.add(BOX, (x + width / 2, side * (W + SW + 3.0), 0.6), (width / 2, 0.05, 0.6), 0.0, 5,
                          new_instance(), _jitter(rng, _style(5)[0]), reflectivity=_style(5)[1])
            x += width + rng.uniform(1, 6)
        x = -40.0 + rng.uniform(0, 10)
        while x < L - 40:
            inst = new_instance()
            ty = side * (W + SW + rng.uniform(1.0, 4.5))
            trunk = rng.uniform(1.8, 3.0)
            crown = rng.uniform(1.2, 2.6)
            prims.add(CYLINDER, (x, ty, trunk / 2), (0.18, 0.18, trunk / 2), 0.0, 9, inst, (0.35, 0.25, 0.15),
                      reflectivity=0.3)
            prims.add(ELLIPSOID, (x, ty, trunk + crown * 0.8), (crown, crown, crown * 0.9), 0.0, 9, inst,
                      _jitter(rng, _style(9)[0], 0.05), reflectivity=_style(9)[1])
            x += rng.uniform(8, 22)
        x = -30.0 + rng.uniform(0, 15)
        while x < L - 40:
            inst = new_instance()
            py = side * (W + 0.5)
            prims.add(CYLINDER, (x, py, 3.0), (0.12, 0.12, 3.0), 0.0, 6, inst, _style(6)[0], reflectivity=0.5)
            if rng.random() < 0.4:
                prims.add(BOX, (x, py, 4.5), (0.05, 0.4, 0.4), 0.0, 8, new_instance(), _style(8)[0],
                          reflectivity=_style(8)[1])
            x += rng.uniform(20, 35)
    # parked cars in the outer lanes, moving cars in the inner lanes
    lanes = (-5.25, -1.75, 1.75, 5.25)
    for lane in (lanes[0], lanes[3]):
        x = -30.0 + rng.uniform(0, 10)
        while x < L - 40:
            if rng.random() < 0.55:
                length = _add_car(prims, rng, x, lane + rng.normal(0, 0.15), rng.normal(0, 0.05) + (
                    0.0 if lane < 0 else np.pi), new_instance())
                x += length + rng.uniform(1.0, 4.0)
            else:
                x += rng.uniform(6, 15)
    ego_speed = rng.uniform(*params.ego_speed)
    for lane, direction in ((lanes[1], 1.0), (lanes[2], -1.0)):
        for _ in range(int(rng.integers(1, 4))):
            speed = direction * rng.uniform(4, 12)
            x = rng.uniform(15, 120)
            if lane == lanes[1] and x < 25:   # keep the ego's lane ahead clear at the start
                x += 25
            _add_car(prims, rng, x, lane, 0.0 if direction > 0 else np.pi, new_instance(), (speed, 0.0, 0.0))
    # pedestrians on sidewalks
    for _ in range(int(rng.integers(3, 10))):
        inst = new_instance()
        side = rng.choice([-1.0, 1.0])
        px, py = rng.uniform(0, 120), side * (W + rng.uniform(0.5, SW - 0.3))
        vel = (rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5), 0.0, 0.0)
        colour = _jitter(rng, _style(12)[0], 0.15)
        prims.add(CYLINDER, (px, py, 0.75), (0.22, 0.22, 0.75), 0.0, 12, inst, colour, reflectivity=0.3,
                  velocity=vel)
        prims.add(ELLIPSOID, (px, py, 1.65), (0.12, 0.12, 0.14), 0.0, 12, inst, (0.8, 0.6, 0.5),
                  reflectivity=0.3, velocity=vel)

    ego_start = np.array([0.0, lanes[1], 0.0])
    ego_velocity = np.array([ego_speed, 0.0, 0.0])
    anomalies = []
    if with_anomaly is None:
        with_anomaly = rng.random() < params.anomaly_fraction
    if with_anomaly:
        travel = ego_speed * params.frame_dt * max(num_frames - 1, 0)
        families = list(params.families)
        n_anomalies = 1 if rng.random() < 0.7 else 2
        chosen = rng.choice(len(families), size=n_anomalies, replace=True)
        for idx in chosen:
            family = families[int(idx)]
            size = float(rng.uniform(0.3, 3.0))
            if family in ("carlike",):
                size = 4.5
            if family == "airplane":
                size = float(rng.uniform(1.5, 3.0))
            distance = rng.uniform(8.0, 45.0) + travel
            lateral = rng.uniform(-6.0, 6.0)
            dynamic = family not in ("carlike", "flat") and rng.random() < 0.2
            if family == "carlike":
                appearance = "vivid"           # ordinary shape, unusual look
            elif family in ("boulder", "crate", "barrel") and rng.random() < 0.4:
                appearance = "camouflage"      # unusual shape, ordinary look
            else:
                appearance = "vivid"
            anomalies.append(_add_anomaly(prims, rng, family, (ego_start[0] + distance, lateral), size,
                                          new_instance(), appearance, dynamic, params))
    weather = {
        "sun": _unit(np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 1.5)])),
        "brightness": float(rng.uniform(0.55, 1.25)),
        "tint": tuple(np.clip(rng.normal(1.0, 0.06, 3), 0.8, 1.2)),
        "fog": float(rng.uniform(0.0, 0.012)),
        "sky": tuple(np.clip(np.array([0.55, 0.70, 0.92]) * rng.uniform(0.6, 1.1), 0, 1)),
        "noise": float(rng.uniform(0.005, 0.03)),
    }
    return Scenario(prims, anomalies, ego_start, ego_velocity, weather, params)


def _unit(v):
    return v / np.linalg.norm(v)
