"""Exact binary ranking metrics (ties grouped), AnoVox-compatible threshold metrics, and a streaming histogram.

Conventions (report these with the numbers):
  AUROC  trapezoid area under the ROC curve (= sklearn roc_auc_score)
  AP     step-wise average precision, ties grouped (= sklearn average_precision_score), not a trapezoid "AUPR"
  FPR95  FPR at the first threshold (descending) whose TPR >= 0.95, exact over all distinct scores
AnoVox protocol extras (`anovox_threshold_metrics`): FPR95 from the official 101-threshold sweep
np.arange(1, -0.01, -0.01) with preds = score > t (first TPR >= 0.95), and F1 / precision averaged over
np.arange(0.25, 0.75, 0.05); the thresholds are the official float values, unrounded, so tied scores fall on the same
side as in the official script. AUROC and AP follow scikit-learn's arithmetic (bit-equal to the official script).
Counts are int64, rates float64. A pool with a single class gives NaN (undefined) for AUROC/AP/FPR95.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["binary_clf_curve", "ranking_metrics", "anovox_threshold_metrics", "StreamingHistogram"]


def binary_clf_curve(labels: np.ndarray, scores: np.ndarray):
    """-> (fps, tps, thresholds): cumulative counts at each distinct score, scores descending."""
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(scores, kind="quicksort")[::-1]      # ties are grouped below, so stability is irrelevant
    s = scores[order]
    y = labels[order].astype(np.int64)
    distinct = np.flatnonzero(s[1:] != s[:-1])
    ends = np.r_[distinct, len(s) - 1]
    tps = np.cumsum(y, dtype=np.int64)[ends]
    fps = (ends + 1).astype(np.int64) - tps
    return fps, tps, s[ends]


@dataclass
class RankingMetrics:
    auroc: float
    ap: float
    fpr95: float
    num_pos: int
    num_neg: int

    def as_dict(self) -> dict:
        return {"auroc": self.auroc, "ap": self.ap, "fpr95": self.fpr95, "num_pos": self.num_pos,
                "num_neg": self.num_neg}


def _metrics_from_curve(fps: np.ndarray, tps: np.ndarray) -> RankingMetrics:
    """Metrics from cumulative counts at each distinct score (descending).

    The floating-point arithmetic follows scikit-learn's `roc_curve(drop_intermediate=True)` + `auc` and
    `average_precision_score` step by step (same points, same order of summation), so AUROC and AP are bit-equal to
    the official AnoVox script, which calls those functions (tests/test_protocol.py checks this on tied scores).
    """
    num_pos = int(tps[-1]) if len(tps) else 0
    num_neg = int(fps[-1]) if len(fps) else 0
    if num_pos == 0 or num_neg == 0:
        return RankingMetrics(math.nan, math.nan, math.nan, num_pos, num_neg)
    f, t = fps, tps
    if len(f) > 2:      # roc_curve drops collinear points before the trapezoid sum
        keep = np.r_[True, (np.diff(f, 2) != 0) | (np.diff(t, 2) != 0), True]
        f, t = f[keep], t[keep]
    fpr_r = np.r_[0.0, f.astype(np.float64)] / float(num_neg)
    tpr_r = np.r_[0.0, t.astype(np.float64)] / float(num_pos)
    auroc = float(_trapezoid(tpr_r, fpr_r))
    tps_f, fps_f = tps.astype(np.float64), fps.astype(np.float64)
    precision = tps_f / (tps_f + fps_f)
    recall = tps_f / tps_f[-1]
    prec_rev = np.r_[precision[::-1], 1.0]
    rec_rev = np.r_[recall[::-1], 0.0]
    ap = float(max(0.0, -np.sum(np.diff(rec_rev) * prec_rev[:-1])))
    tpr = tps_f / num_pos
    first = int(np.searchsorted(tpr, 0.95, side="left"))
    fpr95 = float(fps_f[min(first, len(fps) - 1)] / num_neg)
    return RankingMetrics(auroc, ap, fpr95, num_pos, num_neg)


def _trapezoid(y, x):
    d = np.diff(x)
    return (d * (y[1:] + y[:-1]) / 2.0).sum()


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> RankingMetrics:
    """AUROC, AP and FPR95 of binary `labels` (1 = anomaly) against `scores` (higher = more anomalous)."""
    labels = np.asarray(labels)
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if len(labels) == 0:
        return RankingMetrics(math.nan, math.nan, math.nan, 0, 0)
    fps, tps, _ = binary_clf_curve(labels, scores)
    return _metrics_from_curve(fps, tps)


# The official script's threshold grids, as it builds them (np.arange, not rounded: 0.41000000000000014 and
# -8.9e-16 are among them, and a score that sits on 0.41 is not above that threshold).
ANOVOX_FPR_THRESHOLDS = np.arange(1, -0.01, -0.01)
ANOVOX_F1_THRESHOLDS = np.arange(start=0.25, stop=0.75, step=0.05)


def anovox_threshold_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """The official AnoVox `compute_metrics` threshold numbers, bit-equal on ties (preds = score > t):

    fpr95_anovox   FPR at the first threshold of 1.00, 0.99, ..., 0.00 (np.arange(1, -0.01, -0.01)) with TPR >= 0.95
    f1_mean        mean F1 over np.arange(0.25, 0.75, 0.05), F1 = 2 tp / (2 tp + fn + fp), 0 when undefined
    precision_mean mean precision over the same thresholds, 0 when nothing is predicted positive
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    num_pos, num_neg = int(labels.sum()), int((~labels).sum())
    if num_pos == 0 or num_neg == 0:
        return {"fpr95_anovox": math.nan, "f1_mean": math.nan, "precision_mean": math.nan}
    pos_sorted = np.sort(scores[labels])
    neg_sorted = np.sort(scores[~labels])

    def counts_above(t):
        tp = num_pos - int(np.searchsorted(pos_sorted, t, side="right"))
        fp = num_neg - int(np.searchsorted(neg_sorted, t, side="right"))
        return tp, fp

    fpr95 = math.nan
    for t in ANOVOX_FPR_THRESHOLDS:
        tp, fp = counts_above(t)
        if tp / num_pos >= 0.95:
            fpr95 = fp / num_neg
            break
    f1s, precisions = [], []
    for t in ANOVOX_F1_THRESHOLDS:
        tp, fp = counts_above(t)
        fn = num_pos - tp
        precisions.append(tp / (tp + fp) if tp + fp else 0)
        denom = 1.0 * float(tp + fn) + float(tp + fp)
        f1s.append(2.0 * float(tp) / denom if denom else 0.0)
    return {"fpr95_anovox": float(fpr95), "f1_mean": float(np.mean(f1s)),
            "precision_mean": float(np.mean(precisions))}


class StreamingHistogram:
    """Approximate metrics for data that does not fit in memory: per-class score histograms over [lo, hi].

    Scores within one bin are treated as ties. The AUROC error is at most sum_b pos_b * neg_b / (2 P N)
    (`auroc_error_bound`), since only pairs that share a bin can be ordered wrongly.
    """

    def __init__(self, bins: int = 100_000, lo: float = 0.0, hi: float = 1.0):
        self.bins, self.lo, self.hi = bins, lo, hi
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)

    def update(self, labels: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN")
        idx = np.clip(((scores - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64), 0, self.bins - 1)
        labels = np.asarray(labels).astype(bool)
        self.pos += np.bincount(idx[labels], minlength=self.bins)
        self.neg += np.bincount(idx[~labels], minlength=self.bins)

    def metrics(self) -> dict:
        keep = (self.pos + self.neg) > 0
        pos, neg = self.pos[keep][::-1], self.neg[keep][::-1]    # descending scores
        tps, fps = np.cumsum(pos), np.cumsum(neg)
        out = _metrics_from_curve(fps, tps).as_dict() if len(tps) else {"auroc": math.nan}
        total = float(self.pos.sum()) * float(self.neg.sum())
        out["auroc_error_bound"] = float((pos * neg).sum() / (2 * total)) if total else math.nan
        return out
