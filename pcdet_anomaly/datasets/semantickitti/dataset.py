"""SemanticKittiDataset: SemanticKITTI-layout sequences (SemanticKITTI, STU) as the same batch_dict as AnoVox.

Labels: the raw semantic id (label & 0xFFFF) decides the binary target (LABELS.ANOMALY_IDS -> 1, LABELS.IGNORE_IDS
-> ignored, anything else -> 0: STU is ANOMALY_IDS [2], IGNORE_IDS [0]); the semantic classes of the normality regime
(and of the auxiliary semantic head) come from SEMANTIC_KITTI.LEARNING_MAP (raw -> mapped id, SemanticKITTI's
learning map) grouped by LABELS.SEMANTIC_CLASSES (on mapped ids).

Evaluation is point-level (eval_protocol 'point'): every point of the scan gets a score; points outside
POINT_FILTER_RANGE are not shown to the model, take the score of the nearest point it scored, and are counted
in the coverage (see PointEvaluator).
"""
from __future__ import annotations

import fnmatch
import logging

import numpy as np

from ..anovox.dataset import split_scenarios
from ..anovox.reader import FrameError
from ..dataset_template import DatasetTemplate
from .reader import SequenceReader, list_sequences

__all__ = ["SemanticKittiDataset"]


class SemanticKittiDataset(DatasetTemplate):
    eval_protocol = "point"

    def __init__(self, dataset_cfg, split: str = "train", training: bool = True, root_path=None,
                 logger: logging.Logger | None = None):
        super().__init__(dataset_cfg, training, root_path, logger)
        self.split = split
        seq_paths = list_sequences(self.root_path)
        if not seq_paths:
            raise FileNotFoundError(f"{self.root_path}: no sequence folders with velodyne/ (DATA_CONFIG.DATA_PATH; "
                                    f"SemanticKITTI layout <root>/[sequences/]<seq>/velodyne/*.bin)")
        cam = dataset_cfg.CAMERA
        camera = dict(cam) if dataset_cfg.IMAGE.ENABLED else None
        skc = dataset_cfg.SEMANTIC_KITTI
        self.readers = {p.name: SequenceReader(p, camera, skc.REQUIRE_LABELS) for p in seq_paths}
        self.learning_map = self._learning_map(skc.LEARNING_MAP, skc.LEARNING_MAP_DEFAULT)
        names = sorted(self.readers)
        split_cfg = dataset_cfg.SPLIT
        if split_cfg.MODE == "lists":           # entries may be glob patterns: "1[0-9][0-9]" = STU's validation
            split_cfg = _expand_lists(split_cfg, names)
        # normality None = not known (reading every label file costs a pass over the data: done only when needed)
        self.meta = {n: {"normality": None, "families": set(), "labels": set()} for n in names}
        self._frame_anomaly: dict = {}      # (sequence, frame) -> holds an anomaly id (one read per label file)
        if split_cfg.TRAIN_NORMALITY_ONLY:
            for n in names:     # a sequence is a normality sequence when no label file holds an anomaly id
                self.meta[n]["normality"] = not self._has_anomaly(self.readers[n])
        self.splits = split_scenarios(names, self.meta, split_cfg)
        self.take_scenarios(names if split == "all" else self.splits[split])
        if dataset_cfg.IMAGE.ENABLED:
            missing = [n for n in self.scenarios if self.readers[n].image_dir is None]
            if missing:
                raise FrameError(self.root_path / missing[0],
                                 f"DATA_CONFIG.IMAGE.ENABLED is true but sequences {missing[:5]} have no image folder "
                                 f"'{cam.IMAGE_DIR}' (DATA_CONFIG.CAMERA.IMAGE_DIR). The camera path needs images "
                                 f"and calibration; without them use a LiDAR-only config (cfgs/stu/*lidar_only*) or "
                                 f"set DATA_CONFIG.IMAGE.ENABLED false with MODEL.FUSION.MODE lidar_only")
        self.logger.info("SemanticKITTI layout %s: %d sequences, %d frames (%s)", split, len(self.scenarios),
                         len(self.frames), ", ".join(self.scenarios[:8]) + (" ..." if len(self.scenarios) > 8 else ""))

    @staticmethod
    def _learning_map(pairs, default):
        if not pairs:
            return None
        lut = np.full(65536, int(default), dtype=np.int64)
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"DATA_CONFIG.SEMANTIC_KITTI.LEARNING_MAP: entries are [raw id, mapped id], got "
                                 f"{pair!r}")
            lut[int(pair[0])] = int(pair[1])
        return lut

    def _has_anomaly(self, reader: SequenceReader) -> bool:
        return any(self.frame_has_anomaly(reader.name, f) for f in reader.frames)

    # ---- frames
    def read_frame(self, scene_id: str, frame: int):
        """-> (points [N, 4] float32, raw semantic [N], instance [N]) of the whole scan (labels all 0 when the
        sequence has none and REQUIRE_LABELS is false)."""
        reader = self.readers[scene_id]
        points = reader.read_points(frame)
        if reader.has_labels or self.dataset_cfg.SEMANTIC_KITTI.REQUIRE_LABELS:
            semantic, instance = reader.read_labels(frame, len(points))
        else:
            semantic = instance = np.zeros(len(points), np.int64)
        return points, semantic, instance

    def semantic_targets(self, raw: np.ndarray) -> np.ndarray:
        mapped = self.learning_map[np.clip(raw, 0, 65535)] if self.learning_map is not None else raw
        out = self.targets.semantic(mapped)
        out[np.isin(raw, self.targets.anomaly_ids) | np.isin(raw, self.targets.ignore_ids)] = self.ignore_index
        return out

    def prepare_sample(self, i: int) -> dict:
        name, frame = self.frames[i]
        reader = self.readers[name]
        cfg = self.dataset_cfg
        rng = np.random.default_rng([self.seed, self.epoch, i] if self.training else [frame])
        points, raw, _ = self.read_frame(name, frame)
        keep = self.filter_mask(points)
        points, raw = points[keep], raw[keep]
        sub = self.subsample(len(points), rng)
        if sub is not None:
            points, raw = points[sub], raw[sub]
        if len(points) == 0:
            raise FrameError(reader.scan_path(frame), "no points left inside POINT_FILTER_RANGE")
        keep, points, aug = self.augment(points, rng)
        if keep is not None:
            raw = raw[keep]
        sample = {"points": points.astype(np.float32), "aug_matrix": aug, "frame_id": frame, "scene_id": name}
        sample["point_labels"] = self.targets.binary(raw)
        if self.targets.num_semantic:
            sample["point_semantic"] = self.semantic_targets(raw)
        sample.update(self.voxelize(sample))
        if cfg.IMAGE.ENABLED:
            return self.add_image(sample, reader.read_rgb(frame), reader.calibration)
        return self.add_image(sample, None, None)

    # ---- evaluation helpers
    def frame_has_anomaly(self, scene_id: str, frame: int) -> bool:
        """Whether the frame's .label file holds an anomaly id; read once per frame and cached (the normality-only
        split and anomaly-frame-aware sampling both ask)."""
        key = (scene_id, int(frame))
        if key not in self._frame_anomaly:
            path = self.readers[scene_id].label_path(frame)
            self._frame_anomaly[key] = path.is_file() and bool(
                np.isin(np.fromfile(path, np.uint32) & 0xFFFF, self.targets.anomaly_ids).any())
        return self._frame_anomaly[key]


def _expand_lists(split_cfg, names):
    """SPLIT.LISTS entries that are glob patterns ("1[0-9][0-9]", "0?") -> the matching sequence names."""
    from easydict import EasyDict
    out = EasyDict(dict(split_cfg))
    lists = {}
    for key, members in split_cfg.LISTS.items():
        expanded = []
        for m in members:
            m = str(m)
            if any(ch in m for ch in "*?["):
                hits = [n for n in names if fnmatch.fnmatchcase(n, m)]
                if not hits:
                    raise ValueError(f"DATA_CONFIG.SPLIT.LISTS.{key}: pattern '{m}' matches no sequence of {names}")
                expanded += [h for h in hits if h not in expanded]
            elif m not in expanded:
                expanded.append(m)
        lists[key] = expanded
    out.LISTS = EasyDict(lists)
    return out
