import copy

import numpy as np
import pytest
import torch
from easydict import EasyDict

import cuda_ops
from pcdet_anomaly.models import build_network
from pcdet_anomaly.models.tta import TestTimeAugmentation, views_from_cfg

from test_model import anomaly_batch  # noqa: F401  (the fixture)


def _tta_cfg(**kw):
    cfg = {"ENABLED": True, "FLIP_Y": [False, True], "ROTATIONS": [0.0], "SCALES": [1.0], "REDUCE": "mean"}
    cfg.update(kw)
    return EasyDict(cfg)


def test_views_identity_first_deduplicated_and_checked():
    views = views_from_cfg(_tta_cfg(ROTATIONS=[0.0, 0.3], SCALES=[1.0, 1.1]))
    assert len(views) == 8 and np.allclose(views[0], np.eye(4))
    assert len({tuple(np.round(v, 9).ravel()) for v in views}) == 8
    p = np.array([2.0, 1.0, 0.5, 1.0])
    flip = [v for v in views if np.allclose(v @ p, [2.0, -1.0, 0.5, 1.0])]
    assert len(flip) == 1
    c, s = np.cos(0.3), np.sin(0.3)        # scale @ rotate @ flip, as the training augmentation composes them
    assert any(np.allclose(v @ p, [1.1 * (2 * c + s), 1.1 * (2 * s - c), 0.55, 1.0]) for v in views)
    assert len(views_from_cfg(_tta_cfg(FLIP_Y=[False]))) == 1          # identity alone: no duplicate view
    with pytest.raises(ValueError, match="SCALES"):
        views_from_cfg(_tta_cfg(SCALES=[0.0]))
    with pytest.raises(ValueError, match="ROTATIONS"):
        views_from_cfg(_tta_cfg(ROTATIONS=[]))


class _Recorder(torch.nn.Module):
    """Scores every point by its y in the view it is given, plus its index; keeps the batches it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, batch):
        self.seen.append(batch)
        out = dict(batch)
        n = len(batch["points"])
        out["point_scores"] = batch["points"][:, 2] + torch.arange(n, dtype=torch.float32)
        p2v = batch["point2voxel"]
        out["voxel_scores"] = torch.zeros(len(batch["voxel_coords"])).scatter_reduce(
            0, p2v[p2v >= 0], out["point_scores"][p2v >= 0], "mean", include_self=False)
        return out


def test_tta_moves_points_revoxelizes_and_averages_in_point_order(anomaly_batch):   # noqa: F811
    cfg, _, batch = anomaly_batch
    before = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
    rec = _Recorder()
    out = TestTimeAugmentation(rec, views_from_cfg(_tta_cfg()), cfg.DATA_CONFIG.VOXELIZE)(batch)
    assert len(rec.seen) == 2
    plain, flipped = rec.seen
    assert torch.equal(plain["points"], batch["points"]) and torch.equal(plain["voxel_coords"], batch["voxel_coords"])
    assert torch.allclose(flipped["points"][:, 2], -batch["points"][:, 2])
    assert torch.equal(flipped["points"][:, [0, 1, 3, 4]], batch["points"][:, [0, 1, 3, 4]])
    v = cfg.DATA_CONFIG.VOXELIZE
    ref = cuda_ops.voxelize(flipped["points"][:, 1:], flipped["points"][:, 0].long(), v.TYPE, v.GRID_SIZE, v.RANGE,
                            v.OUT_OF_RANGE)
    assert torch.equal(flipped["voxel_coords"], ref.coords) and torch.equal(flipped["point2voxel"], ref.point2voxel)
    assert not torch.equal(flipped["voxel_coords"], batch["voxel_coords"])     # the mirror lands in other phi bins
    flip = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64))
    assert all(torch.equal(m, flip) for m in flipped["aug_matrix"])            # the fusion undoes the view
    assert "voxel_labels" not in flipped                                      # labels of another grid: not passed
    n = len(batch["points"])
    # y and -y cancel: the mean is the point's index, so the views were reduced point by point, in order
    assert torch.allclose(out["point_scores"], torch.arange(n, dtype=torch.float32), atol=1e-4)
    assert torch.equal(out["points"], batch["points"]) and torch.equal(out["aug_matrix"], batch["aug_matrix"])
    p2v = batch["point2voxel"]
    expect = torch.zeros(len(batch["voxel_coords"])).scatter_reduce(0, p2v[p2v >= 0], torch.arange(
        n, dtype=torch.float32)[p2v >= 0], "mean", include_self=False)
    assert torch.allclose(out["voxel_scores"].float(), expect, atol=1e-3)
    for k, val in before.items():                                              # the caller's batch is untouched
        assert torch.equal(batch[k], val), k
    rec.seen.clear()
    out = TestTimeAugmentation(rec, views_from_cfg(_tta_cfg()), v, reduce="max")(batch)
    assert torch.allclose(out["point_scores"], torch.arange(n, dtype=torch.float32) + batch["points"][:, 2].abs(),
                          atol=1e-4)
    with pytest.raises(ValueError, match="REDUCE"):
        TestTimeAugmentation(rec, views_from_cfg(_tta_cfg()), v, reduce="median")


def test_tta_on_the_fusion_model_identity_views_reproduce_and_a_mirror_is_close(anomaly_batch):   # noqa: F811
    cfg, _, batch = anomaly_batch
    cfg = copy.deepcopy(cfg)
    torch.manual_seed(0)
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG).eval()
    with torch.no_grad():
        plain = net(dict(batch))["point_scores"].clone()
    twice = TestTimeAugmentation(net, [np.eye(4), np.eye(4)], cfg.DATA_CONFIG.VOXELIZE)(batch)
    assert torch.allclose(twice["point_scores"], plain, atol=1e-6)
    both = TestTimeAugmentation(net, views_from_cfg(_tta_cfg()), cfg.DATA_CONFIG.VOXELIZE)(batch)
    assert both["tta_views"] == 2 and both["point_scores"].shape == plain.shape
    assert torch.isfinite(both["point_scores"]).all() and not torch.allclose(both["point_scores"], plain)
    assert ((both["point_scores"] >= 0) & (both["point_scores"] <= 1)).all()
