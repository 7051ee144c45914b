#!/usr/bin/env python
"""Run a trained model on a split, write per-frame predictions and the metrics report: AnoVox voxel predictions for
AnoVox configs; for SemanticKITTI-layout configs (STU, cfgs/stu/) STU's format, one score per point of every scan,
<run>/eval/<ckpt>/<split>/predictions/<seq>/<frame>.txt, with the point- and object-level report (tools/eval_points.py).

    python tools/test.py --cfg cfgs/anovox/cylinder_fusion_cpu.yaml --ckpt output/.../ckpt/best.pth
    python tools/test.py --cfg ... --eval_all            (every checkpoint_epoch_*.pth of the run folder)
    python tools/test.py --cfg ... --tta                 (test-time augmentation: DATA_CONFIG.TEST_AUGMENTATION's
                                                          views, mirrored in y by default, scores averaged)

Predictions: <run>/eval/<ckpt name>/<split>/predictions/<Scenario>/VOXEL_PRED_<frame>.npy, float64 (M, 4)
[ix, iy, iz, score] on the 0.5 m AnoVox evaluation grid; `tools/eval_voxels.py` reads them.
"""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet_anomaly.datasets import build_dataloader  # noqa: E402
from pcdet_anomaly.engine.checkpoint import inference_state, load_checkpoint, load_model_weights  # noqa: E402
from pcdet_anomaly.engine.cli import common_parser, load_cfg_from_args, run_dir_for  # noqa: E402
from pcdet_anomaly.engine.distributed import init_distributed  # noqa: E402
from pcdet_anomaly.engine.validate import run_inference  # noqa: E402
from pcdet_anomaly.evaluation import format_table, plot_curves, write_reports  # noqa: E402
from pcdet_anomaly.evaluation.folder_eval import write_manifest  # noqa: E402
from pcdet_anomaly.models import build_network  # noqa: E402
from pcdet_anomaly.utils.common_utils import create_logger  # noqa: E402


def evaluate_checkpoint(cfg, ckpt: Path, split: str, out_root: Path, device, workers, logger, progress=True):
    model = build_network(cfg.MODEL, cfg.DATA_CONFIG).to(device)
    load_model_weights(model, inference_state(load_checkpoint(ckpt)), logger, strict=True)
    dataset, loader, _ = build_dataloader(cfg.DATA_CONFIG, split, cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU, False,
                                          workers, False, cfg.TRAIN.SEED, logger)
    out = out_root / ckpt.stem / split
    write_manifest(out / "predictions", dataset.scenarios, split)
    evaluator, _, stats = run_inference(model, loader, dataset, cfg.DATA_CONFIG, device, out / "predictions",
                                        progress=progress, desc=f"test {ckpt.stem}",
                                        tta=bool(cfg.DATA_CONFIG.TEST_AUGMENTATION.ENABLED))
    summary = evaluator.summary()
    summary["bad_frames"] = [b["bad_frame"] for b in stats.pop("bad_frames", [])]
    summary["score_stats"] = stats
    summary["checkpoint"] = str(ckpt)
    tta = cfg.DATA_CONFIG.TEST_AUGMENTATION
    if tta.ENABLED:
        from pcdet_anomaly.models.tta import views_from_cfg
        summary["test_augmentation"] = {"views": len(views_from_cfg(tta)), "flip_y": list(tta.FLIP_Y),
                                        "rotations": list(tta.ROTATIONS), "scales": list(tta.SCALES),
                                        "reduce": tta.REDUCE}
        logger.info("test-time augmentation: %d views (%s)", summary["test_augmentation"]["views"],
                    summary["test_augmentation"])
    print(format_table(summary))
    write_reports(summary, out, "metrics")
    plot_curves(evaluator.curves("all"), out / "curves_all.png", f"{ckpt.stem} on {split}")
    logger.info("predictions and report in %s", out)
    return summary


def main(argv=None):
    parser = common_parser(__doc__)
    parser.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    parser.add_argument("--eval_all", action="store_true", help="evaluate every checkpoint_epoch_*.pth")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation (DATA_CONFIG.TEST_AUGMENTATION.ENABLED true): the scores of "
                             "its views averaged per point")
    args = parser.parse_args(argv)
    cfg = load_cfg_from_args(args)
    if args.tta:
        cfg.DATA_CONFIG.TEST_AUGMENTATION.ENABLED = True
    _, _, _, device = init_distributed("none")
    run_dir = run_dir_for(cfg, args)
    logger = create_logger(run_dir / "log_test.txt")
    if args.eval_all:
        ckpts = sorted((run_dir / "ckpt").glob("checkpoint_epoch_*.pth"),
                       key=lambda p: int(re.search(r"(\d+)\.pth$", p.name)[1]))
        if not ckpts:
            raise SystemExit(f"{run_dir / 'ckpt'}: no checkpoint_epoch_*.pth to evaluate")
    else:
        ckpts = [Path(args.ckpt) if args.ckpt else run_dir / "ckpt" / "best.pth"]
    workers = cfg.TRAIN.NUM_WORKERS if args.workers is None else args.workers
    results = {}
    for ckpt in ckpts:
        results[ckpt.name] = evaluate_checkpoint(cfg, ckpt, args.split, run_dir / "eval", device, workers, logger,
                                                 not args.no_progress)
    return results


if __name__ == "__main__":
    main()
