"""AnoVox label ids, the Gen-A colour palette, and label -> training target maps."""
from __future__ import annotations

import numpy as np

__all__ = ["LABEL_NAMES", "GEN_A_PALETTE", "colours_to_ids", "TargetMapper"]

LABEL_NAMES = {
    0: "unlabeled", 1: "road", 2: "sidewalk", 3: "building", 4: "wall", 5: "fence", 6: "pole", 7: "traffic light",
    8: "traffic sign", 9: "vegetation", 10: "terrain", 11: "sky", 12: "pedestrian", 13: "rider", 14: "car",
    15: "truck", 16: "bus", 17: "train", 18: "motorcycle", 19: "bicycle", 20: "static", 21: "dynamic", 22: "other",
    23: "water", 24: "road line", 25: "ground", 26: "bridge", 27: "rail track", 28: "guard rail", 29: "home",
    30: "animal", 31: "nature", 32: "special", 33: "airplane", 34: "falling", 100: "dynamic anomaly",
    214: "ego vehicle",
}

# Gen-A colour coding: CARLA / Cityscapes colours for 0..28; 33 and 34 share (245, 0, 0) and colour -> id takes the
# first match, so anomalies decode as 33 (as the official scripts do).
GEN_A_PALETTE = {
    0: (0, 0, 0), 1: (128, 64, 128), 2: (244, 35, 232), 3: (70, 70, 70), 4: (102, 102, 156), 5: (190, 153, 153),
    6: (153, 153, 153), 7: (250, 170, 30), 8: (220, 220, 0), 9: (107, 142, 35), 10: (152, 251, 152),
    11: (70, 130, 180), 12: (220, 20, 60), 13: (255, 0, 0), 14: (0, 0, 142), 15: (0, 0, 70), 16: (0, 60, 100),
    17: (0, 80, 100), 18: (0, 0, 230), 19: (119, 11, 32), 20: (110, 190, 160), 21: (170, 120, 50), 22: (55, 90, 80),
    23: (45, 60, 150), 24: (157, 234, 50), 25: (81, 0, 81), 26: (150, 100, 100), 27: (230, 150, 140),
    28: (180, 165, 180), 33: (245, 0, 0), 34: (245, 0, 0),
}


def colours_to_ids(rgb: np.ndarray, unknown: int = 0) -> np.ndarray:
    """[N, 3] int colours -> [N] label ids (first palette match; unknown colours -> `unknown`)."""
    rgb = np.asarray(rgb, dtype=np.int64).reshape(-1, 3)
    code = rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]
    lut = {}
    for label, (r, g, b) in GEN_A_PALETTE.items():
        lut.setdefault(r * 65536 + g * 256 + b, label)
    keys = np.array(list(lut.keys()), dtype=np.int64)
    vals = np.array(list(lut.values()), dtype=np.int64)
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    return np.where(keys[pos] == code, vals[pos], unknown)


class TargetMapper:
    """Label id -> binary anomaly target (1 anomaly, 0 normal, ignore_index) and optional semantic class."""

    def __init__(self, anomaly_ids, ignore_ids, ignore_index=255, semantic_classes=()):
        self.anomaly_ids = np.asarray(sorted(anomaly_ids), dtype=np.int64)
        self.ignore_ids = np.asarray(sorted(ignore_ids), dtype=np.int64)
        self.ignore_index = int(ignore_index)
        self.semantic_lut = np.full(65536, self.ignore_index, dtype=np.int64)
        for cls, ids in enumerate(semantic_classes):
            self.semantic_lut[np.asarray(ids, dtype=np.int64)] = cls
        self.num_semantic = len(semantic_classes)

    def binary(self, label_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(label_ids).astype(np.int64)
        out = np.isin(ids, self.anomaly_ids).astype(np.int64)
        out[np.isin(ids, self.ignore_ids)] = self.ignore_index
        return out

    def semantic(self, label_ids: np.ndarray) -> np.ndarray:
        ids = np.clip(np.asarray(label_ids).astype(np.int64), 0, 65535)
        out = self.semantic_lut[ids]
        out[np.isin(ids, self.anomaly_ids) | np.isin(ids, self.ignore_ids)] = self.ignore_index
        return out
