"""Arguments shared by tools/train.py and tools/test.py (parsed in one place)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..utils.common_utils import ROOT_DIR, resolve_path

__all__ = ["common_parser", "load_cfg_from_args", "run_dir_for"]


def common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", "--cfg_file", dest="cfg", required=True, help="config yaml")
    parser.add_argument("--batch_size", type=int, default=None, help="frames per process (per GPU)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers per process")
    parser.add_argument("--extra_tag", default="default", help="run name under output/<cfg>/")
    parser.add_argument("--output_dir", default=None, help="override the run folder")
    parser.add_argument("--ckpt", default=None, help="checkpoint to resume (train) or evaluate (test)")
    parser.add_argument("--set", dest="set_cfgs", nargs="+", default=None, metavar="KEY VALUE",
                        help="config overrides: --set OPTIMIZATION.LR 0.003 DATA_CONFIG.MAX_POINTS 20000")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument("--fix_random_seed", action="store_true", help="deterministic algorithms where possible")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars (log lines only)")
    return parser


def load_cfg_from_args(args):
    cfg = load_config(resolve_path(args.cfg) if not Path(args.cfg).is_absolute() and not Path(args.cfg).exists()
                      else args.cfg, args.set_cfgs)
    if args.batch_size is not None:
        cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU = args.batch_size
    return cfg


def run_dir_for(cfg, args) -> Path:
    if args.output_dir:
        return resolve_path(args.output_dir)
    cfg_path = Path(cfg.CFG_FILE)
    try:
        rel = cfg_path.relative_to(ROOT_DIR / "cfgs").with_suffix("")
    except ValueError:
        rel = Path(cfg_path.stem)
    return ROOT_DIR / "output" / rel / args.extra_tag
