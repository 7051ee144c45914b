"""Point-level evaluation of a predictions folder against SemanticKITTI-layout data (the STU protocol).

Predictions: <pred>/<seq>/<frame>.txt, one score per line for every point of <data>/<seq>/velodyne/<frame>.bin
(higher = more anomalous), as tools/test.py writes them and STU's compute_point_level_ood.py reads them.
Sequences: the predictions folder's manifest.json (tools/test.py), else those matching --sequences (default
"1[0-9][0-9]", STU's evaluated sequences). A labelled frame without a prediction is an error (or, with
allow_missing, listed and not scored); the official script iterates over prediction files only, so such a frame
silently drops out there.
"""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..datasets.anovox.reader import FrameError
from ..datasets.semantickitti.reader import SequenceReader, list_sequences
from .folder_eval import MANIFEST, PredictionError
from .point_eval import PointEvaluator

__all__ = ["evaluate_point_folder", "read_scores"]


def read_scores(path: Path, num_points: int) -> np.ndarray:
    """One float per line -> float32 [N] (as the official script: np.loadtxt(...).astype(np.float32))."""
    try:
        scores = np.loadtxt(path, dtype=np.float64, ndmin=1).astype(np.float32)
    except ValueError as err:
        raise PredictionError(f"{path}: not one number per line ({err})") from None
    if scores.ndim != 1 or len(scores) != num_points:
        raise PredictionError(f"{path}: {len(scores)} scores, its scan has {num_points} points (one score per point "
                              f"of the .bin, in order)")
    return scores


def evaluate_point_folder(data_root: Path, pred_dir: Path, point_eval_cfg, anomaly_ids=(2,), ignore_ids=(0,),
                          sequences: str = "1[0-9][0-9]", allow_missing: bool = False, objects: bool = True,
                          bad_frame_policy: str = "stop", logger=None, progress: bool = True):
    """-> (summary dict, PointEvaluator)."""
    data_root, pred_dir = Path(data_root), Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionError(f"{pred_dir}: predictions folder not found")
    seqs = {p.name: p for p in list_sequences(data_root)}
    if not seqs:
        raise PredictionError(f"{data_root}: no sequence folders with velodyne/ (SemanticKITTI layout)")
    manifest = pred_dir / MANIFEST
    if manifest.is_file():
        try:
            names = json.loads(manifest.read_text())["scenarios"]
        except (ValueError, KeyError, TypeError) as err:
            raise PredictionError(f"{manifest}: malformed manifest ({err})") from None
        expected_by = str(manifest)
    else:
        names = [n for n in seqs if fnmatch.fnmatchcase(n, sequences)]
        expected_by = f"sequences of {data_root} matching '{sequences}'"
    unknown = [n for n in names if n not in seqs]
    if unknown:
        raise PredictionError(f"{expected_by}: sequences {unknown} are not in {data_root}")
    pe = point_eval_cfg
    evaluator = PointEvaluator(anomaly_ids, ignore_ids, pe.MIN_RANGE, pe.MAX_RANGE, pe.MIN_ANOMALY_POINTS,
                               pe.OBJECT_THRESHOLD if objects else None, pe.OBJECT_EPS, pe.OBJECT_MIN_POINTS)
    missing_seq, missing_frames, bad = [], [], []
    jobs = []
    for name in sorted(names):
        reader = SequenceReader(seqs[name])
        folder = pred_dir / name
        if not folder.is_dir():
            missing_seq.append(name)
            continue
        preds = {p.stem: p for p in folder.glob("*.txt")}
        stems = {reader.stem(f) for f in reader.frames}
        extra = sorted(set(preds) - stems)
        if extra:
            raise PredictionError(f"{folder}: predictions {extra[:5]} have no scan in {seqs[name] / 'velodyne'}")
        for f in reader.frames:
            if reader.stem(f) in preds:
                jobs.append((name, reader, f, preds[reader.stem(f)]))
            else:
                missing_frames.append(f"{name}/{reader.stem(f)}")
    if (missing_seq or missing_frames) and not allow_missing:
        raise PredictionError(f"predictions missing (expected by {expected_by}): sequences {missing_seq[:5]}, frames "
                              f"{missing_frames[:5]} ({len(missing_frames)} frames); pass --allow_missing to score "
                              f"the rest and list them")
    for name, reader, frame, pred in tqdm(jobs, desc="eval points", unit="frame", disable=not progress):
        try:
            points = reader.read_points(frame)
            semantic, instance = reader.read_labels(frame, len(points))
        except FrameError as err:
            if bad_frame_policy == "stop":
                raise
            bad.append(str(err))
            if logger:
                logger.warning("bad frame, not scored: %s", err)
            continue
        scores = read_scores(pred, len(points))
        evaluator.add(name, frame, points[:, :3], semantic, scores, source=str(pred), instance=instance)
    summary = evaluator.summary()
    summary["missing_predictions"] = {"scenarios": missing_seq, "frames": missing_frames[:100],
                                      "num_frames": len(missing_frames), "expected_by": expected_by}
    summary["bad_frames"] = bad
    return summary, evaluator
