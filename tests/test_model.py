import copy
import logging

import pytest
import torch

from pcdet_anomaly.config import load_config
from pcdet_anomaly.datasets import build_dataset, collate_batch
from pcdet_anomaly.evaluation import ranking_metrics
from pcdet_anomaly.models import build_network
from pcdet_anomaly.utils.common_utils import ROOT_DIR


def tiny_cfg(root, mode="attention", **data):
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml")
    cfg.DATA_CONFIG.DATA_PATH = str(root)
    cfg.DATA_CONFIG.MAX_POINTS = data.get("max_points", 6000)
    cfg.DATA_CONFIG.VOXELIZE.GRID_SIZE = [60, 60, 8]
    cfg.DATA_CONFIG.IMAGE.SIZE = [64, 96]
    cfg.MODEL.BACKBONE_3D.INIT_SIZE = 4
    cfg.MODEL.FUSION.MODE = mode
    cfg.MODEL.FUSION.EMBED_DIM = 16
    cfg.MODEL.FUSION.FFN_DIM = 32
    return cfg


@pytest.fixture(scope="module")
def anomaly_batch(synth_root):
    root, _ = synth_root
    cfg = tiny_cfg(root)
    ds = build_dataset(cfg.DATA_CONFIG, "all", training=False)
    idx = [i for i, (n, f) in enumerate(ds.frames) if not ds.meta[n]["normality"]][:2]
    return cfg, ds, collate_batch([ds[i] for i in idx])


@pytest.mark.parametrize("mode", ["attention", "concat", "lidar_only", "image_only"])
def test_every_ablation_builds_runs_and_has_right_shapes(anomaly_batch, mode):
    cfg, _, batch = anomaly_batch
    cfg.MODEL.FUSION.MODE = mode
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG)
    out = net(dict(batch))
    V, N = len(batch["voxel_coords"]), len(batch["points"])
    assert out["voxel_logits"].shape == (V,) and out["voxel_scores"].dtype == torch.float32
    assert out["point_scores"].shape == (N,)
    assert torch.all((out["voxel_scores"] >= 0) & (out["voxel_scores"] <= 1))
    p2v = batch["point2voxel"]
    assert torch.equal(out["point_scores"], out["voxel_scores"][p2v])   # gathered through the inverse index
    assert ("image_backbone" in net.stages) == (mode != "lidar_only")
    assert ("backbone_3d" in net.stages) == (mode != "image_only")


@pytest.mark.parametrize("frozen", [True, False])
def test_gradients_reach_trainable_and_not_frozen(anomaly_batch, frozen):
    cfg, _, batch = anomaly_batch
    cfg = copy.deepcopy(cfg)
    cfg.MODEL.FUSION.MODE = "attention"
    cfg.MODEL.IMAGE_BACKBONE.FROZEN = frozen
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG)
    net.train()
    out = net(dict(batch))
    loss, tb = net.get_loss(out)
    loss.backward()
    assert tb["pos_fraction"] > 0
    for name, p in net.named_parameters():
        if name.startswith("image_backbone") and frozen:
            assert not p.requires_grad and p.grad is None, name
        elif name.startswith("image_backbone.fc") or name.startswith("image_backbone.layer4"):
            continue        # the classifier and the stride-32 stage feed no output
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient reached {name}"
    assert net.image_backbone.training is not frozen          # frozen BN stays in eval mode


def test_voxel_outside_the_image_gets_no_image_feature(anomaly_batch):
    cfg, _, batch = anomaly_batch
    cfg.MODEL.FUSION.MODE = "attention"
    torch.manual_seed(0)
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG).eval()
    a = net(dict(batch))
    inside = a["voxel_in_image"]
    assert inside.any() and (~inside).any()
    other = dict(batch)
    other["images"] = torch.randn_like(batch["images"]) * 3
    b = net(other)
    assert torch.equal(a["voxel_features"][~inside], b["voxel_features"][~inside])
    assert not torch.allclose(a["voxel_features"][inside], b["voxel_features"][inside])
    width = net.backbone_3d.out_channels
    assert (a["voxel_features"][~inside, width:] == 0).all()


def test_pretrained_weights_load_strictly_from_local_file(tmp_path, anomaly_batch):
    cfg, _, _ = anomaly_batch
    cfg.MODEL.FUSION.MODE = "attention"
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in net.image_backbone.state_dict().items()}
    torch.save(state, tmp_path / "resnet18.pth")
    cfg.MODEL.IMAGE_BACKBONE.PRETRAINED_PATH = str(tmp_path / "resnet18.pth")
    net2 = build_network(cfg.MODEL, cfg.DATA_CONFIG)
    assert net2.image_backbone.pretrained
    assert torch.equal(net2.image_backbone.conv1.weight, state["conv1.weight"])
    torch.save({"conv1.weight": state["conv1.weight"]}, tmp_path / "partial.pth")
    cfg.MODEL.IMAGE_BACKBONE.PRETRAINED_PATH = str(tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="not a torchvision resnet18 state dict"):
        build_network(cfg.MODEL, cfg.DATA_CONFIG)
    cfg.MODEL.IMAGE_BACKBONE.PRETRAINED_PATH = str(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="no download is tried"):
        build_network(cfg.MODEL, cfg.DATA_CONFIG)
    cfg.MODEL.IMAGE_BACKBONE.PRETRAINED_PATH = ""


def test_normality_regime_scores_from_semantic_head(anomaly_batch, synth_root):
    root, _ = synth_root
    cfg = load_config(ROOT_DIR / "cfgs/anovox/normality_cpu.yaml")
    small = tiny_cfg(root)
    cfg.DATA_CONFIG.DATA_PATH, cfg.DATA_CONFIG.MAX_POINTS = str(root), 4000
    cfg.DATA_CONFIG.VOXELIZE.GRID_SIZE, cfg.DATA_CONFIG.IMAGE.SIZE = [60, 60, 8], [64, 96]
    cfg.MODEL.BACKBONE_3D, cfg.MODEL.FUSION = small.MODEL.BACKBONE_3D, small.MODEL.FUSION
    ds = build_dataset(cfg.DATA_CONFIG, "all", training=False)
    batch = collate_batch([ds[0]])
    for kind in ("max_logit", "energy", "entropy"):
        cfg.MODEL.HEAD.NORMALITY_SCORE = kind
        net = build_network(cfg.MODEL, cfg.DATA_CONFIG)
        out = net(dict(batch))
        loss, tb = net.get_loss(out)
        assert "voxel_logits" not in out and out["voxel_semantic_logits"].shape[1] == 8
        assert "loss_semantic" in tb and torch.isfinite(loss)
        assert torch.all((out["voxel_scores"] >= 0) & (out["voxel_scores"] <= 1))


def test_overfits_a_single_frame(anomaly_batch):
    cfg, ds, _ = anomaly_batch
    cfg.MODEL.FUSION.MODE = "attention"
    torch.manual_seed(0)
    batch = collate_batch([ds[next(i for i, (n, f) in enumerate(ds.frames) if not ds.meta[n]["normality"])]])
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG).train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        out = net(dict(batch))
        loss, _ = net.get_loss(out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        out = net(dict(batch))
    labels = batch["voxel_labels"].numpy()
    keep = labels != 255
    auroc = ranking_metrics(labels[keep], out["voxel_scores"].numpy()[keep]).auroc
    assert min(losses[-5:]) < losses[0] / 10, (losses[0], losses[-5:])
    assert auroc > 0.99, auroc


def test_semantic_head_on_lidar_features_only(anomaly_batch):
    """MODEL.HEAD.SEMANTIC_INPUT lidar: the semantic logits read the LiDAR part of the fused features only, so the
    semantic loss sends no gradient into the image branch; the anomaly logit still reads both parts."""
    cfg, _, batch = anomaly_batch
    cfg = copy.deepcopy(cfg)
    cfg.MODEL.FUSION.MODE = "attention"
    cfg.MODEL.HEAD.SEMANTIC_INPUT = "lidar"
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG)
    c_lidar = net.backbone_3d.out_channels
    assert net.head.semantic_logits[0].in_features == c_lidar < net.head.anomaly_logit[0].in_features
    net.train()
    out = net(dict(batch))
    loss = torch.nn.functional.cross_entropy(out["voxel_semantic_logits"].float(),
                                             torch.zeros(len(out["voxel_semantic_logits"]), dtype=torch.long))
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is None or not g.abs().any() for n, g in grads.items() if n.startswith(("image_backbone", "fusion")))
    assert grads["backbone_3d." + next(n for n, _ in net.backbone_3d.named_parameters())] is not None
    # 'all' (the default) lets it reach the image branch
    cfg.MODEL.HEAD.SEMANTIC_INPUT = "all"
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG)
    assert net.head.semantic_logits[0].in_features == net.head.anomaly_logit[0].in_features
    out = net(dict(batch))
    out["voxel_semantic_logits"].float().logsumexp(1).mean().backward()
    assert any(p.grad is not None and p.grad.abs().any() for n, p in net.named_parameters() if n.startswith("fusion"))
    cfg.MODEL.FUSION.MODE, cfg.MODEL.HEAD.SEMANTIC_INPUT = "image_only", "lidar"
    with pytest.raises(ValueError, match="SEMANTIC_INPUT lidar needs LiDAR features"):
        build_network(cfg.MODEL, cfg.DATA_CONFIG)


def test_image_stream_is_camera_only_supervised_and_mixed(anomaly_batch):
    """MODEL.FUSION.IMAGE_STREAM: a camera-only voxel feature beside the attended one, with an anomaly logit of its
    own. Nothing of the LiDAR branch reaches that logit; the image branch does; its loss adds to the total at
    LOSS_WEIGHT; SCORE_MIX blends the two probabilities into the score every voxel and point reports."""
    cfg, _, batch = anomaly_batch
    cfg = copy.deepcopy(cfg)
    cfg.MODEL.FUSION.MODE = "attention"
    cfg.MODEL.FUSION.IMAGE_STREAM.ENABLED = True
    cfg.MODEL.FUSION.IMAGE_STREAM.SCORE_MIX = 0.5
    cfg.MODEL.FUSION.IMAGE_STREAM.SCORE_MIX_RANGE = []          # the same weight at every range
    torch.manual_seed(0)
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG).train()
    e = cfg.MODEL.FUSION.EMBED_DIM
    assert net.fusion.out_channels == net.backbone_3d.out_channels + 2 * e
    assert net.head.anomaly_logit[0].in_features == net.fusion.out_channels
    out = net(dict(batch))
    stream = out["voxel_stream_logits"]
    assert stream.shape == out["voxel_logits"].shape
    expected = 0.5 * torch.sigmoid(out["voxel_logits"].float()) + 0.5 * torch.sigmoid(stream.float())
    torch.testing.assert_close(out["voxel_scores"], expected)
    assert torch.equal(out["point_scores"], out["voxel_scores"][batch["point2voxel"]])
    stream.sum().backward(retain_graph=True)
    grads = {n: p.grad for n, p in net.named_parameters()}
    lidar_names = [n for n in grads if n.startswith(("vfe", "backbone_3d", "fusion.query_proj", "fusion.attention"))]
    assert lidar_names and all(grads[n] is None or not grads[n].abs().any() for n in lidar_names)
    assert any(g is not None and g.abs().any() for n, g in grads.items() if n.startswith("image_backbone"))
    # the stream's anomaly loss is added to the total at LOSS_WEIGHT
    net.zero_grad()
    total_1, tb = net.get_loss(out)
    net.head.stream_weight = 0.0
    total_0, _ = net.get_loss(out)
    assert tb["loss_stream_anomaly"] > 0
    assert abs(float((total_1 - total_0).detach()) - tb["loss_stream_anomaly"]) < 1e-5
    # ... and that term is the stream logit's loss: it trains the stream's logit, never the head's
    (total_1 - total_0).backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.abs().any() for p in net.head.anomaly_logit.parameters())
    assert any(p.grad is not None and p.grad.abs().any() for p in net.head.stream_logit.parameters())
    # SCORE_MIX 0: the head's score alone
    net.head.stream_score_mix = 0.0
    out = net(dict(batch))
    torch.testing.assert_close(out["voxel_scores"], torch.sigmoid(out["voxel_logits"].float()))
    # the ablations and the normality regime inherit the default: built without the stream, with a warning
    # (a handler of its own: the project's logger does not propagate once a run has configured it)
    logger, records = logging.getLogger("pcdet_anomaly"), []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        for mode, regime in (("image_only", "supervised"), ("lidar_only", "supervised"), ("attention", "normality")):
            cfg.MODEL.FUSION.MODE, cfg.MODEL.REGIME, cfg.MODEL.HEAD.NUM_SEMANTIC_CLASSES = mode, regime, 8
            records.clear()
            net = build_network(cfg.MODEL, cfg.DATA_CONFIG)
            assert any("built without it" in r.getMessage() for r in records), (mode, regime)
            assert net.head.stream_logit is None and getattr(getattr(net, "fusion", None), "stream", None) is None
            assert "voxel_stream_logits" not in net(dict(batch))
    finally:
        logger.removeHandler(handler)


def test_image_stream_lidar_dropout_trains_the_head_on_the_camera_alone():
    """IMAGE_STREAM.LIDAR_DROPOUT p: in training the anomaly logit of a random fraction p of the voxels reads only the
    stream's channels (no gradient reaches the LiDAR and attended channels there, and its value is the logit of the
    zeroed input); the semantic and stream logits read everything; evaluation drops nothing."""
    from pcdet_anomaly.models.heads import VoxelAnomalyHead
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml")
    cfg.MODEL.HEAD.NUM_SEMANTIC_CLASSES = 4
    s, c = 6, 20
    torch.manual_seed(0)
    head = VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "supervised", c, stream_channels=s,
                            stream_lidar_dropout=0.4).train()
    feats = torch.randn(2000, c, requires_grad=True)
    batch = {"voxel_features": feats, "point2voxel": torch.arange(2000)}
    logits = head(dict(batch))["voxel_logits"]
    logits.sum().backward()
    dropped = ~feats.grad[:, :-s].abs().any(1)
    assert 0.35 < dropped.float().mean() < 0.45
    assert feats.grad[:, -s:].abs().any(1).all()                       # the stream's channels always reach it
    zeroed = torch.cat([torch.zeros(2000, c - s), feats[:, -s:]], 1)
    torch.testing.assert_close(logits[dropped], head.anomaly_logit(zeroed[dropped]).squeeze(1))
    torch.testing.assert_close(logits[~dropped], head.anomaly_logit(feats[~dropped]).squeeze(1))
    # the semantic logits read the full features of every voxel, dropped ones included
    feats.grad = None
    head(dict(batch))["voxel_semantic_logits"].sum().backward()
    assert feats.grad[:, :-s].abs().any(1).all()
    # evaluation: no voxel dropped
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(dict(batch))["voxel_logits"], head.anomaly_logit(feats).squeeze(1))
    with pytest.raises(ValueError, match="needs IMAGE_STREAM.ENABLED"):
        VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "supervised", c, stream_lidar_dropout=0.4)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "supervised", c, stream_channels=s,
                         stream_lidar_dropout=1.0)


def test_image_stream_score_mix_range_fades_the_camera_with_distance(anomaly_batch):
    """IMAGE_STREAM.SCORE_MIX_RANGE [r0, r1]: the stream's weight in the score is SCORE_MIX within r0 of the sensor,
    falls linearly to 0 at r1, and is 0 beyond; the range is each voxel's xy distance from the sensor (its points'
    distances agree to half a radial cell)."""
    cfg, _, batch = anomaly_batch
    cfg = copy.deepcopy(cfg)
    cfg.MODEL.FUSION.MODE = "attention"
    cfg.MODEL.FUSION.IMAGE_STREAM.ENABLED = True
    cfg.MODEL.FUSION.IMAGE_STREAM.SCORE_MIX = 0.5
    cfg.MODEL.FUSION.IMAGE_STREAM.SCORE_MIX_RANGE = [10.0, 30.0]
    torch.manual_seed(0)
    net = build_network(cfg.MODEL, cfg.DATA_CONFIG).eval()
    with torch.no_grad():
        out = net(dict(batch))
    rng = out["voxel_range"]
    p2v, pts = batch["point2voxel"], batch["points"]
    lo, hi = cfg.DATA_CONFIG.VOXELIZE.RANGE[0], cfg.DATA_CONFIG.VOXELIZE.RANGE[3]
    step = (hi - lo) / cfg.DATA_CONFIG.VOXELIZE.GRID_SIZE[0]
    point_rng = pts[:, 1:3].norm(dim=1)
    inside = (p2v >= 0) & (point_rng < hi)
    assert inside.sum() > 1000
    assert (rng[p2v[inside]] - point_rng[inside]).abs().max() <= step / 2 + 1e-3
    head, stream = torch.sigmoid(out["voxel_logits"].float()), torch.sigmoid(out["voxel_stream_logits"].float())
    w = 0.5 * ((30.0 - rng) / 20.0).clamp(0, 1)
    torch.testing.assert_close(out["voxel_scores"], (1 - w) * head + w * stream)
    near, far, mid = rng < 10, rng > 30, (rng > 15) & (rng < 25)
    assert near.any() and far.any() and mid.any()
    torch.testing.assert_close(out["voxel_scores"][near], 0.5 * head[near] + 0.5 * stream[near])
    torch.testing.assert_close(out["voxel_scores"][far], head[far])
    assert torch.equal(out["point_scores"], out["voxel_scores"][p2v])
    for bad in ([30.0, 10.0], [5.0], [-1.0, 10.0]):
        cfg.MODEL.FUSION.IMAGE_STREAM.SCORE_MIX_RANGE = bad
        with pytest.raises(ValueError, match="SCORE_MIX_RANGE"):
            build_network(cfg.MODEL, cfg.DATA_CONFIG)
