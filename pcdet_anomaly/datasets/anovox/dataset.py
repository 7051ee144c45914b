"""AnoVoxDataset: frames of scenario-level splits turned into training samples (see collate.py for the contract)."""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from ..dataset_template import DatasetTemplate
from .reader import FrameError, ScenarioReader, anomaly_rows, list_scenarios
from .zshift import resolve_z_shift

__all__ = ["AnoVoxDataset", "split_scenarios"]



def _anomaly_meta(reader: ScenarioReader) -> dict:
    """Split metadata of a scenario: normality or not, the anomaly label ids (from `semantic_tags`; the official
    `anomaly_type_id` is a blueprint id such as 'static.prop.o_barbedwire_special', never a label) and this
    project's shape families (extra keys; official files have none)."""
    info = reader.scenario_anomaly_info()
    if info is None:
        return {"normality": True, "families": set(), "labels": set(), "types": set()}
    rows = anomaly_rows(info)
    families = set(info.get("shape_families") or ([info["shape_family"]] if "shape_family" in info else []))
    families |= {r["family"] for r in rows if r["family"]}
    labels = set().union(*(r["label_ids"] for r in rows)) if rows else set()
    return {"normality": False, "families": families, "labels": labels, "types": {str(r["type"]) for r in rows}}


def split_scenarios(names: list[str], meta: dict, split_cfg) -> dict:
    """Scenario-level split -> {'train': [...], 'val': [...], 'test': [...]}; no scenario is in two splits."""
    if split_cfg.MODE == "lists":
        out = {k: list(split_cfg.LISTS.get(k, [])) for k in ("train", "val", "test")}
        known = set(names)
        seen: dict = {}
        for split, members in out.items():
            for name in members:
                if name not in known:
                    raise ValueError(f"DATA_CONFIG.SPLIT.LISTS.{split}: scenario '{name}' not found in the dataset")
                if name in seen:
                    raise ValueError(f"DATA_CONFIG.SPLIT.LISTS: scenario '{name}' is in both {seen[name]} and {split}")
                seen[name] = split
        return out
    if split_cfg.MODE != "ratio":
        raise ValueError(f"DATA_CONFIG.SPLIT.MODE must be 'ratio' or 'lists', got {split_cfg.MODE!r}")
    ratios = np.asarray(split_cfg.RATIOS, dtype=np.float64)
    if len(ratios) != 3 or (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"DATA_CONFIG.SPLIT.RATIOS must be three non-negative fractions, got {list(ratios)}")
    ratios = ratios / ratios.sum()
    order = list(np.random.default_rng(split_cfg.SEED).permutation(sorted(names)))
    hold_fam, hold_lab = set(split_cfg.HOLDOUT_SHAPE_FAMILIES), set(split_cfg.HOLDOUT_LABEL_IDS)

    def eligible(name):
        m = meta[name]
        return not (m["families"] & hold_fam or m["labels"] & hold_lab)

    n_train = int(round(ratios[0] * len(order)))
    train = [n for n in order if eligible(n)][:n_train]
    rest = [n for n in order if n not in set(train)]
    val_share = ratios[1] / max(ratios[1] + ratios[2], 1e-12)
    n_val = int(round(val_share * len(rest)))
    if split_cfg.TRAIN_NORMALITY_ONLY:
        # the normality regime keeps the supervised split's val and test scenarios exactly (so its numbers compare
        # with the supervised rows) and trains on the normality scenarios of the supervised train portion
        train = [n for n in train if meta[n]["normality"]]
    return {"train": train, "val": rest[:n_val], "test": rest[n_val:]}


class AnoVoxDataset(DatasetTemplate):
    """One sample per frame of the scenarios in `split` ('train', 'val', 'test' or 'all')."""

    def __init__(self, dataset_cfg, split: str = "train", training: bool = True, root_path=None,
                 logger: logging.Logger | None = None):
        super().__init__(dataset_cfg, training, root_path, logger)
        self.split = split
        scenario_paths = list_scenarios(self.root_path)
        if not scenario_paths:
            raise FileNotFoundError(f"{self.root_path}: no Scenario_* folders (DATA_CONFIG.DATA_PATH)")
        self.readers = {p.name: ScenarioReader(p, dataset_cfg.LAYOUT) for p in scenario_paths}
        self.meta = {name: _anomaly_meta(r) for name, r in self.readers.items()}
        self.splits = split_scenarios(list(self.readers), self.meta, dataset_cfg.SPLIT)
        names = sorted(self.readers) if split == "all" else self.splits[split]
        self.take_scenarios(names)
        self.copy_paste_db = None
        cp = dataset_cfg.COPY_PASTE
        if cp.ENABLED and cp.MODE not in ("anomaly", "real", "raise"):
            raise ValueError(f"DATA_CONFIG.COPY_PASTE.MODE must be anomaly, real or raise, got {cp.MODE!r}")
        # raised road patches: the outliers of MODE raise, or (RAISE.PROB > 0) added to what MODE anomaly / real pastes
        self.raise_outliers = bool(cp.ENABLED and training and (cp.MODE == "raise" or cp.RAISE.PROB > 0))
        if cp.ENABLED and training and cp.MODE != "raise":
            self.copy_paste_db = self._build_copy_paste_db(cp)
        # the evaluation grid's vertical convention, per scenario, before any worker starts (a clear error now
        # rather than labels 3.6 voxels off later)
        shifts = Counter(f"{self.z_shift(n):+.2f} m" for n in names)
        self.logger.info("AnoVox %s: VOXEL_GRID z shift per scenario (EVAL_GRID.Z_SHIFT %s): %s", split,
                         dataset_cfg.EVAL_GRID.Z_SHIFT, dict(shifts))
        layouts = Counter(r.layout for r in self.readers.values())
        self.logger.info("AnoVox %s: %d scenarios, %d frames (layouts: %s)", split, len(names), len(self.frames),
                         dict(layouts))

    def _build_copy_paste_db(self, cp):
        from ..copy_paste import InstanceDatabase
        label_ids = list(cp.LABEL_IDS) or list(self.dataset_cfg.LABELS.ANOMALY_IDS)
        if cp.MODE == "anomaly":
            frames = [(n, f) for n, f in self.frames if self.readers[n].has("anomaly", f)]
        else:
            frames = list(self.frames)
            if set(label_ids) & set(self.dataset_cfg.LABELS.ANOMALY_IDS):
                raise ValueError("DATA_CONFIG.COPY_PASTE.MODE real rescales known instances: LABEL_IDS must be normal "
                                 f"classes (e.g. [14, 15, 12]), got {label_ids}")
        db = InstanceDatabase.build(self, frames, label_ids, cp.MIN_POINTS, cp.CLUSTER_EPS, logger=self.logger,
                                    bad_frame_policy=self.dataset_cfg.BAD_FRAME_POLICY)
        if not len(db):
            self.logger.warning("COPY_PASTE enabled but the %s split has no instance of labels %s: nothing to paste",
                                self.split, label_ids)
        return db

    # ---- steps
    def point_label_ids(self, reader: ScenarioReader, frame: int, points: np.ndarray) -> np.ndarray:
        """Label id per LiDAR point (LIDAR and SEMANTIC-LIDAR have no per-point correspondence)."""
        source = self.dataset_cfg.POINT_LABEL_SOURCE
        if source == "semantic_lidar":
            semantic = reader.read_semantic_points(frame)
            dist, nn = cKDTree(semantic[:, :3]).query(points[:, :3], k=1, distance_upper_bound=0.5, workers=1)
            ids = np.zeros(len(points), dtype=np.int64)      # 0 = unlabeled (ignored) when no neighbour in 0.5 m
            found = np.isfinite(dist)
            ids[found] = semantic[nn[found], 3].astype(np.int64)
            return ids
        if source == "voxel_grid":
            grid = reader.read_voxel_grid(frame).astype(np.int64)
            eg = self.dataset_cfg.EVAL_GRID
            key_grid = grid[:, 0] + 1000 * grid[:, 1] + 1_000_000 * grid[:, 2]
            xyz = points[:, :3].astype(np.float64) + np.array([0.0, 0.0, self.z_shift(reader.name)])
            idx = np.floor((xyz + np.asarray(eg.OFFSET)) / eg.VOXEL_SIZE).astype(np.int64)
            key = idx[:, 0] + 1000 * idx[:, 1] + 1_000_000 * idx[:, 2]
            order = np.argsort(key_grid)
            pos = np.clip(np.searchsorted(key_grid[order], key), 0, max(len(order) - 1, 0))
            ids = np.zeros(len(points), dtype=np.int64)
            if len(order):
                hit = key_grid[order][pos] == key
                ids[hit] = grid[order[pos[hit]], 3]
            return ids
        raise ValueError(f"DATA_CONFIG.POINT_LABEL_SOURCE must be semantic_lidar or voxel_grid, got {source!r}")

    def prepare_sample(self, i: int) -> dict:
        name, frame = self.frames[i]
        reader = self.readers[name]
        cfg = self.dataset_cfg
        rng = np.random.default_rng([self.seed, self.epoch, i] if self.training else [frame])
        points = reader.read_points(frame)
        points = points[self.filter_mask(points)]
        n_filtered = len(points)
        sub = self.subsample(len(points), rng)          # training only, never at evaluation
        if sub is not None:
            points = points[sub]
        if len(points) == 0:
            raise FrameError(reader.file("lidar", frame), "no points left inside POINT_FILTER_RANGE")
        label_ids = self.point_label_ids(reader, frame, points)
        rgb = reader.read_rgb(frame) if cfg.IMAGE.ENABLED else None
        aux = cfg.IMAGE.AUX_SEMANTIC
        sem_img = np.array(reader.read_semantic_image(frame)) if (rgb is not None and aux.ENABLED and self.training) \
            else None
        cp = cfg.COPY_PASTE
        depth = None
        if self.copy_paste_db is not None and rng.random() < cp.PROB:     # training only
            from ..copy_paste import paste_instances
            depth = reader.read_depth(frame) if rgb is not None else None
            new_label = int(cfg.LABELS.ANOMALY_IDS[0]) if cp.MODE == "real" else None
            points, label_ids, rgb, _, _ = paste_instances(rng, self.copy_paste_db, points, label_ids, rgb, depth,
                                                           reader.calibration, cp, len(points) / n_filtered,
                                                           new_label, sem_img)
            sub = self.subsample(len(points), rng)       # pasted points count towards MAX_POINTS
            if sub is not None:
                points, label_ids = points[sub], label_ids[sub]
        if self.raise_outliers and rng.random() < (cp.PROB if cp.MODE == "raise" else cp.RAISE.PROB):   # training only
            from ..point_raise import raise_patches
            if depth is None and rgb is not None:
                depth = reader.read_depth(frame)
            points, label_ids, rgb, _, _ = raise_patches(rng, points, label_ids, rgb, depth, reader.calibration, cp,
                                                         int(cfg.LABELS.ANOMALY_IDS[0]), sem_img)
        keep, points, aug = self.augment(points, rng)
        if keep is not None:
            label_ids = label_ids[keep]
        sample = {"points": points.astype(np.float32), "aug_matrix": aug, "frame_id": frame, "scene_id": name}
        sample["point_labels"] = self.targets.binary(label_ids)
        if self.targets.num_semantic:
            sample["point_semantic"] = self.targets.semantic(label_ids)
        sample.update(self.voxelize(sample))
        if sem_img is not None:
            sample["image_semantic"] = self.image_semantic_targets(sem_img)
        return self.add_image(sample, rgb, reader.calibration)

    def image_semantic_targets(self, sem_img: np.ndarray) -> np.ndarray:
        """SEMANTIC-CAM label ids -> class per pixel of the stride-s feature map (nearest), IGNORE_INDEX elsewhere."""
        aux, labels = self.dataset_cfg.IMAGE.AUX_SEMANTIC, self.dataset_cfg.LABELS
        lut = np.full(256, labels.IGNORE_INDEX, np.int64)
        for c, ids in enumerate(aux.CLASSES):
            lut[np.asarray(ids, np.int64)] = c
        if aux.ANOMALY_CLASS:
            lut[np.asarray([i for i in labels.ANOMALY_IDS if i < 256], np.int64)] = len(aux.CLASSES)
        H, W = self.dataset_cfg.IMAGE.SIZE
        small = np.asarray(Image.fromarray(sem_img.astype(np.uint8)).resize((W // aux.STRIDE, H // aux.STRIDE),
                                                                            Image.NEAREST))
        return lut[small]

    def z_shift(self, scene_id: str) -> float:
        """The scenario's EVAL_GRID vertical shift (EVAL_GRID.Z_SHIFT 'auto': told from the data)."""
        return resolve_z_shift(self.readers[scene_id], self.dataset_cfg.EVAL_GRID, self.logger)

    # ---- evaluation helpers
    def gt_voxel_grid(self, scene_id: str, frame: int) -> np.ndarray:
        return self.readers[scene_id].read_voxel_grid(frame)

    def frame_has_anomaly(self, scene_id: str, frame: int) -> bool:
        return self.readers[scene_id].has("anomaly", frame)
