"""The evaluation grid's vertical convention, told from the data.

The AnoVox generator may subtract the sensor height before voxelizing VOXEL_GRID (road near iz 24) or not (road near
iz 28); which one released data uses is not documented. Points must be voxelized with the same shift to be compared
with VOXEL_GRID, so a wrong guess silently moves every prediction 3.6 voxels off its ground truth. This module
measures it per scenario: the road points of the semantic LiDAR (or, without it, all LiDAR points) are voxelized under
each candidate shift (0 and minus the LiDAR height from sensor_setup.json) and compared with the ground-truth road
voxels; the candidate that explains them wins, by a margin, or the scenario is reported as undecidable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .reader import FrameError, ScenarioReader

__all__ = ["ZShiftError", "ZShiftEvidence", "detect_z_shift", "resolve_z_shift", "ROAD_IDS"]

ROAD_IDS = (1, 24)          # road, road line
MIN_HIT = 0.5               # the winner must explain at least half of the road voxels it is compared on
MIN_MARGIN = 0.25           # ... and beat every other candidate by this much


class ZShiftError(ValueError):
    """The vertical convention of a scenario cannot be told, or disagrees with EVAL_GRID.Z_SHIFT."""


@dataclass
class ZShiftEvidence:
    shift: float | None          # the detected shift (m), None when it cannot be told
    scores: dict                 # candidate shift -> fraction of ground-truth road voxels hit
    source: str                  # which points were used
    frames: list
    road_voxels: int
    reason: str = ""

    def describe(self) -> str:
        parts = ", ".join(f"{k:+.2f} m: {v:.2f}" for k, v in self.scores.items())
        verdict = f"{self.shift:+.2f} m" if self.shift is not None else f"undecided ({self.reason})"
        return (f"z shift {verdict} [road voxels hit per candidate: {parts}; {self.road_voxels} GT road voxels, "
                f"{self.source}, frames {self.frames}]")


def _keys(idx: np.ndarray) -> np.ndarray:
    return idx[:, 0] + 1000 * idx[:, 1] + 1_000_000 * idx[:, 2]


def detect_z_shift(reader: ScenarioReader, eval_grid, max_frames: int = 3, candidates=None) -> ZShiftEvidence:
    """Which candidate shift makes the scenario's points land on its ground-truth road voxels."""
    if candidates is None:
        candidates = sorted({0.0, -round(float(reader.lidar_height), 6)})
    voxel, offset, size = float(eval_grid.VOXEL_SIZE), np.asarray(eval_grid.OFFSET, float), np.asarray(
        eval_grid.GRID_SIZE)
    frames = list(reader.frames)
    if len(frames) > max_frames:     # spread over the scenario first, the others in reserve for unreadable frames
        spread = [frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, max_frames)]
        frames = spread + [f for f in frames if f not in set(spread)]
    has_sem = bool(reader.files.get("semantic_lidar"))
    has_lidar = bool(reader.files.get("lidar"))
    source = "semantic LiDAR road points" if has_sem else "LiDAR points" if has_lidar else "no points"
    hits = {float(c): 0 for c in candidates}
    total = 0
    used, skipped = [], []
    for frame in frames:
        if len(used) >= max_frames:
            break
        if not (reader.has("semantic_lidar", frame) or reader.has("lidar", frame)):
            continue
        try:
            grid = reader.read_voxel_grid(frame).astype(np.int64)
            road = grid[np.isin(grid[:, 3], ROAD_IDS)]
            if len(road) == 0:
                continue
            if has_sem and reader.has("semantic_lidar", frame):
                pts = reader.read_semantic_points(frame)
                pts = pts[np.isin(pts[:, 3].astype(np.int64), ROAD_IDS), :3]
            else:
                pts = reader.read_points(frame)[:, :3].astype(np.float64)
        except FrameError as err:      # a bad frame is the dataset's business (BAD_FRAME_POLICY); try another
            skipped.append(str(err))
            continue
        if len(pts) == 0:
            continue
        road_keys = np.unique(_keys(road[:, :3]))
        total += len(road_keys)
        used.append(frame)
        for c in hits:
            idx = np.floor((pts + np.array([0.0, 0.0, c]) + offset) / voxel).astype(np.int64)
            idx = idx[np.all((idx >= 0) & (idx < size), axis=1)]
            hits[c] += int(np.isin(road_keys, np.unique(_keys(idx))).sum())
    if total == 0:
        reason = "no frame with ground-truth road voxels and points"
        if skipped:
            reason += f"; unreadable: {skipped[0]}" + (f" and {len(skipped) - 1} more" if len(skipped) > 1 else "")
        return ZShiftEvidence(None, {}, source, used, 0, reason)
    scores = {c: h / total for c, h in hits.items()}
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    best, best_score = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    if best_score < MIN_HIT:
        return ZShiftEvidence(None, scores, source, used, total,
                              f"no candidate hits {MIN_HIT:.0%} of the road voxels")
    if best_score - second < MIN_MARGIN:
        return ZShiftEvidence(None, scores, source, used, total, "candidates too close to tell apart")
    return ZShiftEvidence(best, scores, source, used, total)


def resolve_z_shift(reader: ScenarioReader, eval_grid, logger=None) -> float:
    """The shift to use for `reader`'s scenario (cached on the reader).

    EVAL_GRID.Z_SHIFT 'auto': the detected one, or ZShiftError when it cannot be told. A number: that number, but
    ZShiftError when the data clearly says otherwise; a warning when the data cannot tell."""
    cached = getattr(reader, "_z_shift", None)
    if cached is not None:
        return cached
    configured = eval_grid.Z_SHIFT
    evidence = detect_z_shift(reader, eval_grid)
    reader.z_shift_evidence = evidence
    if isinstance(configured, str):
        if configured != "auto":
            raise ZShiftError(f"EVAL_GRID.Z_SHIFT must be 'auto' or a number, got {configured!r}")
        if evidence.shift is None:
            raise ZShiftError(f"{reader.path}: cannot tell the VOXEL_GRID's vertical convention from the data: "
                              f"{evidence.describe()}. Set DATA_CONFIG.EVAL_GRID.Z_SHIFT to a number (0.0 or "
                              f"-{reader.lidar_height}) if you know it.")
        shift = evidence.shift
    else:
        shift = float(configured)
        if evidence.shift is not None and not math.isclose(evidence.shift, shift, abs_tol=1e-6):
            raise ZShiftError(f"{reader.path}: DATA_CONFIG.EVAL_GRID.Z_SHIFT is {shift:+.2f} m but the data says "
                              f"{evidence.describe()}; set it to 'auto' or {evidence.shift}")
        if evidence.shift is None and logger is not None:
            logger.warning("%s: using the configured EVAL_GRID.Z_SHIFT %+.2f m, the data cannot confirm it: %s",
                           reader.name, shift, evidence.describe())
    if logger is not None:
        logger.info("%s: %s", reader.name, evidence.describe())
    reader._z_shift = shift
    return shift
