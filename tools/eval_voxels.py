#!/usr/bin/env python
"""Voxel-level AUROC / AP / FPR95 of a predictions folder against an AnoVox dataset, per scene and pooled.

    python tools/eval_voxels.py --data data/anovox_synth --pred output/.../predictions --out output/.../eval

Predictions: <pred>/<Scenario_...>/<name>_<frame>.npy, either AnoVox voxel predictions (M, 4) [ix, iy, iz, score]
on the 0.5 m evaluation grid, or per-point scores (N,) aligned with that frame's LIDAR points (voxelized with
--score_rule). Frames are paired by scenario and integer frame id. With voxel predictions the data root needs only
VOXEL_GRID (and ANOMALY for the type / size groups), as on an evaluation server.

Every ground-truth voxel within --max_range is scored under both policies (zero and the official intersect) and the
report states the coverage: ground-truth and anomalous voxels in range, predicted, unpredicted.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet_anomaly.config import load_config  # noqa: E402
from pcdet_anomaly.evaluation import format_table, plot_curves, write_reports  # noqa: E402
from pcdet_anomaly.evaluation.folder_eval import evaluate_folder  # noqa: E402
from pcdet_anomaly.utils.common_utils import ROOT_DIR, create_logger, resolve_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="AnoVox dataset root")
    parser.add_argument("--pred", required=True, help="predictions folder")
    parser.add_argument("--out", default=None, help="report folder (default: <pred>/../eval)")
    parser.add_argument("--cfg", default=str(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml"),
                        help="config giving LABELS and EVAL_GRID")
    parser.add_argument("--pred_type", choices=["auto", "voxels", "points"], default="auto")
    parser.add_argument("--score_rule", choices=["nearest", "mean", "median", "max"], default="nearest")
    parser.add_argument("--policy", choices=["intersect", "zero"], default=None,
                        help="headline policy (both are always reported): zero (default, EVAL_GRID.POLICY): "
                             "ground-truth voxels without a prediction score 0; intersect: the official AnoVox join")
    parser.add_argument("--protocol", choices=["default", "anovox"], default="default")
    parser.add_argument("--gt_source", choices=["voxel_grid", "semantic_lidar"], default="voxel_grid")
    parser.add_argument("--max_range", type=float, default=None,
                        help="keep ground-truth voxels within this xy range (m); default EVAL_GRID.MAX_RANGE (50); "
                             "-1: the whole grid")
    parser.add_argument("--streaming", action="store_true", help="histogram mode for data beyond memory")
    parser.add_argument("--allow_missing", action="store_true",
                        help="score what is there when scenarios or frames have no predictions, and list them in the "
                             "report (default: an error). Expected scenarios: the predictions folder's manifest.json "
                             "(tools/test.py writes it), else every scenario of --data")
    parser.add_argument("--set", dest="set_cfgs", nargs="+", default=None)
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.set_cfgs)
    logger = create_logger()
    pred = resolve_path(args.pred)
    out = resolve_path(args.out) if args.out else pred.parent / "eval"
    eg = cfg.DATA_CONFIG.EVAL_GRID
    policy = args.policy or eg.POLICY
    max_range = eg.MAX_RANGE if args.max_range is None else args.max_range
    summary, evaluator = evaluate_folder(resolve_path(args.data), pred, cfg.DATA_CONFIG.LABELS, eg,
                                         args.pred_type, args.score_rule, policy, args.protocol, args.gt_source,
                                         max_range, args.streaming, cfg.DATA_CONFIG.LAYOUT, logger,
                                         allow_missing=args.allow_missing,
                                         bad_frame_policy=cfg.DATA_CONFIG.BAD_FRAME_POLICY)
    print(format_table(summary))
    paths = write_reports(summary, out)
    if not args.streaming:
        plot_curves(evaluator.curves("all"), out / "curves_all.png", "all frames, pooled")
    logger.info("reports: %s", ", ".join(str(p) for p in paths.values()))
    return summary


if __name__ == "__main__":
    main()
