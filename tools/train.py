#!/usr/bin/env python
"""Train a voxel anomaly segmentation model.

    python tools/train.py --cfg cfgs/anovox/cylinder_fusion.yaml
    python tools/train.py --cfg cfgs/anovox/cylinder_fusion_cpu.yaml --epochs 4 --extra_tag try1
    torchrun --nproc_per_node 2 tools/train.py --launcher pytorch --cfg ...     (or tools/dist_train.sh 2 --cfg ...)

Resumes automatically from the newest readable checkpoint of the run folder unless --ckpt names one.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pcdet_anomaly.engine.cli import common_parser, load_cfg_from_args, run_dir_for  # noqa: E402
from pcdet_anomaly.engine.distributed import cleanup, init_distributed  # noqa: E402
from pcdet_anomaly.engine.guard import GuardStop  # noqa: E402
from pcdet_anomaly.engine.trainer import PREEMPT_EXIT_CODE, Preempted, Trainer  # noqa: E402
from pcdet_anomaly.utils.common_utils import create_logger, set_random_seed  # noqa: E402


def main(argv=None):
    parser = common_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--pretrained_model", default=None, help="initial weights (not a resume)")
    parser.add_argument("--max_ckpt_save_num", type=int, default=None)
    parser.add_argument("--sync_bn", action="store_true")
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 + scaler on CUDA)")
    parser.add_argument("--stop_after_epoch", type=int, default=None, help=argparse_hidden())
    args = parser.parse_args(argv)
    cfg = load_cfg_from_args(args)
    if args.epochs is not None:
        cfg.OPTIMIZATION.NUM_EPOCHS = args.epochs
    distributed, rank, world_size, device = init_distributed(args.launcher)
    out_dir = run_dir_for(cfg, args)
    logger = create_logger(out_dir / "log_train.txt", rank)
    logger.info("run folder %s; config %s", out_dir, cfg.CFG_FILE)
    set_random_seed(cfg.TRAIN.SEED + rank, deterministic=args.fix_random_seed)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    trainer = Trainer(cfg, out_dir, logger, device, rank, world_size, distributed, args.workers, args.amp,
                      args.sync_bn, args.max_ckpt_save_num, progress=not args.no_progress)
    trainer.resume(args.ckpt, args.pretrained_model)
    try:
        result = trainer.train(stop_after_epoch=args.stop_after_epoch)
    except GuardStop as err:
        logger.error("training stopped by the learning guard: %s", err)
        cleanup()
        sys.exit(3)
    except Preempted as err:
        logger.warning("%s", err)
        cleanup()
        sys.exit(PREEMPT_EXIT_CODE)
    logger.info("done: %s; best %s %.4f at epoch %d; run folder %s", result["status"], cfg.TRAIN.BEST_METRIC,
                abs(result["best_metric"]) if result["best_epoch"] >= 0 else float("nan"), result["best_epoch"],
                out_dir)
    cleanup()
    return result


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
