#!/usr/bin/env python
"""How much AP can a model that predicts one score per training voxel reach at all? An oracle, not a model.

The network scores cylindrical voxels; the benchmark scores 0.5 m cartesian voxels through the point nearest to each
evaluation voxel's lower corner. A coarse training grid puts anomaly points and the road around them in one voxel, and
every one of those points inherits the same score. This script scores each point with its training voxel's true
anomaly fraction (the best any voxel-resolution model can do) and runs the exact evaluation path of tools/test.py:

    python benchmarks/grid_ceiling.py --data data/anovox_bench --grids 120,90,16 240,180,32 480,360,32
Prints one row per grid: pooled AUROC / AP / FPR95 of the voxel oracle, next to the point-label oracle (a check of the
evaluation path: it must be ~1).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet_anomaly.config import load_config  # noqa: E402
from pcdet_anomaly.datasets import build_dataloader  # noqa: E402
from pcdet_anomaly.engine.validate import run_inference  # noqa: E402
from pcdet_anomaly.utils.common_utils import ROOT_DIR  # noqa: E402


class VoxelOracle(torch.nn.Module):
    """point score = anomaly fraction of the labelled points in its training voxel (per_point=False), or the point's
    own label (per_point=True)."""

    def __init__(self, per_point: bool, ignore_index: int):
        super().__init__()
        self.per_point, self.ignore_index = per_point, ignore_index

    def forward(self, batch):
        labels, p2v = batch["point_labels"], batch["point2voxel"]
        known = (labels != self.ignore_index) & (p2v >= 0)
        positive = (labels == 1).double()
        if self.per_point:
            scores = positive
        else:
            voxels = len(batch["voxel_coords"])
            index = p2v.clamp(min=0)
            hits = torch.zeros(voxels, dtype=torch.float64).index_add_(0, index[known], positive[known])
            count = torch.zeros(voxels, dtype=torch.float64).index_add_(0, index[known], torch.ones_like(
                positive[known]))
            voxel_fraction = hits / count.clamp(min=1)
            scores = voxel_fraction[index]
        out = dict(batch)
        out["point_scores"] = scores.float()
        out["voxel_scores"] = scores
        return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="cfgs/anovox/cylinder_fusion_cpu.yaml")
    parser.add_argument("--data", default="data/anovox_bench")
    parser.add_argument("--split", default="test")
    parser.add_argument("--holdout", nargs="*", default=["cone", "boulder"])
    parser.add_argument("--max_points", type=int, default=20000)
    parser.add_argument("--grids", nargs="+", default=["120,90,16", "240,180,32", "480,360,32"])
    args = parser.parse_args(argv)
    cfg = load_config(ROOT_DIR / args.cfg)
    d = cfg.DATA_CONFIG
    d.DATA_PATH, d.MAX_POINTS, d.IMAGE.ENABLED = args.data, args.max_points, False
    d.SPLIT.HOLDOUT_SHAPE_FAMILIES = list(args.holdout)
    print(f"| training grid (rho, phi, z) | voxel oracle AUROC | voxel oracle AP | voxel oracle FPR95 | "
          f"point oracle AP |\n|---|---|---|---|---|")
    for grid in args.grids:
        d.VOXELIZE.GRID_SIZE = [int(v) for v in grid.split(",")]
        row = []
        for per_point in (False, True):
            dataset, loader, _ = build_dataloader(d, args.split, 2, training=False)
            evaluator, _, _ = run_inference(VoxelOracle(per_point, d.LABELS.IGNORE_INDEX), loader, dataset, d,
                                            torch.device("cpu"), progress=False)
            row.append(evaluator.summary()["pooled"]["all"])
        print(f"| {grid} | {row[0]['auroc']:.4f} | {row[0]['ap']:.4f} | {row[0]['fpr95']:.4f} | "
              f"{row[1]['ap']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
