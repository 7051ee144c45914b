"""DatasetTemplate: what every dataset shares (config, root path, logger, training flag)."""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import torch
import torch.utils.data
from PIL import Image

import cuda_ops

from ..utils.common_utils import resolve_path
from .anovox.labels import TargetMapper
from .augmentation import apply_matrix, point_dropout, random_augmentation_matrix

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

__all__ = ["DatasetTemplate"]


class DatasetTemplate(torch.utils.data.Dataset):
    """Subclasses set `self.targets` (TargetMapper) and `self.ignore_index`, and build samples with the shared steps
    below (subsampling in training only, augmentation, voxelization with label votes, image normalisation), so every
    dataset produces the same batch_dict (collate.py)."""

    eval_protocol = "voxel"     # voxel (AnoVox grid) | point (STU / SemanticKITTI, one score per scan point)

    def __init__(self, dataset_cfg, training: bool = True, root_path=None, logger: logging.Logger | None = None):
        super().__init__()
        self.dataset_cfg = dataset_cfg
        self.training = training
        self.root_path = resolve_path(root_path if root_path is not None else dataset_cfg.DATA_PATH)
        self.logger = logger or logging.getLogger("pcdet_anomaly")
        labels = dataset_cfg.LABELS
        self.targets = TargetMapper(labels.ANOMALY_IDS, labels.IGNORE_IDS, labels.IGNORE_INDEX,
                                    labels.SEMANTIC_CLASSES)
        self.ignore_index = labels.IGNORE_INDEX
        self.frames: list = []                  # [(scene_id, frame), ...]: see take_scenarios
        self.bad_frames: Counter = Counter()
        self.seed, self.epoch = 0, 0

    def take_scenarios(self, names: list[str]) -> None:
        """The split's scenarios (sequences): self.scenarios; their readers' problems reported (BAD_FRAME_POLICY stop
        raises on the first); their frames (FRAME_STRIDE, MAX_FRAMES_PER_SCENARIO) in self.frames. Needs
        self.readers."""
        from .anovox.reader import FrameError
        cfg = self.dataset_cfg
        self.scenarios = list(names)
        self.problems = [f"{n}: {p}" for n in names for p in self.readers[n].problems]
        for problem in self.problems:
            self.logger.warning("dataset: %s", problem)
        if self.problems and cfg.BAD_FRAME_POLICY == "stop":
            raise FrameError(self.root_path, f"{len(self.problems)} problems, first: {self.problems[0]}")
        self.frames = []
        for name in names:
            frames = self.readers[name].frames[::max(1, cfg.FRAME_STRIDE)]
            if cfg.MAX_FRAMES_PER_SCENARIO > 0:
                frames = frames[:cfg.MAX_FRAMES_PER_SCENARIO]
            self.frames += [(name, f) for f in frames]

    # subclasses implement prepare_sample(index)
    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Augmentation randomness is a function of (seed, epoch, index): resumed runs repeat it exactly."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def prepare_sample(self, index: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        """The sample of frame `index`; under BAD_FRAME_POLICY 'skip' a bad frame gives a marker
        {'bad_frame': path, 'error': message, 'scene_id', 'frame_id'} that collate_batch drops and reports (a bad
        frame is dropped, never replaced by another one, so no frame is trained on or scored twice)."""
        from .anovox.reader import FrameError
        try:
            return self.prepare_sample(index)
        except FrameError as err:
            if self.dataset_cfg.BAD_FRAME_POLICY == "stop":
                raise
            name, frame = self.frames[index]
            self.bad_frames[str(err.path)] += 1
            self.logger.warning("skipping bad frame %s %d: %s", name, frame, err)
            return {"bad_frame": str(err.path), "error": str(err), "scene_id": name, "frame_id": int(frame)}

    # ---- shared sample steps
    def filter_mask(self, points: np.ndarray) -> np.ndarray:
        """Points inside POINT_FILTER_RANGE (cartesian, min inclusive, max exclusive)."""
        r = self.dataset_cfg.POINT_FILTER_RANGE
        return np.all((points[:, :3] >= r[:3]) & (points[:, :3] < r[3:]), axis=1)

    def subsample(self, num_points: int, rng: np.random.Generator) -> np.ndarray | None:
        """Training only: sorted indices of at most MAX_POINTS points (None: keep all). Never at evaluation."""
        cfg = self.dataset_cfg
        if self.training and cfg.MAX_POINTS > 0 and num_points > cfg.MAX_POINTS:
            return np.sort(rng.choice(num_points, cfg.MAX_POINTS, replace=False))
        return None

    def augment(self, points: np.ndarray, rng: np.random.Generator):
        """Training only: -> (keep mask or None, augmented points, 4x4 matrix original -> augmented)."""
        cfg = self.dataset_cfg
        if not (self.training and cfg.AUGMENTATION.ENABLED):
            return None, points, np.eye(4)
        a = cfg.AUGMENTATION
        keep = point_dropout(rng, len(points), a.POINT_DROPOUT)
        aug = random_augmentation_matrix(rng, a.FLIP_Y_PROB, a.ROT_RANGE, a.SCALE_RANGE, a.TRANSLATION_STD)
        return keep, apply_matrix(points[keep], aug), aug

    def voxelize(self, sample: dict) -> dict:
        v = self.dataset_cfg.VOXELIZE
        pts = torch.from_numpy(sample["points"])
        result = cuda_ops.voxelize(pts, None, v.TYPE, v.GRID_SIZE, v.RANGE, v.OUT_OF_RANGE)
        out = {"voxel_coords": result.coords[:, 1:].numpy(), "point2voxel": result.point2voxel.numpy()}
        num_voxels = len(result.coords)
        labels = torch.from_numpy(sample["point_labels"])
        out["voxel_labels"] = cuda_ops.label_vote(labels, result.point2voxel, num_voxels, 2, self.ignore_index,
                                                  v.LABEL_RULE).numpy()
        if "point_semantic" in sample:
            out["voxel_semantic"] = cuda_ops.label_vote(torch.from_numpy(sample["point_semantic"]),
                                                        result.point2voxel, num_voxels,
                                                        self.targets.num_semantic, self.ignore_index).numpy()
        return out

    def add_image(self, sample: dict, rgb, calib) -> dict:
        """Resize to IMAGE.SIZE (intrinsics scaled to match), normalise; store image and calibration in `sample`.
        `rgb` None (no camera): identity calibration, no image."""
        cfg = self.dataset_cfg
        if rgb is not None:
            H, W = cfg.IMAGE.SIZE
            if rgb.shape[:2] != (H, W):
                rgb = np.asarray(Image.fromarray(rgb).resize((W, H), Image.BILINEAR))
                calib = calib.scaled((H, W))
            image = (rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
            sample["image"] = np.ascontiguousarray(image.transpose(2, 0, 1))
        if calib is None:
            sample["intrinsics"], sample["lidar_to_cam"], sample["image_hw"] = np.eye(3), np.eye(4), (1, 1)
        else:
            sample["intrinsics"] = calib.intrinsics.astype(np.float64)
            sample["lidar_to_cam"] = calib.lidar_to_cam.astype(np.float64)
            sample["image_hw"] = tuple(calib.image_hw)
        return sample
