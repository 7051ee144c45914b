"""Losses: the Lovasz extension equals the Jaccard loss on hard predictions; the focal loss down-weights easy voxels."""
import numpy as np
import torch

from pcdet_anomaly.models.heads.losses import balanced_pos_weight, binary_focal_loss, lovasz_hinge, lovasz_softmax


def jaccard_loss(pred: np.ndarray, truth: np.ndarray, cls: int) -> float:
    p, t = pred == cls, truth == cls
    return 1.0 - (p & t).sum() / (p | t).sum()


def test_lovasz_softmax_equals_mean_jaccard_loss_on_hard_predictions():
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth = rng.integers(0, 3, 200)
        pred = np.where(rng.random(200) < 0.7, truth, rng.integers(0, 3, 200))
        probs = torch.nn.functional.one_hot(torch.from_numpy(pred), 3).double()
        expected = np.mean([jaccard_loss(pred, truth, c) for c in np.unique(truth)])
        got = float(lovasz_softmax(probs, torch.from_numpy(truth)))
        assert abs(got - expected) < 1e-12, (got, expected)


def test_lovasz_hinge_zero_when_separated_with_margin_and_positive_otherwise():
    targets = torch.tensor([1, 0, 0, 1, 0, 0, 0])
    good = torch.where(targets == 1, 1.5, -1.5).double()
    assert float(lovasz_hinge(good, targets)) == 0.0
    bad = -good
    assert float(lovasz_hinge(bad, targets)) > 1.0
    # the loss orders voxels: moving one positive up lowers it
    mid = torch.zeros(7, dtype=torch.float64)
    better = mid.clone()
    better[0] = 2.0
    assert float(lovasz_hinge(better, targets)) < float(lovasz_hinge(mid, targets))


def test_focal_loss_downweights_easy_voxels_and_balanced_weight():
    targets = torch.tensor([1.0, 0.0])
    easy = torch.tensor([4.0, -4.0])
    hard = torch.tensor([-1.0, 1.0])
    one = torch.tensor(1.0)
    ratio_focal = binary_focal_loss(hard, targets, one, 2.0) / binary_focal_loss(easy, targets, one, 2.0)
    ratio_bce = binary_focal_loss(hard, targets, one, 0.0) / binary_focal_loss(easy, targets, one, 0.0)
    assert ratio_focal > 10 * ratio_bce
    t = torch.tensor([1, 0, 0, 0, 0])
    assert float(balanced_pos_weight(t, -1.0)) == 4.0
    assert float(balanced_pos_weight(torch.zeros(5, dtype=torch.long), -1.0)) == 1.0
    assert float(balanced_pos_weight(torch.tensor([1] + [0] * 999), -1.0)) == 50.0   # clamped
