"""Losses: the Lovasz extension equals the Jaccard loss on hard predictions; the focal loss down-weights easy voxels."""
import numpy as np
import pytest
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


def test_hard_negative_mask_keeps_positives_and_the_highest_logit_negatives():
    from pcdet_anomaly.models.heads.losses import hard_negative_mask
    logits = torch.tensor([0.1, 5.0, -3.0, 2.0, -1.0, 0.5, -9.0, 4.0])
    targets = torch.tensor([1, 0, 1, 0, 0, 0, 0, 0])
    keep = hard_negative_mask(logits, targets, fraction=0.5, min_negatives=0)   # 6 negatives -> 3 hardest
    assert keep.tolist() == [True, True, True, True, False, False, False, True]
    # a negative's focal loss grows with its logit, so the kept ones are the highest-loss negatives
    per_voxel = [float(binary_focal_loss(l[None], torch.tensor([0.0]), torch.tensor(1.0))) for l in logits]
    neg_losses = sorted((per_voxel[i] for i in range(8) if targets[i] == 0), reverse=True)
    assert min(per_voxel[i] for i in range(8) if keep[i] and targets[i] == 0) == neg_losses[2]
    # the minimum wins over the fraction, never more than exist; fraction 1 keeps everything
    assert int(hard_negative_mask(logits, targets, 0.01, min_negatives=4).sum()) == 2 + 4
    assert int(hard_negative_mask(logits, targets, 0.01, min_negatives=100).sum()) == 8
    assert bool(hard_negative_mask(logits, targets, 1.0).all())
    with pytest.raises(ValueError, match="HARD_NEGATIVE_FRACTION"):
        hard_negative_mask(logits, targets, 0.0)


def test_head_loss_with_hard_negative_mining_equals_the_loss_on_the_mined_voxels():
    from pcdet_anomaly.config import load_config
    from pcdet_anomaly.models.heads.anomaly_head import VoxelAnomalyHead
    from pcdet_anomaly.utils.common_utils import ROOT_DIR
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3000, generator=g)
    labels = (torch.rand(3000, generator=g) < 0.01).long()
    labels[:50] = 255                                          # ignored voxels never enter the mining
    batch = {"voxel_logits": logits, "voxel_labels": labels, "voxel_features": torch.zeros(3000, 4)}
    loss_cfg = cfg.MODEL.LOSS
    loss_cfg.HARD_NEGATIVE_FRACTION, loss_cfg.HARD_NEGATIVE_MIN = 0.1, 0
    head = VoxelAnomalyHead(cfg.MODEL.HEAD, loss_cfg, "supervised", in_channels=4)
    mined, tb = head.get_loss(batch)
    valid = labels != 255
    lg, tg = logits[valid], labels[valid]
    neg = lg[tg == 0]
    cut = torch.sort(neg, descending=True).values[int(np.ceil(0.1 * len(neg))) - 1]
    sel = (tg == 1) | (lg >= cut)
    expected = binary_focal_loss(lg[sel], tg[sel], balanced_pos_weight(tg[sel], -1.0), 2.0)
    assert torch.allclose(mined, expected) and abs(tb["pos_fraction"] - float(tg.float().mean())) < 1e-9
    loss_cfg.HARD_NEGATIVE_FRACTION = 1.0
    full, _ = head.get_loss(batch)
    assert not torch.allclose(full, mined)


def test_negative_class_weights_balance_the_classes_of_the_negatives():
    from pcdet_anomaly.models.heads.losses import negative_class_weights
    targets = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    groups = torch.tensor([255, 1, 1, 1, 1, 1, 1, 1, 1, 7])   # 8 road voxels, 1 car voxel, 1 anomaly (ignored)
    w = negative_class_weights(targets, groups, 1.0)
    assert w[0] == 1.0                                         # positives untouched
    assert torch.isclose(w[1:].mean(), torch.tensor(1.0))      # negatives' total weight unchanged
    assert torch.isclose(w[1:9].sum(), w[9])                   # power 1: each class the same total weight
    half = negative_class_weights(targets, groups, 0.5)
    assert torch.isclose(half[9] / half[1], torch.tensor(8 ** 0.5))
    assert torch.equal(negative_class_weights(targets, groups, 0.0), torch.ones(10))


def test_head_loss_with_negative_class_balance_equals_the_weighted_loss():
    from pcdet_anomaly.config import load_config
    from pcdet_anomaly.models.heads.anomaly_head import VoxelAnomalyHead
    from pcdet_anomaly.models.heads.losses import negative_class_weights
    from pcdet_anomaly.utils.common_utils import ROOT_DIR
    # the anomaly loss alone: no auxiliary semantic head (the config's default has one; its loss is tested apart)
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml", ["MODEL.HEAD.NUM_SEMANTIC_CLASSES", "0"])
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2000, generator=g)
    labels = (torch.rand(2000, generator=g) < 0.02).long()
    labels[:20] = 255
    sem = torch.where(torch.rand(2000, generator=g) < 0.05, 3, 0)
    batch = {"voxel_logits": logits, "voxel_labels": labels, "voxel_features": torch.zeros(2000, 4)}
    loss_cfg = cfg.MODEL.LOSS
    loss_cfg.NEGATIVE_CLASS_POWER = 0.5
    head = VoxelAnomalyHead(cfg.MODEL.HEAD, loss_cfg, "supervised", in_channels=4)
    with pytest.raises(ValueError, match="LABELS.SEMANTIC_CLASSES"):
        head.get_loss(batch)
    batch["voxel_semantic"] = sem
    weighted, _ = head.get_loss(batch)
    valid = labels != 255
    lg, tg = logits[valid], labels[valid]
    w = negative_class_weights(tg, sem[valid], 0.5)
    expected = binary_focal_loss(lg, tg, balanced_pos_weight(tg, -1.0), 2.0, w)
    assert torch.allclose(weighted, expected)
    assert w[(tg == 0) & (sem[valid] == 3)].min() > 3 * w[(tg == 0) & (sem[valid] == 0)].max()
    loss_cfg.NEGATIVE_CLASS_POWER = 0.0
    assert not torch.allclose(head.get_loss(batch)[0], weighted)
