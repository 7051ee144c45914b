"""Exact binary ranking metrics (ties grouped), AnoVox-compatible threshold metrics, and a streaming histogram.

Conventions (report these with the numbers):
  AUROC  trapezoid area under the ROC curve (= sklearn roc_auc_score)
  AP     step-wise average precision, ties grouped (= sklearn average_precision_score), not a trapezoid "AUPR"
  FPR95  FPR at the first threshold (descending) whose TPR >= 0.95, exact over all distinct scores
AnoVox protocol extras: FPR95 from the 101-threshold sweep 1.00, 0.99, ..., 0.00 with preds = score > t (first TPR
>= 0.95), and F1 / precision averaged over thresholds 0.25, 0.30, ..., 0.70.
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
    num_pos = int(tps[-1]) if len(tps) else 0
    num_neg = int(fps[-1]) if len(fps) else 0
    if num_pos == 0 or num_neg == 0:
        return RankingMetrics(math.nan, math.nan, math.nan, num_pos, num_neg)
    tpr = np.r_[0.0, tps / num_pos]
    fpr = np.r_[0.0, fps / num_neg]
    auroc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    precision = tps / (tps + fps)
    recall = tps / num_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    first = int(np.searchsorted(tpr[1:], 0.95, side="left"))
    fpr95 = float(fpr[1:][min(first, len(fps) - 1)])
    return RankingMetrics(auroc, ap, fpr95, num_pos, num_neg)


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> RankingMetrics:
    """AUROC, AP and FPR95 of binary `labels` (1 = anomaly) against `scores` (higher = more anomalous)."""
    labels = np.asarray(labels)
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if len(labels) == 0:
        return RankingMetrics(math.nan, math.nan, math.nan, 0, 0)
    fps, tps, _ = binary_clf_curve(labels, scores)
    return _metrics_from_curve(fps, tps)


def anovox_threshold_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """The official AnoVox script's threshold metrics (see module docstring)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    num_pos, num_neg = int(labels.sum()), int((~labels).sum())
    if num_pos == 0 or num_neg == 0:
        return {"fpr95_anovox": math.nan, "f1_mean": math.nan, "precision_mean": math.nan}
    pos_sorted = np.sort(scores[labels])
    neg_sorted = np.sort(scores[~labels])

    def counts_above(t):
        tp = num_pos - np.searchsorted(pos_sorted, t, side="right")
        fp = num_neg - np.searchsorted(neg_sorted, t, side="right")
        return tp, fp

    fpr95 = math.nan
    for t in np.round(np.arange(100, -1, -1) / 100.0, 2):
        tp, fp = counts_above(t)
        if tp / num_pos >= 0.95:
            fpr95 = fp / num_neg
            break
    f1s, precisions = [], []
    for t in np.round(np.arange(25, 71, 5) / 100.0, 2):
        tp, fp = counts_above(t)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / num_pos
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        precisions.append(precision)
    return {"fpr95_anovox": float(fpr95), "f1_mean": float(np.mean(f1s)), "precision_mean": float(np.mean(precisions))}


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
