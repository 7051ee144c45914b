import math

import numpy as np
import pytest
import torch

import cuda_ops
from cuda_ops import reference

BACKENDS = ["cpu", "cuda", "torch"]     # 'cuda' runs numba.cuda kernels (simulator in CI)
GRID = (16, 12, 8)
CYL_RANGE = (0.0, -math.pi, -4.0, 20.0, math.pi, 2.0)
CART_RANGE = (-10.0, -10.0, -4.0, 10.0, 10.0, 2.0)


def cases():
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(500, 4, generator=g, dtype=torch.float64) * 8
    edges = torch.tensor([[0.0, 0.0, 0.0, 0], [20.0, 0.0, 2.0, 0], [-10.0, -10.0, -4.0, 0], [10.0, 0.0, 0.0, 0],
                          [-1.0, 0.0, 0.0, 0], [-1.0, -1e-12, 0.0, 0], [1.25, 2.5, 0.75, 0]], dtype=torch.float64)
    far = torch.tensor([[1000.0, 5.0, 50.0, 0], [-3.0, 2.0, -40.0, 0]], dtype=torch.float64)
    same = torch.full((40, 4), 0.3, dtype=torch.float64)
    return {"empty": torch.zeros(0, 4, dtype=torch.float64), "single": rand[:1], "random": rand, "edges": edges,
            "out_of_range": torch.cat([rand[:50], far]), "one_voxel": same, "float32": rand.float()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode,pc_range", [("cylindrical", CYL_RANGE), ("cartesian", CART_RANGE)])
@pytest.mark.parametrize("out_of_range", ["clamp", "drop"])
def test_voxelize_backends_equal_reference(backend, mode, pc_range, out_of_range):
    for name, pts in cases().items():
        batch = torch.arange(len(pts)) % 2
        ref = reference.voxelize_ref(pts, batch, mode, GRID, pc_range, out_of_range)
        got = cuda_ops.voxelize(pts, batch, mode, GRID, pc_range, out_of_range, backend=backend)
        for a, b in zip(ref, got):
            assert torch.equal(a.to(b.dtype), b), (name, backend)
        if len(pts):
            assert got.counts.sum() == (got.point2voxel >= 0).sum()
        keys = got.coords.long()
        lin = ((keys[:, 0] * GRID[0] + keys[:, 1]) * GRID[1] + keys[:, 2]) * GRID[2] + keys[:, 3]
        assert torch.all(lin[1:] > lin[:-1]), "deterministic sorted order"


def test_voxelize_semantics_by_hand():
    pts = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1e-9, 0.0], [-1.0, -1e-9, 0.0], [25.0, 0.0, 0.0]])
    r = cuda_ops.voxelize(pts, None, "cylindrical", (10, 4, 1), (0.0, -math.pi, -1.0, 20.0, math.pi, 1.0), "drop")
    assert r.point2voxel[3] == -1                       # rho 25 > 20 dropped
    phi_bins = r.coords[r.point2voxel[:3], 2].tolist()
    assert phi_bins == [2, 3, 0]                        # phi just below +pi wraps to the last bin, -pi to the first
    clamp = cuda_ops.voxelize(pts, None, "cylindrical", (10, 4, 1), (0.0, -math.pi, -1.0, 20.0, math.pi, 1.0))
    assert clamp.coords[clamp.point2voxel[3], 1] == 9   # clamped into the border bin


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_rows_are_rejected(backend):
    pts = torch.zeros(5, 4)
    pts[2, 1] = float("nan")
    with pytest.raises(ValueError, match="1 rows with NaN"):
        cuda_ops.voxelize(pts, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["majority", "any_anomaly"])
def test_label_vote_equals_reference(backend, rule):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (300,), generator=g)
    labels[torch.randint(0, 300, (60,), generator=g)] = 255
    p2v = torch.randint(-1, 40, (300,), generator=g)
    ref = reference.label_vote_ref(labels, p2v, 45, 2, 255, rule)
    got = cuda_ops.label_vote(labels, p2v, 45, 2, 255, rule, backend=backend)
    assert torch.equal(ref, got.to(ref.dtype))
    assert (got[40:] == 255).all()                      # voxels without points are ignored
    # by hand: 2 normal + 1 anomaly -> 0 by majority, 1 by any_anomaly; tie -> smallest id
    hand = cuda_ops.label_vote(torch.tensor([0, 0, 1, 1, 0, 255]), torch.tensor([0, 0, 0, 1, 1, 2]), 3, 2, 255,
                               rule, backend=backend)
    assert hand.tolist() == ([0, 0, 255] if rule == "majority" else [1, 1, 255])


@pytest.mark.parametrize("rule", ["nearest", "mean", "median", "max"])
def test_eval_grid_scores_cpu_equals_reference(rule):
    g = torch.Generator().manual_seed(2)
    pts = torch.randn(2000, 3, generator=g, dtype=torch.float64) * 3
    pts = torch.cat([pts, torch.tensor([[300.0, 0, 0]], dtype=torch.float64)])     # outside the grid
    scores = torch.rand(len(pts), generator=g, dtype=torch.float64)
    scores[::7] = 0.5                                   # ties
    v_ref, s_ref = reference.eval_grid_scores_ref(pts, scores, rule)
    v_cpu, s_cpu = cuda_ops.eval_grid_scores(pts, scores, rule, backend="cpu")
    assert torch.equal(v_ref, v_cpu) and torch.allclose(s_ref, s_cpu, atol=0, rtol=1e-15)
    key = v_cpu[:, 0] + 1000 * v_cpu[:, 1] + 1_000_000 * v_cpu[:, 2]
    assert torch.all(key[1:] > key[:-1])


def test_eval_grid_nearest_rule_by_hand():
    pts = torch.tensor([[0.3, 0.3, 1.8 + 0.3], [0.1, 0.1, 1.8 + 0.1], [0.4, 0.4, 1.8 + 0.4]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.2, 0.7], dtype=torch.float64)
    for rule, expect in [("nearest", 0.2), ("mean", 0.6), ("median", 0.7), ("max", 0.9)]:
        vox, s = cuda_ops.eval_grid_scores(pts, scores, rule)
        assert vox.tolist() == [[500, 500, 32]] and s.item() == pytest.approx(expect)


def test_scatter_max_forward_backward_matches_torch():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(400, 6, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 50, (400,), generator=g)
    out = cuda_ops.scatter_max(feats, index, 60)
    ref_feats = feats.detach().clone().requires_grad_(True)
    ref = torch.zeros(60, 6, dtype=torch.float64).scatter_reduce(0, index[:, None].expand(-1, 6), ref_feats,
                                                                  "amax", include_self=False)
    assert torch.equal(out, ref)
    grad = torch.randn(60, 6, generator=g, dtype=torch.float64)
    out.backward(grad)
    ref.backward(grad)
    assert torch.allclose(feats.grad, ref_feats.grad)   # no ties in random floats: identical gradients
    assert torch.autograd.gradcheck(lambda f: cuda_ops.scatter_max(f, index[:40] % 10, 10), (feats[:40].detach()
                                    .clone().requires_grad_(True),))
    with pytest.raises(ValueError, match="index 49 out of range for 10 outputs"):
        cuda_ops.scatter_max(feats, index, 10)


def test_scatter_mean_and_ignored_points():
    feats = torch.tensor([[1.0], [3.0], [10.0]], requires_grad=True)
    out = cuda_ops.scatter_mean(feats, torch.tensor([0, 0, -1]), 2)
    assert out.tolist() == [[2.0], [0.0]]
    out.sum().backward()
    assert feats.grad.tolist() == [[0.5], [0.5], [0.0]]


def test_projection_validity_and_undoing_augmentation():
    K = torch.tensor([[384.0, 0, 384], [0, 384, 256], [0, 0, 1]])
    l2c = torch.tensor([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    pts = torch.tensor([[10.0, 0, 0], [-10.0, 0, 0], [10.0, 50.0, 0], [10.0, 2.0, -1.0]])
    uv, depth, valid = cuda_ops.project_to_image(pts, K, l2c, (512, 768))
    assert valid.tolist() == [True, False, False, True]            # behind the camera; outside the image
    assert torch.allclose(uv[0], torch.tensor([384.0, 256.0]))
    assert torch.allclose(uv[3], torch.tensor([384 - 384 * 0.2, 256 + 384 * 0.1]))
    aug = torch.eye(4, dtype=torch.float64)
    aug[1, 1] = -1
    aug[:3, 3] = torch.tensor([1.0, 2.0, 0.0])
    moved = pts.double() @ aug[:3, :3].T + aug[:3, 3]
    uv2, _, valid2 = cuda_ops.project_to_image(moved, K, l2c, (512, 768), aug)
    assert torch.equal(valid, valid2) and torch.allclose(uv[valid].double(), uv2[valid].double(), atol=1e-4)
