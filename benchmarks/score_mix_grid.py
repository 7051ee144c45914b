#!/usr/bin/env python
"""Choose MODEL.FUSION.IMAGE_STREAM.SCORE_MIX and SCORE_MIX_RANGE on validation, as the README's eighth pass did.

A run trained with the camera-only stream is scored twice on a split with tools/test.py, once with the head alone
and once with the stream alone (the weights are the same; only the score changes):

    python tools/test.py --cfg RUN/config.yaml --output_dir RUN --split val --ckpt RUN/ckpt/mix0.pth \
        --set MODEL.FUSION.IMAGE_STREAM.SCORE_MIX 0
    python tools/test.py ... --ckpt RUN/ckpt/mix1.pth --set MODEL.FUSION.IMAGE_STREAM.SCORE_MIX 1

(mix0.pth and mix1.pth: links to the same checkpoint, so that eval/mix0/val and eval/mix1/val keep both apart.) This
script blends the two predictions folders per voxel, score = (1 - w(r)) head + w(r) stream with w(r) = W within r0 of
the sensor, fading linearly to 0 at r1 (the voxel centre's xy distance on the evaluation grid), evaluates each
setting with the project's voxel evaluation (tools/eval_voxels.py's protocol: every ground-truth voxel within
--max_range, policy zero) and prints pooled AP per setting, mean over the runs given:

    python benchmarks/score_mix_grid.py --data DATA --head RUN*/eval/mix0/val/predictions \
        --stream RUN*/eval/mix1/val/predictions --weights 0.25 0.5 --ranges 15,25 20,30 50,50

The model computes the same blend from its own voxels (their centres' distance); the README's chosen setting scored
within 0.0005 AP of this blend with tools/test.py.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcdet_anomaly.evaluation.ensemble import copy_manifest, matched_predictions  # noqa: E402
from pcdet_anomaly.evaluation.voxel_eval import voxel_ranges  # noqa: E402


def blend_folder(head: Path, stream: Path, out: Path, weight: float, r0: float, r1: float) -> None:
    """Write (1 - w(r)) head + w(r) stream per voxel to `out`; the two folders must cover the same frames
    (ensemble.matched_predictions) with voxel predictions of the same voxels."""
    (found_h, found_s), manifest = matched_predictions([head, stream])
    if not any(found_h.values()):
        raise FileNotFoundError(f"{head}: no voxel predictions (Scenario_*/*.npy)")
    for scen, frames in sorted(found_h.items()):
        for frame, f in sorted(frames.items()):
            a, b = np.load(f, allow_pickle=False), np.load(found_s[scen][frame], allow_pickle=False)
            if a.ndim != 2 or a.shape[1] != 4 or not np.array_equal(a[:, :3], b[:, :3]):
                raise ValueError(f"{f} and its stream twin must be voxel predictions (M, 4) of the same voxels")
            w = weight * np.clip((r1 - voxel_ranges(a[:, :3])) / max(r1 - r0, 1e-6), 0.0, 1.0)
            blended = a.copy()
            blended[:, 3] = (1.0 - w) * a[:, 3] + w * b[:, 3]
            (out / scen).mkdir(parents=True, exist_ok=True)
            np.save(out / scen / f.name, blended)
    copy_manifest(manifest, found_h, out)


def pooled_ap(pred: Path, data: str, max_range: float, cfg: str | None) -> float:
    """Pooled AP (policy zero) of a predictions folder, by tools/eval_voxels.py; read from its metrics.json."""
    cmd = [sys.executable, str(ROOT / "tools" / "eval_voxels.py"), "--data", data, "--pred", str(pred),
           "--max_range", str(max_range), "--policy", "zero", "--out", str(pred.parent / "eval")]
    if cfg:
        cmd += ["--cfg", cfg]
    subprocess.run(cmd, check=True, capture_output=True)
    summary = json.loads((pred.parent / "eval" / "metrics.json").read_text())
    try:
        return float(summary["policies"]["zero"]["pooled"]["all"]["ap"])
    except KeyError as err:
        raise RuntimeError(f"{pred.parent / 'eval' / 'metrics.json'}: no policies.zero.pooled.all.ap") from err


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--head", nargs="+", required=True, help="predictions folders scored with SCORE_MIX 0")
    parser.add_argument("--stream", nargs="+", required=True, help="the same runs' folders scored with SCORE_MIX 1")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--ranges", nargs="+", default=["20,20", "15,25", "20,30", "25,35", "10,30", "0,35", "0,50",
                                                        "50,50"], help="r0,r1 pairs (m)")
    parser.add_argument("--max_range", type=float, default=50.0)
    parser.add_argument("--cfg", default=None, help="config giving LABELS and EVAL_GRID (default: the project's)")
    args = parser.parse_args(argv)
    if len(args.head) != len(args.stream):
        parser.error("--head and --stream need one folder each per run")
    ranges = [tuple(float(x) for x in r.split(",")) for r in args.ranges]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = [pooled_ap(Path(h), args.data, args.max_range, args.cfg) for h in args.head]
        print(f"head alone: {np.mean(base):.4f} ({', '.join(f'{v:.4f}' for v in base)})")
        for w in args.weights:
            for r0, r1 in ranges:
                aps = []
                for i, (h, s) in enumerate(zip(args.head, args.stream)):
                    out = Path(tmp) / f"{w}_{r0}_{r1}_{i}" / "predictions"
                    blend_folder(Path(h), Path(s), out, w, r0, r1)
                    aps.append(pooled_ap(out, args.data, args.max_range, args.cfg))
                rows.append((np.mean(aps), w, r0, r1, aps))
                print(f"SCORE_MIX {w:g} SCORE_MIX_RANGE [{r0:g}, {r1:g}]: {np.mean(aps):.4f} "
                      f"({', '.join(f'{v:.4f}' for v in aps)})", flush=True)
    best = max(rows)
    print(f"best: SCORE_MIX {best[1]:g} SCORE_MIX_RANGE [{best[2]:g}, {best[3]:g}] AP {best[0]:.4f} "
          f"(head alone {np.mean(base):.4f})")
    return rows


if __name__ == "__main__":
    main()
