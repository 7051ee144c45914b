#!/usr/bin/env python
"""Score-level ensemble of several runs' predictions folders: per frame, the weighted mean of their scores (voxel
predictions: over the union of the voxels, each voxel's mean over the runs that predict it; per-point scores: the
runs must score the same points). The output is a predictions folder for tools/eval_voxels.py.

    python tools/ensemble_predictions.py --pred runA/eval/latest/test/predictions runB/eval/latest/test/predictions \
        --out output/ensemble/test/predictions [--weights 1 1]
    python tools/eval_voxels.py --data <data root> --pred output/ensemble/test/predictions

The runs must predict the same scenarios and frames (a mismatch stops with the folder and frame named).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet_anomaly.evaluation.ensemble import ensemble_folders  # noqa: E402
from pcdet_anomaly.utils.common_utils import create_logger, resolve_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", nargs="+", required=True, help="two or more predictions folders")
    parser.add_argument("--out", required=True, help="output predictions folder")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="one per folder (default: equal)")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    logger = create_logger()
    summary = ensemble_folders([resolve_path(p) for p in args.pred], resolve_path(args.out), args.weights,
                               progress=not args.no_progress)
    logger.info("ensemble of %d runs (weights %s): %d scenarios, %d frames -> %s", len(summary["inputs"]),
                summary["weights"], summary["scenarios"], summary["frames"], args.out)
    return summary


if __name__ == "__main__":
    main()
