#!/usr/bin/env python
"""Point-level AUROC / AP / FPR95 (the STU protocol) and object-level SQ / RQ / PQ / UQ of a predictions folder
against SemanticKITTI-layout data (STU, or our synthetic set in that layout), per sequence and pooled.

    python tools/eval_points.py --data data/stu_dataset/val --pred output/.../predictions --out output/.../eval

Predictions: <pred>/<seq>/<frame>.txt, one score per point of <data>/<seq>/velodyne/<frame>.bin (tools/test.py
writes them with an STU / SemanticKITTI config). Points closer than 2.5 m or farther than 50 m (3D) are ignored,
frames with fewer than 5 anomaly points are skipped, everything else is pooled; AP = average_precision_score,
AUROC = auc(roc_curve), FPR95 = FPR at the first ROC point with TPR > 0.95 (compute_point_level_ood.py).
Object level: instances = connected components (<= --eps m) of points with score > --threshold, matched to the
ground-truth anomaly instances at IoU > 0.5 (compute_object_level_ood.py's counts).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet_anomaly.config import load_config  # noqa: E402
from pcdet_anomaly.evaluation import format_table, plot_curves, write_reports  # noqa: E402
from pcdet_anomaly.evaluation.point_folder_eval import evaluate_point_folder  # noqa: E402
from pcdet_anomaly.utils.common_utils import ROOT_DIR, create_logger, resolve_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="SemanticKITTI-layout root (<seq>/velodyne, <seq>/labels)")
    parser.add_argument("--pred", required=True, help="predictions folder (<seq>/<frame>.txt)")
    parser.add_argument("--out", default=None, help="report folder (default: <pred>/../eval)")
    parser.add_argument("--cfg", default=str(ROOT_DIR / "cfgs/stu/stu_lidar_only_cpu.yaml"),
                        help="config giving LABELS (ANOMALY_IDS, IGNORE_IDS: raw ids) and POINT_EVAL")
    parser.add_argument("--sequences", default="1[0-9][0-9]",
                        help="glob of the sequences to score when the folder has no manifest.json (STU: 1xx)")
    parser.add_argument("--threshold", type=float, default=None, help="object level: score > threshold "
                        "(default POINT_EVAL.OBJECT_THRESHOLD, 0.5)")
    parser.add_argument("--eps", type=float, default=None, help="object level: connection distance, m (default 1.0)")
    parser.add_argument("--no_objects", action="store_true", help="skip the object level")
    parser.add_argument("--allow_missing", action="store_true",
                        help="score what is there when frames have no prediction, and list them (default: error)")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--set", dest="set_cfgs", nargs="+", default=None)
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.set_cfgs)
    dc = cfg.DATA_CONFIG
    if args.threshold is not None:
        dc.POINT_EVAL.OBJECT_THRESHOLD = args.threshold
    if args.eps is not None:
        dc.POINT_EVAL.OBJECT_EPS = args.eps
    logger = create_logger()
    pred = resolve_path(args.pred)
    out = resolve_path(args.out) if args.out else pred.parent / "eval"
    summary, evaluator = evaluate_point_folder(resolve_path(args.data), pred, dc.POINT_EVAL, dc.LABELS.ANOMALY_IDS,
                                               dc.LABELS.IGNORE_IDS, args.sequences, args.allow_missing,
                                               not args.no_objects, dc.BAD_FRAME_POLICY, logger,
                                               not args.no_progress)
    print(format_table(summary))
    paths = write_reports(summary, out, "metrics_points")
    plot_curves(evaluator.curves("all"), out / "curves_points.png", "all scored frames, pooled (STU protocol)")
    logger.info("reports: %s", ", ".join(str(p) for p in paths.values()))
    return summary


if __name__ == "__main__":
    main()
