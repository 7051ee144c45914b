#!/usr/bin/env python
"""Evaluation speed, side by side in one process: our exact metrics vs scikit-learn, our sort-merge voxel join
vs the official pairwise broadcast match, and our STU point-level protocol vs STU's own (compute_point_level_ood.py:
per-frame filtering, then sklearn's average_precision_score, roc_curve and auc on the pool).

    python benchmarks/bench_eval.py [--sizes 1000000 10000000] [--join 5000 20000 50000] [--stu_frames 20]
"""
import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve  # noqa: E402

from pcdet_anomaly.evaluation import match_voxels, ranking_metrics  # noqa: E402
from pcdet_anomaly.evaluation.point_eval import PointEvaluator  # noqa: E402


def stu_official(frames):
    """STU's PointOODMetricsCalculator, as published (update per frame, compute_metrics on the pool)."""
    all_s, all_l = [], []
    for pts, sem, scores in frames:
        d = np.linalg.norm(pts, axis=1)
        lab = np.where(sem == 2, 1, np.where(sem != 0, 0, -1))
        lab = np.where((d > 50) | (d < 2.5), -1, lab)
        m = lab != -1
        if np.sum(lab[m]) < 5:
            continue
        all_s.append(scores[m])
        all_l.append(lab[m])
    y, s = np.concatenate(all_l), np.concatenate(all_s)
    ap = average_precision_score(y, s)
    fpr, tpr, thr = roc_curve(y, s)
    return ap, auc(fpr, tpr), fpr[np.argmax(tpr > 0.95)]


def stu_ours(frames):
    ev = PointEvaluator()
    for i, (pts, sem, scores) in enumerate(frames):
        ev.add("100", i, pts, sem, scores)
    a = ev.summary()["pooled"]["all"]
    return a["ap"], a["auroc"], a["fpr95"]


def sklearn_all(y, s):
    roc_auc_score(y, s)
    average_precision_score(y, s)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


def pairwise_match(pred, scores, gt, labels):
    """The official approach: compare every predicted voxel with every ground-truth voxel."""
    eq = (gt[:, None, :] == pred[None, :, :]).all(-1)
    gi, pi = np.nonzero(eq)
    return labels[gi], scores[pi]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--join", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    parser.add_argument("--stu_frames", type=int, default=20, help="frames of 120k points for the STU protocol")
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}\n")
    print("| scores | ours: AUROC+AP+FPR95 (s) | sklearn: the same three (s) | ratio | max abs difference |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        y = rng.random(n) < 0.01
        s = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), 4).astype(np.float32)
        t_ours, m = timed(lambda: ranking_metrics(y, s))
        t_sk, _ = timed(lambda: sklearn_all(y, s))
        diff = max(abs(m.auroc - roc_auc_score(y, s)), abs(m.ap - average_precision_score(y, s)))
        print(f"| {n:,} | {t_ours:.2f} | {t_sk:.2f} | {t_sk / t_ours:.1f}x | {diff:.1e} |")
    print("\n| voxels per frame | ours sort-merge join (ms) | pairwise broadcast (ms) | ratio |")
    print("|---|---|---|---|")
    for n in args.join:
        grid = rng.choice(1000 * 1000 * 64, size=int(n * 1.5), replace=False)
        vox = np.stack([grid % 1000, grid // 1000 % 1000, grid // 1_000_000], 1)
        gt, pred = vox[:n], vox[n // 2: n // 2 + n]
        labels, scores = rng.integers(0, 2, n), rng.random(n)
        t_ours, (a, b, _) = timed(lambda: match_voxels(pred, scores, gt, labels))
        if n <= 20_000:
            t_pair, (c, d) = timed(lambda: pairwise_match(pred, scores, gt, labels))
            assert np.array_equal(a, c) and np.array_equal(b, d)
            pair = f"{t_pair * 1e3:.0f}"
            ratio = f"{t_pair / t_ours:.0f}x"
        else:   # 50k x 50k x 3 booleans = 7.5 GB: the pairwise match does not fit; extrapolate quadratically
            pair, ratio = "(7.5 GB, not run)", "-"
        print(f"| {n:,} | {t_ours * 1e3:.1f} | {pair} | {ratio} |")
    print("\n| STU point level | ours PointEvaluator (s) | STU compute_point_level_ood (s) | ratio | max abs difference |")
    print("|---|---|---|---|---|")
    frames = []
    for _ in range(args.stu_frames):
        pts = rng.normal(0, 20, (120_000, 3)).astype(np.float32)
        sem = rng.choice([0, 40, 48, 70, 2], size=120_000, p=[0.05, 0.5, 0.2, 0.245, 0.005])
        scores = np.clip(rng.normal(0.3 + 0.3 * (sem == 2), 0.2), 0, 1).astype(np.float32)
        frames.append((pts, sem, scores))
    t_ours, a = timed(lambda: stu_ours(frames))
    t_off, b = timed(lambda: stu_official(frames))
    print(f"| {args.stu_frames} frames x 120k points | {t_ours:.2f} | {t_off:.2f} | {t_off / t_ours:.1f}x | "
          f"{max(abs(x - y) for x, y in zip(a, b)):.1e} |")


if __name__ == "__main__":
    main()
