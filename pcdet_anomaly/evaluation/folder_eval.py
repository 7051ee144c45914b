"""Evaluate a folder of per-frame predictions against an AnoVox dataset root."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import cuda_ops

from ..datasets.anovox.labels import TargetMapper
from ..datasets.anovox.reader import FrameError, ScenarioReader, detect_layout, frame_id_of
from ..datasets.anovox.zshift import resolve_z_shift
from .ground_truth import frame_ground_truth
from .voxel_eval import VoxelEvaluator, check_pred_indices

__all__ = ["PredictionError", "find_predictions", "load_prediction", "evaluate_folder", "write_manifest",
           "expected_scenarios"]


class PredictionError(ValueError):
    pass


MANIFEST = "manifest.json"


def write_manifest(pred_dir: Path, scenarios: list[str], split: str = "") -> Path:
    """What a predictions folder is meant to cover (tools/test.py writes it): eval_voxels then treats a scenario of
    this list without predictions as missing, and ignores the data root's other scenarios."""
    import json
    pred_dir = Path(pred_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    path = pred_dir / MANIFEST
    path.write_text(json.dumps({"split": split, "scenarios": sorted(scenarios)}, indent=1))
    return path


def expected_scenarios(pred_dir: Path, data_root: Path) -> tuple[list[str], str]:
    """-> (scenario names the predictions should cover, where that list came from)."""
    import json
    from ..datasets.anovox.reader import list_scenarios
    manifest = Path(pred_dir) / MANIFEST
    if manifest.is_file():
        try:
            names = json.loads(manifest.read_text())["scenarios"]
        except (ValueError, KeyError, TypeError) as err:
            raise PredictionError(f"{manifest}: malformed manifest ({err})") from None
        return sorted(names), str(manifest)
    return [p.name for p in list_scenarios(data_root)], f"every scenario of {data_root}"


def find_predictions(pred_dir: Path) -> dict:
    """{scenario name: {frame id: file}} from `<pred_dir>/<Scenario_...>/<anything>_<frame>.npy`."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionError(f"{pred_dir}: predictions folder not found")
    out = {}
    for scen in sorted(p for p in pred_dir.iterdir() if p.is_dir() and p.name.startswith("Scenario_")):
        files = {}
        for f in scen.glob("*.npy"):
            frame = frame_id_of(f)
            if frame in files:
                raise PredictionError(f"{f}: a second prediction for frame {frame} (also {files[frame].name})")
            files[frame] = f
        out[scen.name] = files
    if not out:
        raise PredictionError(f"{pred_dir}: no Scenario_* folders with predictions")
    return out


def load_prediction(path: Path, reader: ScenarioReader, frame: int, pred_type: str, score_rule: str, eval_grid,
                    logger=None):
    """-> (voxels [M, 3] int64, scores [M] float64) on the evaluation grid."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise PredictionError(f"{path}: cannot read .npy ({type(err).__name__}: {err})") from err
    if pred_type == "auto":
        pred_type = "voxels" if arr.ndim == 2 and arr.shape[1] == 4 else "points"
    if pred_type == "voxels":
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise PredictionError(f"{path}: voxel predictions must be (M, 4) [ix, iy, iz, score], got {arr.shape}")
        scores = arr[:, 3].astype(np.float64)
        try:
            check_pred_indices(arr[:, :3], eval_grid.GRID_SIZE, str(path))
        except ValueError as err:
            raise PredictionError(str(err)) from None
        voxels = arr[:, :3].astype(np.int64)
    elif pred_type == "points":
        scores = arr.reshape(-1).astype(np.float64)
        if not reader.files.get("lidar"):
            raise PredictionError(f"{path}: per-point scores need the scenario's LIDAR folder, and "
                                  f"{reader.path} has none (ground truth only)")
        points = reader.read_points(frame)
        if len(scores) != len(points):
            raise PredictionError(f"{path}: {len(scores)} point scores but the LiDAR frame has {len(points)} points")
        if np.isnan(scores).any():
            raise PredictionError(f"{path}: {int(np.isnan(scores).sum())} NaN scores")
        vox, sc = cuda_ops.eval_grid_scores(torch.from_numpy(points), torch.from_numpy(scores), score_rule,
                                            eval_grid.VOXEL_SIZE, eval_grid.GRID_SIZE, eval_grid.OFFSET,
                                            resolve_z_shift(reader, eval_grid, logger))
        voxels, scores = vox.numpy(), sc.numpy()
    else:
        raise PredictionError(f"pred_type must be auto, voxels or points, got {pred_type!r}")
    if np.isnan(scores).any():
        raise PredictionError(f"{path}: {int(np.isnan(scores).sum())} NaN scores")
    return voxels, scores


def evaluate_folder(data_root: Path, pred_dir: Path, labels_cfg, eval_grid, pred_type: str = "auto",
                    score_rule: str = "nearest", policy: str = "zero", protocol: str = "default",
                    gt_source: str = "voxel_grid", max_range: float = -1.0, streaming: bool = False,
                    layout: str = "auto", logger: logging.Logger | None = None,
                    allow_missing: bool = False, bad_frame_policy: str = "stop") -> tuple[dict, VoxelEvaluator]:
    """Every ground-truth voxel of every predicted scenario, scored under both policies (`policy` is the headline).
    With voxel predictions and gt_source 'voxel_grid' the data root needs only VOXEL_GRID (and ANOMALY for the
    groups); sensor folders are read only for per-point predictions or gt_source 'semantic_lidar'."""
    logger = logger or logging.getLogger("pcdet_anomaly")
    data_root = Path(data_root)
    predictions = find_predictions(pred_dir)
    expected, source = expected_scenarios(pred_dir, data_root)
    missing_scenes = [n for n in expected if n not in predictions]
    missing_frames: dict = {}
    targets = TargetMapper(labels_cfg.ANOMALY_IDS, labels_cfg.IGNORE_IDS, labels_cfg.IGNORE_INDEX)
    if protocol == "anovox":
        # the official script ignores nothing: every non-anomaly voxel is normal
        targets = TargetMapper(labels_cfg.ANOMALY_IDS, [], labels_cfg.IGNORE_INDEX)
    evaluator = VoxelEvaluator(protocol=protocol, streaming=streaming, policy=policy, max_range=max_range,
                               eval_grid=eval_grid)
    jobs = []
    for scene, files in predictions.items():
        scen_path = data_root / scene
        if not scen_path.is_dir():
            raise PredictionError(f"{pred_dir / scene}: no scenario of that name in {data_root}")
        # a ground-truth-only copy (VOXEL_GRID, ANOMALY) is read as such whatever the configured sensor layout
        reader = ScenarioReader(scen_path, "gt_only" if detect_layout(scen_path) == "gt_only" else layout)
        missing = sorted(set(reader.frames) - set(files))
        extra = sorted(set(files) - set(reader.frames))
        if missing and not allow_missing:
            raise PredictionError(f"{pred_dir / scene}: no prediction for frame(s) {missing[:10]} of the dataset "
                                  f"(--allow_missing scores the rest and lists these in the report)")
        if missing:
            missing_frames[scene] = missing
        if extra:
            raise PredictionError(f"{files[extra[0]]}: frame {extra[0]} is not in the dataset scenario {scene}")
        jobs += [(reader, frame, files[frame]) for frame in reader.frames if frame in files]
    if missing_scenes and not allow_missing:
        raise PredictionError(f"{pred_dir}: no predictions for {len(missing_scenes)} scenario(s) expected by {source}: "
                              f"{missing_scenes[:5]}{' ...' if len(missing_scenes) > 5 else ''} (--allow_missing "
                              f"scores the rest and lists these in the report)")
    for scene in missing_scenes:
        logger.warning("%s: no predictions for scenario %s (expected by %s): not scored", pred_dir, scene, source)
    bad_frames = []
    for reader, frame, path in tqdm(jobs, desc="eval_voxels", unit="frame"):
        try:
            z_shift = resolve_z_shift(reader, eval_grid, logger) if gt_source == "semantic_lidar" else 0.0
            gt_vox, gt_ids, gt_lab = frame_ground_truth(reader, frame, targets, gt_source, max_range, eval_grid,
                                                        z_shift)
            voxels, scores = load_prediction(path, reader, frame, pred_type, score_rule, eval_grid, logger)
        except FrameError as err:        # unreadable ground truth (or LiDAR for point predictions)
            if bad_frame_policy == "stop":
                raise
            logger.warning("bad frame dropped, not scored: %s", err)
            bad_frames.append(str(err.path))
            continue
        evaluator.add(reader.name, frame, gt_vox, gt_ids, gt_lab, voxels, scores, reader.anomaly_rows(frame),
                      source=str(path), z_shift=getattr(reader, "_z_shift", None) or 0.0)
    summary = evaluator.summary()
    summary["missing_predictions"] = {"scenarios": missing_scenes, "frames": missing_frames, "expected_by": source}
    summary["bad_frames"] = bad_frames
    return summary, evaluator
