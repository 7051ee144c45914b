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


def test_normality_standardize_uses_running_class_statistics_of_normal_voxels():
    """MODEL.HEAD.NORMALITY_STANDARDIZE (SML): training forwards keep, per predicted class, the running mean and
    variance of the raw score of the normal voxels only (synthesized outliers and ignored voxels left out); the
    standardized score ranks a voxel by how far above its own class's normal scores it is, so a class whose normal
    voxels all score high (cars) no longer outranks a voxel that is unusual for its class."""
    from pcdet_anomaly.models.heads import VoxelAnomalyHead
    cfg = load_config(ROOT_DIR / "cfgs/anovox/normality_real_cpu.yaml")
    cfg.MODEL.HEAD.NORMALITY_STATS_MOMENTUM = 1.0          # each step replaces the statistics: exact expectations
    head = VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "normality", 8)
    assert not head.standardize and int(head.class_score_count.sum()) == 0
    torch.manual_seed(0)
    n = 600
    logits = torch.randn(n, 8) * 3
    labels = torch.zeros(n, dtype=torch.long)
    labels[:50], labels[50:80] = 1, 255                   # synthesized outliers, ignored voxels
    head.train()
    head.update_class_stats(logits, labels)
    energy, pred = -torch.logsumexp(logits, 1), logits.argmax(1)
    for c in range(8):
        sel = energy[(labels == 0) & (pred == c)]
        torch.testing.assert_close(head.class_score_mean[c], sel.mean())
        torch.testing.assert_close(head.class_score_var[c], sel.var())
        assert int(head.class_score_count[c]) == len(sel)
    # momentum < 1: a running average of the steps
    head.stats_momentum = 0.25
    before = head.class_score_mean.clone()
    logits2 = torch.randn(n, 8) * 3 + 1.0
    head.update_class_stats(logits2, torch.zeros(n, dtype=torch.long))
    e2, p2 = -torch.logsumexp(logits2, 1), logits2.argmax(1)
    for c in range(8):
        torch.testing.assert_close(head.class_score_mean[c], before[c] + 0.25 * (e2[p2 == c].mean() - before[c]))
    # the standardized score: class 0's normal voxels sit at energy -2 ± 1, class 1's at -8 ± 1
    head.class_score_mean[:] = torch.tensor([-2.0, -8.0, -5, -5, -5, -5, -5, -5])
    head.class_score_var[:] = 1.0
    a = torch.full((1, 8), -20.0)
    a[0, 0] = 1.5                                           # class 0, energy -1.5: 0.5 sd above its class
    b = torch.full((1, 8), -20.0)
    b[0, 1] = 5.0                                           # class 1, energy -5.0: 3 sd above its class
    pair = torch.cat([a, b])
    raw = head.normality_score(pair)
    assert raw[0] > raw[1]                                  # the raw energy ranks the class-0 voxel first
    head.standardize = True
    z = head.standardized(pair)
    torch.testing.assert_close(z, torch.tensor([0.5, 3.0]), atol=1e-4, rtol=0)
    assert torch.all(head.normality_score(pair) == torch.sigmoid(z))
    # a forward in training updates the statistics; in evaluation it does not
    feats = torch.randn(300, 8)
    batch = {"voxel_features": feats, "point2voxel": torch.arange(300), "voxel_labels": torch.zeros(300).long()}
    counts = head.class_score_count.clone()
    head.eval()
    with torch.no_grad():
        head(dict(batch))
    assert torch.equal(head.class_score_count, counts)
    head.train()
    head(dict(batch))
    assert int(head.class_score_count.sum()) > int(counts.sum())
    # a class never predicted on a normal training voxel takes the others' average statistics
    head.class_score_count[:] = 10
    head.class_score_count[1] = 0
    head.class_score_mean[:] = torch.tensor([-2.0, 99.0, -4, -4, -4, -4, -4, -4])
    head.class_score_var[:] = 1.0
    z = head.standardized(b)
    torch.testing.assert_close(z, torch.tensor([-5.0 + 26.0 / 7]), atol=1e-4, rtol=0)
    # no statistics at all (an untrained head, an older checkpoint): a clear error, not a silent raw score
    fresh = VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "normality", 8)
    fresh.standardize = True
    with pytest.raises(RuntimeError, match="no class statistics"):
        fresh.normality_score(pair)
    cfg.MODEL.HEAD.NORMALITY_STANDARDIZE = True
    with pytest.raises(ValueError, match="needs MODEL.REGIME normality"):
        VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "supervised", 8)
    # a checkpoint written before the statistics existed still loads strictly; it has none, and says so
    old = {k: v for k, v in head.state_dict().items() if not k.startswith("class_score")}
    legacy = VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "normality", 8)
    legacy.load_state_dict(old, strict=True)
    assert int(legacy.class_score_count.sum()) == 0
    with pytest.raises(RuntimeError, match="no class statistics"):
        legacy.normality_score(pair)
    # the statistics travel in the state dict (every checkpoint carries them)
    assert {"class_score_mean", "class_score_var", "class_score_count"} <= {k.split(".")[-1] for k in
                                                                            head.state_dict()}


def test_normality_energy_margin_balances_normal_voxels_over_classes():
    """MODEL.LOSS.NEGATIVE_CLASS_POWER in the normality regime: the normal voxels' term of the energy margin loss
    weighs each voxel n_class^-power (mean weight 1), so a rare class (cars) above the margin costs as much as the
    road; power 0 is the plain mean; the synthesized outliers' term is unchanged."""
    from pcdet_anomaly.models.heads import VoxelAnomalyHead
    cfg = load_config(ROOT_DIR / "cfgs/anovox/normality_real_cpu.yaml")
    torch.manual_seed(0)
    n = 400
    sem = torch.zeros(n, dtype=torch.long)
    sem[:20] = 7                                    # 20 "car" voxels among 380 "road" ones
    labels = torch.zeros(n, dtype=torch.long)
    labels[390:] = 1                                # 10 synthesized outliers
    feats = torch.randn(n, 8)
    m_in, m_out, w_out = cfg.MODEL.LOSS.ENERGY_M_IN, cfg.MODEL.LOSS.ENERGY_M_OUT, cfg.MODEL.LOSS.OUTLIER_WEIGHT
    losses = {}
    for power in (0.0, 0.5, 1.0):
        cfg.MODEL.LOSS.NEGATIVE_CLASS_POWER = power
        torch.manual_seed(1)
        head = VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "normality", 8)
        out = head(dict(voxel_features=feats, point2voxel=torch.arange(n), voxel_labels=labels, voxel_semantic=sem))
        _, tb = head.get_loss(out)
        e = -torch.logsumexp(out["voxel_semantic_logits"].detach().float(), 1)
        hin = torch.relu(e[labels == 0] - m_in) ** 2
        w = torch.ones(len(hin))
        g = sem[labels == 0]
        if power:
            counts = torch.bincount(g, minlength=8).float()
            w = counts[g] ** -power
            w = w / w.mean()
        hout = torch.relu(m_out - e[labels == 1]) ** 2
        expected = w_out * ((hin * w).mean() + hout.mean())
        assert abs(tb["loss_outlier"] - float(expected)) < 1e-5 * max(1.0, float(expected))
        losses[power] = (hin, w, g)
    hin, w, g = losses[1.0]
    assert torch.allclose((w * (g == 7)).sum(), (w * (g == 0)).sum())     # power 1: each class the same total weight


def test_vos_virtual_outliers_come_from_the_tails_of_the_class_gaussians():
    """MODEL.LOSS.VOS_WEIGHT: normal voxels' hidden features queue up per ground-truth class; once every class seen
    has a full queue, class Gaussians with a shared covariance are fitted and their least likely samples go
    through the classifier's last layer only, their energy pushed above ENERGY_M_OUT."""
    from pcdet_anomaly.models.heads import VoxelAnomalyHead
    cfg = load_config(ROOT_DIR / "cfgs/anovox/normality_real_cpu.yaml")
    cfg.MODEL.LOSS.VOS_WEIGHT, cfg.MODEL.LOSS.VOS_QUEUE = 0.5, 100
    cfg.MODEL.LOSS.VOS_SAMPLES, cfg.MODEL.LOSS.VOS_SELECT = 500, 5
    torch.manual_seed(0)
    head = VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "normality", 8).train()
    n = 400
    sem = torch.arange(n) % 2                        # two classes present
    labels = torch.zeros(n, dtype=torch.long)
    labels[-10:] = 1                                 # synthesized outliers never enter the queue
    sem[-10:] = 1
    batch = dict(voxel_features=torch.randn(n, 8), point2voxel=torch.arange(n), voxel_labels=labels,
                 voxel_semantic=sem)
    out = head(dict(batch))
    _, tb = head.get_loss(out)
    assert "loss_vos" not in tb                      # queues not full yet (64 per class and step)
    assert head.vos_fill.tolist()[:2] == [64, 64] and int(head.vos_fill[2:].sum()) == 0
    out = head(dict(batch))
    _, tb = head.get_loss(out)
    assert "loss_vos" in tb and tb["loss_vos"] >= 0
    # the queue holds normal voxels' hidden features only
    hidden = head.semantic_logits[:-1](batch["voxel_features"]).detach()
    normal0 = hidden[(sem == 0) & (labels == 0)]
    q0 = head.vos_queue[0, :100]
    assert torch.cdist(q0, normal0, compute_mode="donot_use_mm_for_euclid_dist").min(1).values.max() < 1e-5
    # virtual outliers: far in the tails (Mahalanobis distance under the fitted model beyond every queued feature's)
    head.vos_queue[:2] = torch.randn(2, 100, head.vos_queue.shape[-1]) * 0.1 + torch.tensor([0.0, 3.0])[:, None,
                                                                                                         None]
    v = head.virtual_outliers(torch.Generator().manual_seed(0))
    assert v.shape == (2 * 5, head.vos_queue.shape[-1])
    feats = head.vos_queue[:2].double()
    mu = feats.mean(1)
    cen = (feats - mu[:, None]).reshape(-1, feats.shape[-1])
    prec = torch.linalg.inv(cen.T @ cen / len(cen) + 1e-4 * torch.eye(feats.shape[-1], dtype=torch.float64))
    def maha(x, m):
        return ((x - m) @ prec * (x - m)).sum(-1)
    for c in range(2):
        assert maha(v[c * 5:(c + 1) * 5], mu[c]).min() > maha(feats[c], mu[c]).max()
    # the VOS term's gradients reach the classifier's last layer only: with and without it, the first layer's
    # gradients are the same and the last layer's differ
    grads = {}
    head.loss_cfg.ENERGY_M_OUT = 5.0                          # above every energy here: the hinge is active
    state = (head.vos_queue.clone(), head.vos_fill.clone())
    for weight in (0.5, 0.0):
        head.vos_queue.copy_(state[0])
        head.vos_fill.copy_(state[1])
        head.zero_grad()
        head.vos_weight = weight if weight else 1e-30          # 0 would skip the queue update: keep the same path
        torch.manual_seed(3)
        total, tb = head.get_loss(head(dict(batch)))
        total.backward()
        grads[weight] = (head.semantic_logits[0].weight.grad.clone(), head.semantic_logits[-1].weight.grad.clone())
        assert tb["loss_vos"] > 0
    assert torch.allclose(grads[0.5][0], grads[0.0][0], atol=1e-7)
    assert not torch.allclose(grads[0.5][1], grads[0.0][1])
    # configuration errors
    cfg.MODEL.LOSS.ENERGY_M_OUT, cfg.MODEL.LOSS.OUTLIER_WEIGHT = -3.0, 0.0
    with pytest.raises(ValueError, match="OUTLIER_WEIGHT > 0"):
        VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "normality", 8)
    cfg.MODEL.LOSS.OUTLIER_WEIGHT = 0.1
    with pytest.raises(ValueError, match="needs MODEL.REGIME normality"):
        VoxelAnomalyHead(cfg.MODEL.HEAD, cfg.MODEL.LOSS, "supervised", 8)


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
