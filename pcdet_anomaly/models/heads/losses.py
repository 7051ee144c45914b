"""Losses on sparse voxels only: class-balanced BCE / focal, Lovasz hinge (binary) and Lovasz softmax."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["balanced_pos_weight", "binary_focal_loss", "hard_negative_mask", "negative_class_weights", "lovasz_hinge",
           "lovasz_softmax"]


def balanced_pos_weight(targets: torch.Tensor, configured: float, max_weight: float = 50.0) -> torch.Tensor:
    """configured > 0: that weight; -1: negatives / positives of the batch, clamped to [1, max_weight]."""
    if configured > 0:
        return targets.new_tensor(float(configured), dtype=torch.float32)
    pos = targets.sum().float()
    neg = targets.numel() - pos
    return (neg / pos.clamp(min=1.0)).clamp(1.0, max_weight) if pos > 0 else targets.new_tensor(1.0).float()


def binary_focal_loss(logits, targets, pos_weight, gamma: float = 2.0, weight=None) -> torch.Tensor:
    """Mean over voxels of pos_weight-balanced BCE times (1 - p_t)^gamma (gamma 0: plain weighted BCE), each voxel
    times `weight` when given."""
    targets = targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    if gamma > 0:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        bce = bce * (1 - p_t).pow(gamma)
    if weight is not None:
        bce = bce * weight
    return bce.mean()


def negative_class_weights(targets: torch.Tensor, groups: torch.Tensor, power: float) -> torch.Tensor:
    """Per-voxel weights that balance the negatives over their semantic classes (`groups`, one id per voxel; the
    ignore id is a class of its own): a negative of a class with n voxels in the batch weighs n^-power, scaled so
    that the negatives' mean weight is 1 (their total weight against the positives is unchanged); positives weigh 1.
    power 0: every voxel 1; 1: every class of negatives the same total weight. Rare normal classes (cars, poles)
    are otherwise outweighed by road and buildings in the anomaly loss, though they are what anomalies are confused
    with (README: Results, third pass)."""
    w = torch.ones(len(targets), dtype=torch.float32, device=targets.device)
    neg = ~targets.bool()
    if power == 0 or not neg.any():
        return w
    _, inverse, counts = torch.unique(groups[neg], return_inverse=True, return_counts=True)
    wn = counts.float().pow(-float(power))[inverse]
    w[neg] = wn / wn.mean()
    return w


def hard_negative_mask(logits: torch.Tensor, targets: torch.Tensor, fraction: float, min_negatives: int = 0):
    """Hard-negative mining: a mask keeping every positive and the ceil(fraction * negatives) (at least
    `min_negatives`) negatives with the highest logits. A negative's BCE / focal loss grows monotonically with its
    logit, so these are the highest-loss negatives; ties at the cut are broken by position (torch.topk)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"MODEL.LOSS.HARD_NEGATIVE_FRACTION must be in (0, 1], got {fraction}")
    keep = targets.bool().clone()
    neg = torch.nonzero(~keep).squeeze(1)
    k = min(len(neg), max(math.ceil(fraction * len(neg)), int(min_negatives)))
    if k:
        hardest = torch.topk(logits.detach()[neg], k, sorted=False).indices
        keep[neg[hardest]] = True
    return keep


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors (Berman et al. 2018, Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(gt_sorted) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_hinge(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary Lovasz hinge over all voxels of the batch (flat). targets in {0, 1}."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    signs = 2.0 * targets.float() - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, descending=True)
    grad = _lovasz_grad(targets.to(errors_sorted.dtype)[perm])
    return torch.dot(F.relu(errors_sorted), grad)


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz softmax over the classes present in `labels`. probs [V, C], labels [V]."""
    losses = []
    for c in torch.unique(labels):
        fg = (labels == c).to(probs.dtype)
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm]).to(errors_sorted.dtype)))
    return torch.stack(losses).mean() if losses else probs.sum() * 0.0
