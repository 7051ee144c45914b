"""Score-level ensemble of several runs' prediction folders (tools/ensemble_predictions.py).

Each input is a predictions folder as tools/test.py writes it (`<Scenario_...>/<name>_<frame>.npy`, a manifest). Per
frame, the output's score is the weighted mean of the inputs' scores:
* voxel predictions (M, 4) [ix, iy, iz, score]: over the union of the voxels, each voxel's mean taken over the inputs
  that predict it (a voxel only one run predicts keeps that run's score; nothing is counted as 0);
* per-point scores (N,): the inputs must score the same N points of the frame.
Every input must hold the same scenarios and frames, and the same kind of prediction for a frame; a mismatch stops
with the file named.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .folder_eval import MANIFEST, PredictionError, find_predictions, write_manifest

__all__ = ["ensemble_frame", "ensemble_folders", "matched_predictions", "copy_manifest"]


def matched_predictions(pred_dirs: list[Path]) -> tuple[list[dict], dict | None]:
    """find_predictions of each folder, checked to cover the same scenarios and frames (and, where both folders have
    a manifest, to list the same scenarios). -> (one {scenario: {frame: file}} per folder, the first folder's
    manifest or None); a mismatch raises PredictionError naming the folder."""
    pred_dirs = [Path(p) for p in pred_dirs]
    found = [find_predictions(p) for p in pred_dirs]
    manifests = []
    for p in pred_dirs:
        m = p / MANIFEST
        manifests.append(json.loads(m.read_text()) if m.is_file() else None)
    for p, f, m in zip(pred_dirs[1:], found[1:], manifests[1:]):
        if sorted(f) != sorted(found[0]):
            only = sorted(set(f) ^ set(found[0]))
            raise PredictionError(f"{p}: not the scenarios of {pred_dirs[0]} (differing: {only[:3]})")
        for scen, frames in f.items():
            if sorted(frames) != sorted(found[0][scen]):
                diff = sorted(set(frames) ^ set(found[0][scen]))
                raise PredictionError(f"{p / scen}: not the frames of {pred_dirs[0] / scen} (differing: {diff[:5]})")
        if (m and manifests[0] and "scenarios" in m and "scenarios" in manifests[0]
                and sorted(m["scenarios"]) != sorted(manifests[0]["scenarios"])):
            raise PredictionError(f"{p / MANIFEST}: lists other scenarios than {pred_dirs[0] / MANIFEST}")
    return found, manifests[0]


def copy_manifest(manifest: dict | None, found: dict, out_dir: Path) -> Path:
    """The manifest of a folder derived from another: its scenarios and split, or (no manifest) the scenarios found."""
    manifest = manifest or {}
    return write_manifest(out_dir, manifest.get("scenarios", sorted(found)), manifest.get("split", ""))


def ensemble_frame(arrays: list[np.ndarray], weights: np.ndarray, names: list[str]) -> np.ndarray:
    """Weighted mean of one frame's predictions (see the module docstring)."""
    kinds = {"voxels" if a.ndim == 2 and a.shape[1] == 4 else "points" if a.ndim == 1 else "bad" for a in arrays}
    if "bad" in kinds or len(kinds) > 1:
        shapes = ", ".join(f"{n}: {a.shape}" for n, a in zip(names, arrays))
        raise PredictionError(f"predictions of one frame must all be voxels (M, 4) or all points (N,): {shapes}")
    if kinds == {"points"}:
        if len({len(a) for a in arrays}) > 1:
            raise PredictionError("per-point scores of one frame differ in length: "
                                  + ", ".join(f"{n}: {len(a)}" for n, a in zip(names, arrays)))
        return (np.stack([a.astype(np.float64) for a in arrays]) * weights[:, None]).sum(0) / weights.sum()
    idx = np.concatenate([a[:, :3] for a in arrays]).astype(np.int64)
    uniq, inverse = np.unique(idx, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    w = np.concatenate([np.full(len(a), wt) for a, wt in zip(arrays, weights)])
    s = np.concatenate([a[:, 3] for a in arrays]).astype(np.float64)
    num = np.bincount(inverse, w * s, len(uniq))
    den = np.bincount(inverse, w, len(uniq))
    return np.concatenate([uniq.astype(np.float64), (num / den)[:, None]], 1).astype(arrays[0].dtype)


def ensemble_folders(pred_dirs: list[Path], out_dir: Path, weights: list[float] | None = None,
                     progress: bool = False) -> dict:
    """Write the ensemble of `pred_dirs` to `out_dir`. -> {"scenarios", "frames", "inputs", "weights"}."""
    pred_dirs = [Path(p) for p in pred_dirs]
    if len(pred_dirs) < 2:
        raise ValueError("an ensemble needs at least two predictions folders")
    weights = np.ones(len(pred_dirs)) if weights is None else np.asarray(weights, np.float64)
    if len(weights) != len(pred_dirs) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"--weights: one non-negative weight per folder, not all 0; got {weights.tolist()} for "
                         f"{len(pred_dirs)} folders")
    found, manifest = matched_predictions(pred_dirs)
    out_dir = Path(out_dir)
    jobs = [(scen, frame) for scen in sorted(found[0]) for frame in sorted(found[0][scen])]
    if progress:
        from tqdm import tqdm
        jobs = tqdm(jobs, desc="ensemble", unit="frame")
    for scen, frame in jobs:
        files = [f[scen][frame] for f in found]
        arrays = []
        for path in files:
            try:
                arrays.append(np.load(path, allow_pickle=False))
            except Exception as err:
                raise PredictionError(f"{path}: cannot read .npy ({type(err).__name__}: {err})") from err
        out = ensemble_frame(arrays, weights, [str(p) for p in files])
        (out_dir / scen).mkdir(parents=True, exist_ok=True)
        np.save(out_dir / scen / files[0].name, out)
    copy_manifest(manifest, found[0], out_dir)
    summary = {"scenarios": len(found[0]), "frames": sum(len(v) for v in found[0].values()),
               "inputs": [str(p) for p in pred_dirs], "weights": weights.tolist()}
    (out_dir / "ensemble.json").write_text(json.dumps(summary, indent=1))
    return summary
