"""Multimodal copy-paste: pasted instances stand on road, hide what is behind them along the LiDAR rays, and their
image patch moves with their points (the projected pasted points land on the redrawn pixels); REAL mode relabels
and thins shrunk instances; the energy margin loss separates synthesized outliers; raised road patches (point raise)
are cast along the scan's own rays and the camera's, with a depth test, only on free drivable ground."""
import numpy as np
import pytest
import torch
from easydict import EasyDict

from pcdet_anomaly.config import load_config
from pcdet_anomaly.datasets import build_dataset
from pcdet_anomaly.datasets.copy_paste import ROAD_IDS, _angles, paste_instances, recoloured
from pcdet_anomaly.models.heads.anomaly_head import VoxelAnomalyHead
from pcdet_anomaly.utils.common_utils import ROOT_DIR


def _dataset(root, names, mode="anomaly", label_ids=(), scale=()):
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml").DATA_CONFIG
    cfg.DATA_PATH = str(root)
    cfg.SPLIT.MODE, cfg.SPLIT.LISTS = "lists", {"train": names, "val": [], "test": []}
    cp = cfg.COPY_PASTE
    cp.ENABLED, cp.MODE, cp.LABEL_IDS, cp.SCALE_RANGE, cp.PROB = True, mode, list(label_ids), list(scale), 1.0
    cp.RANGE_SHIFT_PROB = 0.0      # turned about the sensor only (the range shift has its own test)
    return build_dataset(cfg, "train", True), cfg


def _paste_until(ds, cfg, new_label=None, seeds=range(40)):
    for seed in seeds:
        name, frame = ds.frames[seed % len(ds.frames)]
        r = ds.readers[name]
        pts = r.read_points(frame)
        ids = ds.point_label_ids(r, frame, pts)
        rgb, depth = r.read_rgb(frame), r.read_depth(frame)
        out = paste_instances(np.random.default_rng(seed), ds.copy_paste_db, pts, ids, rgb, depth, r.calibration,
                              cfg.COPY_PASTE, 1.0, new_label)
        if out[3] == 1:
            return r, pts, ids, rgb, out
    pytest.fail("nothing could be pasted in 40 tries")


def test_copy_paste_is_consistent_across_modalities(synth_root):
    root, summaries = synth_root
    ds, cfg = _dataset(root, [s["name"] for s in summaries])
    assert len(ds.copy_paste_db) > 0 and all(len(i.pix_uv) for i in ds.copy_paste_db.instances)
    cfg.COPY_PASTE.MAX_INSTANCES, cfg.COPY_PASTE.IN_VIEW_PROB = 1, 1.0     # in the camera view: both modalities
    anomaly = np.asarray(cfg.LABELS.ANOMALY_IDS)
    r, pts, ids, rgb, (p2, l2, rgb2, n, is_pasted) = _paste_until(ds, cfg)
    tail = p2[is_pasted]
    n_old_kept = int((~is_pasted).sum())
    assert len(tail) >= 3 and np.isin(l2[is_pasted], anomaly).all() and not is_pasted[:n_old_kept].any()
    # turned about the vertical axis: heights are those of a database instance, exactly
    zs = np.concatenate([i.points[:, 2] for i in ds.copy_paste_db.instances])
    assert np.isin(tail[:, 2], zs).all()
    # placed on drivable ground, with nothing of the frame standing in its footprint
    c = tail[:, :2].mean(0)
    under = np.linalg.norm(pts[:, :2] - c, axis=1) < 0.5
    assert under.sum() > 0 and np.isin(ids[under], ROAD_IDS).mean() > 0.5
    assert not (pts[under, 2] > tail[:, 2].min() + 0.25).any()
    # nothing of the frame stays behind it along its rays (same angular bin, farther)
    b_az, b_el = np.radians(cfg.COPY_PASTE.OCCLUSION_BIN_DEG[0]), np.radians(cfg.COPY_PASTE.OCCLUSION_BIN_DEG[1])
    az_o, el_o, r_o = _angles(tail[:, :3].astype(np.float64))
    az_t, el_t, r_t = _angles(p2[:n_old_kept, :3].astype(np.float64))
    bins = {}
    for a, e, rr in zip(np.floor(az_o / b_az), np.floor(el_o / b_el), r_o):
        bins[(a, e)] = min(bins.get((a, e), np.inf), rr)
    behind = [rr > bins[(a, e)] for a, e, rr in zip(np.floor(az_t / b_az), np.floor(el_t / b_el), r_t)
              if (a, e) in bins]
    assert not any(behind)
    before = [rr > bins[(a, e)] for a, e, rr in zip(np.floor(_angles(pts[:, :3].astype(np.float64))[0] / b_az),
                                                   np.floor(_angles(pts[:, :3].astype(np.float64))[1] / b_el),
                                                   _angles(pts[:, :3].astype(np.float64))[2]) if (a, e) in bins]
    assert any(before)            # the paste did hide something (the road behind it)
    # the image patch moved with the points: projected pasted points land on redrawn pixels
    changed = (rgb2 != rgb).any(2)
    cal = r.calibration
    cam = tail[:, :3] @ cal.lidar_to_cam[:3, :3].T + cal.lidar_to_cam[:3, 3]
    front = cam[:, 2] > 1
    u = (cal.intrinsics[0, 0] * cam[front, 0] / cam[front, 2] + cal.intrinsics[0, 2]).astype(int)
    v = (cal.intrinsics[1, 1] * cam[front, 1] / cam[front, 2] + cal.intrinsics[1, 2]).astype(int)
    ok = (u >= 1) & (u < rgb.shape[1] - 1) & (v >= 1) & (v < rgb.shape[0] - 1)
    assert ok.sum() >= 5          # in view: most points hit (a 3x3 neighbourhood of) changed pixels
    near = np.zeros(ok.sum(), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= changed[v[ok] + dy, u[ok] + dx]
    assert near.mean() > 0.6, near.mean()
    assert changed.sum() > 20


def test_real_mode_relabels_and_thins_shrunk_instances(synth_root):
    root, summaries = synth_root
    ds, cfg = _dataset(root, [s["name"] for s in summaries], "real", (14,), (0.4, 0.5))
    assert len(ds.copy_paste_db) > 0
    cfg.COPY_PASTE.MAX_INSTANCES = 1
    sizes = [len(i.points) for i in ds.copy_paste_db.instances]
    r, pts, ids, rgb, (p2, l2, rgb2, n, is_pasted) = _paste_until(ds, cfg, new_label=29)
    pasted = int(is_pasted.sum())
    assert pasted > 0 and (l2[is_pasted] == 29).all() and pasted <= 0.25 * max(sizes) + 5          # thinned by scale^2 (<= 0.25)
    with pytest.raises(ValueError, match="LABEL_IDS must be normal classes"):
        _dataset(root, [s["name"] for s in summaries], "real", (29,), (0.4, 0.5))


def test_recoloured_changes_the_appearance_but_keeps_the_shading():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (500, 3)).astype(np.uint8)
    px[1] = px[0]
    changed = 0
    for seed in range(20):
        out = recoloured(px, np.random.default_rng(seed))
        assert out.shape == px.shape and out.dtype == np.uint8
        assert (out[0] == out[1]).all()                       # a function of the pixel: same colour in, same out
        # per output channel, monotone in one input channel (increasing, or decreasing when inverted)
        for c in range(3):
            corr = [abs(np.corrcoef(out[:, c].astype(float), px[:, k].astype(float))[0, 1]) for k in range(3)]
            assert max(corr) > 0.9
        changed += np.abs(out.astype(int) - px.astype(int)).mean() > 20
    assert changed >= 15                                       # the class's colours do not survive


def test_stretched_and_recoloured_outliers(synth_root):
    """STRETCH_RANGE gives each axis its own factor (a shape no known class has); RECOLOR_PROB 1 recolours the
    patch and rescales the pasted points' intensity by one gain per instance."""
    root, summaries = synth_root
    ds, cfg = _dataset(root, [s["name"] for s in summaries], "real", (14,), (1.0, 1.0))
    cp = cfg.COPY_PASTE
    cp.MAX_INSTANCES, cp.IN_VIEW_PROB, cp.STRETCH_RANGE, cp.RECOLOR_PROB = 1, 1.0, [0.5, 2.0], 1.0
    db_z = np.concatenate([i.points[:, 2] for i in ds.copy_paste_db.instances])
    db_int = np.concatenate([i.points[:, 3] for i in ds.copy_paste_db.instances])
    r, pts, ids, rgb, (p2, l2, rgb2, n, is_pasted) = _paste_until(ds, cfg, new_label=29)
    tail = p2[is_pasted]
    assert (l2[is_pasted] == 29).all()
    assert not np.isin(tail[:, 2], db_z).all()               # heights scaled about the base: not a database height
    assert not np.isin(tail[:, 3], db_int).all()             # intensities rescaled: not a database intensity
    # the image changed where the patch was drawn, and its pixels are not the instance's own colours
    drawn = (rgb2 != rgb).any(-1)
    assert drawn.sum() > 0
    palette = {tuple(c) for i in ds.copy_paste_db.instances for c in i.pix_rgb}
    new_px = {tuple(c) for c in rgb2[drawn]}
    assert len(new_px - palette) > 0.5 * len(new_px)
    cp.STRETCH_RANGE, cp.RECOLOR_PROB = [], 0.0               # off: the instance's own colours and intensities
    r, pts, ids, rgb, (p2, l2, rgb2, n, is_pasted) = _paste_until(ds, cfg, new_label=29)
    assert np.isin(p2[is_pasted][:, 2], db_z).all() and np.isin(p2[is_pasted][:, 3], db_int).all()
    drawn = (rgb2 != rgb).any(-1)
    assert {tuple(c) for c in rgb2[drawn]} <= palette


def test_energy_margin_loss_separates_outliers():
    model_cfg = EasyDict(NUM_SEMANTIC_CLASSES=4, NORMALITY_SCORE="energy")
    loss_cfg = EasyDict(TYPE="focal", POS_WEIGHT=-1.0, FOCAL_GAMMA=2.0, LOVASZ_WEIGHT=0.0, ANOMALY_LOVASZ_WEIGHT=0.0,
                        LOVASZ_TYPE="softmax", SEMANTIC_WEIGHT=1.0, OUTLIER_WEIGHT=1.0, ENERGY_M_IN=-7.0,
                        ENERGY_M_OUT=-3.0)
    torch.manual_seed(0)
    head = VoxelAnomalyHead(model_cfg, loss_cfg, "normality", 8)
    feats = torch.randn(200, 8)
    labels = (torch.arange(200) % 10 == 0).long()            # 10 % synthesized outliers
    semantic = torch.where(labels == 1, torch.tensor(255), torch.randint(0, 4, (200,)))
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(300):
        batch = {"voxel_features": feats, "point2voxel": torch.arange(200), "voxel_labels": labels,
                 "voxel_semantic": semantic}
        loss, tb = head.get_loss(head(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "loss_outlier" in tb
    scores = head(dict(batch))["voxel_scores"].detach()
    assert scores[labels == 1].min() > scores[labels == 0].max()        # every outlier above every inlier
    loss_cfg.OUTLIER_WEIGHT = 0.0
    assert "loss_outlier" not in head.get_loss(head(dict(batch)))[1]


def test_aux_semantic_targets_and_loss(synth_root):
    """IMAGE.AUX_SEMANTIC: the SEMANTIC-CAM image becomes a class map at the feature stride (anomaly class included),
    pasted instances are painted into it, and the model adds a 2D cross-entropy that trains the image branch."""
    from pcdet_anomaly.datasets import collate_batch
    from pcdet_anomaly.models import build_network
    root, summaries = synth_root
    ds, cfg = _dataset(root, [s["name"] for s in summaries])
    ds.dataset_cfg.IMAGE.AUX_SEMANTIC.ENABLED = True
    aux = ds.dataset_cfg.IMAGE.AUX_SEMANTIC
    H, W = ds.dataset_cfg.IMAGE.SIZE
    samples = [ds[i] for i in range(len(ds))]
    k = len(aux.CLASSES)
    for s in samples:
        t = s["image_semantic"]
        assert t.shape == (H // aux.STRIDE, W // aux.STRIDE)
        assert set(np.unique(t)) <= set(range(k + 1)) | {255}
    assert any((s["image_semantic"] == k).any() for s in samples)        # the anomaly class is there
    full = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml")
    full.DATA_CONFIG = ds.dataset_cfg
    full.MODEL.BACKBONE_3D.INIT_SIZE = 4
    model = build_network(full.MODEL, full.DATA_CONFIG).train()
    batch = collate_batch(samples[:2])
    loss, tb = model.get_loss(model(batch))
    assert tb["loss_image_semantic"] > 0
    loss.backward()
    assert model.image_aux_head[0].weight.grad.abs().sum() > 0
    assert model.image_backbone.layer2[0].conv1.weight.grad.abs().sum() > 0     # reaches the encoder
    # pasting paints the label image where the patch is drawn
    name, frame = ds.frames[0]
    r = ds.readers[name]
    pts = r.read_points(frame)
    ids = ds.point_label_ids(r, frame, pts)
    for seed in range(30):
        sem = np.array(r.read_semantic_image(frame))
        rgb = r.read_rgb(frame)
        out = paste_instances(np.random.default_rng(seed), ds.copy_paste_db, pts, ids, rgb, r.read_depth(frame),
                              r.calibration, cfg.COPY_PASTE, 1.0, None, sem)
        if out[3]:
            changed = (out[2] != rgb).any(2)
            assert np.isin(sem[changed], cfg.LABELS.ANOMALY_IDS).mean() > 0.95
            break
    else:
        pytest.fail("nothing pasted")


def test_ring_thinning_keeps_whole_rings_evenly():
    from pcdet_anomaly.datasets.copy_paste import _ring_thinning
    el = np.radians(np.repeat(np.arange(10) * 0.6 - 3.0, 200))          # 10 rings 0.6 deg apart, 200 points each
    az = np.tile(np.linspace(-0.05, 0.05, 200), 10)
    xyz = np.stack([20 * np.cos(az) * np.cos(el), 20 * np.sin(az) * np.cos(el), 20 * np.sin(el)], 1)
    keep = _ring_thinning(xyz, 0.5, np.random.default_rng(0))
    rings = np.unique(np.round(np.degrees(el[keep]), 3))
    assert len(rings) == 5 and np.all(np.diff(rings) > 1.1)             # every other ring, whole
    assert 0.2 < keep.mean() < 0.3                                       # 5 of 10 rings x half of their points
    assert _ring_thinning(xyz, 1.0, np.random.default_rng(0)).all()


def test_range_shift_moves_instances_farther_on_the_road(synth_root):
    from pcdet_anomaly.datasets.copy_paste import InstanceDatabase
    root, summaries = synth_root
    ds, cfg = _dataset(root, [s["name"] for s in summaries])
    cp = cfg.COPY_PASTE
    cp.MAX_INSTANCES, cp.IN_VIEW_PROB, cp.RANGE_SHIFT_PROB, cp.RANGE_SHIFT_MAX = 1, 1.0, 1.0, 60.0
    inst = min(ds.copy_paste_db.instances, key=lambda i: np.linalg.norm(i.points[:, :2].mean(0)))
    r0 = np.linalg.norm(inst.points[:, :2].mean(0))
    ds.copy_paste_db = InstanceDatabase([inst])
    r, pts, ids, rgb, (p2, l2, rgb2, n, is_pasted) = _paste_until(ds, cfg, seeds=range(200))
    tail = p2[is_pasted]
    r1 = np.linalg.norm(tail[:, :2].mean(0))
    assert r1 > r0 + 0.5 and r1 < 62.0
    assert len(tail) < len(inst.points) * min(1.0, 1.5 * r0 / r1) + 5     # a far scan holds fewer points
    under = np.linalg.norm(pts[:, :2] - tail[:, :2].mean(0), axis=1) < 1.0
    road = under & np.isin(ids, ROAD_IDS)
    assert road.sum() >= 3 and abs(tail[:, 2].min() - np.median(pts[road, 2])) < 0.5   # standing on the road there
    cal = r.calibration                                                   # the patch moved with it
    cam = tail[:, :3] @ cal.lidar_to_cam[:3, :3].T + cal.lidar_to_cam[:3, 3]
    front = cam[:, 2] > 1
    u = (cal.intrinsics[0, 0] * cam[front, 0] / cam[front, 2] + cal.intrinsics[0, 2]).astype(int)
    v = (cal.intrinsics[1, 1] * cam[front, 1] / cam[front, 2] + cal.intrinsics[1, 2]).astype(int)
    ok = (u >= 1) & (u < rgb.shape[1] - 1) & (v >= 1) & (v < rgb.shape[0] - 1)
    changed = (rgb2 != rgb).any(2)
    near = np.zeros(ok.sum(), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= changed[v[ok] + dy, u[ok] + dx]
    assert ok.sum() >= 3 and near.mean() > 0.6, near.mean()


def _flat_scene():
    """A sensor 1.8 m over flat road: rings every 0.5 deg down to -25 deg, azimuth every 0.3 deg over +-40 deg; a
    pedestrian (label 12) standing at 5 m (rays that meet it end there); a camera at the sensor looking along +x, its depth image the road's."""
    from pcdet_anomaly.datasets.anovox.reader import Calibration
    el, az = np.meshgrid(np.radians(np.arange(-25.0, -1.99, 0.5)), np.radians(np.arange(-40.0, 40.0, 0.3)))
    el, az = el.ravel(), az.ravel()
    r = 1.8 / np.tan(-el)
    pts = np.stack([r * np.cos(az), r * np.sin(az), np.full(len(el), -1.8), np.full(len(el), 0.3)], 1)
    ids = np.ones(len(pts), np.int64)
    blocker = (np.abs(np.degrees(az) - 10) < 2) & (r > 5)       # rays through the pedestrian end on it
    t_block = 5.0 / (r[blocker] * np.cos(az[blocker] - np.radians(10)))
    pts[blocker, :3] *= t_block[:, None]
    ids[blocker] = 12
    K = np.array([[300.0, 0, 320], [0, 300.0, 180], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
    calib = Calibration(K, T, (360, 640), "test")
    vv, uu = np.mgrid[0:360, 0:640]
    ray_y = (vv + 0.5 - 180) / 300.0                               # camera y (down) per unit depth
    depth = np.where(ray_y > 1e-3, 1.8 / np.maximum(ray_y, 1e-3), 1e4).astype(np.float32)
    rgb = np.random.default_rng(0).integers(40, 200, (360, 640, 3)).astype(np.uint8)
    return pts.astype(np.float32), ids, rgb, depth, calib


def _raise_cfg(**kw):
    cfg = load_config(ROOT_DIR / "cfgs/anovox/normality_raise_cpu.yaml").DATA_CONFIG.COPY_PASTE
    cfg.MAX_INSTANCES, cfg.IN_VIEW_PROB = 1, 1.0
    cfg.update(kw)
    return cfg


def test_raised_patch_is_cast_along_the_scans_own_rays_in_both_modalities():
    from pcdet_anomaly.datasets import point_raise
    pts, ids, rgb, depth, calib = _flat_scene()
    cfg = _raise_cfg()
    sem = np.zeros(rgb.shape[:2], np.uint8)
    for seed in range(20):
        mesas = []
        orig = point_raise._place
        point_raise._place = lambda *a, **k: mesas.append(orig(*a, **k)) or mesas[-1]
        try:
            p2, l2, rgb2, n, m = point_raise.raise_patches(np.random.default_rng(seed), pts, ids, rgb, depth, calib,
                                                           cfg, 29, sem)
        finally:
            point_raise._place = orig
        if n == 1 and m.sum() > 30:
            break
    else:
        pytest.fail("no patch raised in 20 tries")
    mesa = mesas[-1]
    assert len(p2) == len(pts) and (l2[m] == 29).all() and (l2[~m] == ids[~m]).all()
    assert np.array_equal(p2[~m], pts[~m])
    # each raised point moved nearer along its own ray, onto the surface (top or side)
    a, b = pts[m, :3].astype(np.float64), p2[m, :3].astype(np.float64)
    assert np.allclose(np.cross(a, b), 0, atol=1e-3 * np.linalg.norm(a, axis=1).max() ** 2)
    assert (np.linalg.norm(b, axis=1) < np.linalg.norm(a, axis=1) - 1e-3).all()
    h = mesa.height_at(b[:, 0], b[:, 1])
    assert (h > 0.0099).all() and np.allclose(b[:, 2], -1.8 + h, atol=0.02)
    assert abs(mesa.z0 + 1.8) < 1e-5
    # independently: a ray is raised exactly when a dense walk along it (1 cm) meets the raised volume
    xy = pts[:, :2].astype(np.float64)
    s_near = np.clip((xy @ mesa.c) / (xy * xy).sum(1), 0, 1)          # the segment's point nearest the centre
    cand = np.linalg.norm(xy * s_near[:, None] - mesa.c, axis=1) < mesa.radius
    assert m[~cand].sum() == 0
    met = []
    for chunk in np.array_split(pts[cand, :3].astype(np.float64), max(1, cand.sum() // 500)):
        walk = np.linspace(0, 1, 4001)[None, :, None] * chunk[:, None, :]
        hw = mesa.height_at(walk[..., 0], walk[..., 1])
        met.append(((hw > 0.01) & (walk[..., 2] <= -1.8 + hw))[:, :-5].any(1))
    met = np.concatenate(met)
    assert (met != m[cand]).mean() < 0.01 and (met & ~m[cand]).sum() <= max(2, 0.02 * m.sum())
    # camera: redrawn pixels are where the patch is, the semantic image painted there
    changed = (rgb2 != rgb).any(2)
    assert changed.sum() > 50 and (sem[changed] == 29).mean() > 0.9
    # depth test: something 0.3 m before the camera over the left half of the patch hides that half, not the rest
    cols = np.nonzero(changed.any(0))[0]
    split = int(np.median(cols))
    occluded = depth.copy()
    occluded[:, :split] = 0.3
    rgb3 = point_raise.raise_patches(np.random.default_rng(seed), pts, ids, rgb, occluded, calib, cfg, 29)[2]
    changed3 = (rgb3 != rgb).any(2)
    assert not changed3[:, :split].any() and np.array_equal(changed3[:, split:], changed[:, split:])
    K = calib.intrinsics
    cam = b @ calib.lidar_to_cam[:3, :3].T
    u = np.floor(K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]).astype(int)
    v = np.floor(K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]).astype(int)
    ok = (u >= 41) & (u < 639) & (v >= 1) & (v < 359)
    near = np.zeros(ok.sum(), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= changed[v[ok] + dy, u[ok] + dx]
    assert ok.sum() > 10 and near.mean() > 0.8, near.mean()


def test_raise_needs_free_drivable_ground():
    from pcdet_anomaly.datasets.point_raise import raise_patches
    pts, ids, rgb, depth, calib = _flat_scene()
    side = np.full_like(ids, 2)                 # all sidewalk: nowhere to raise
    out = raise_patches(np.random.default_rng(0), pts, side, rgb, depth, calib, _raise_cfg(), 29)
    assert out[3] == 0 and not out[4].any() and out[2] is rgb
    # road everywhere, but tall things standing all over it
    tall = pts.copy()
    tall[::7, 2] = 0.5
    out = raise_patches(np.random.default_rng(0), tall, ids, rgb, depth, calib, _raise_cfg(), 29)
    assert out[3] == 0


def test_raise_mode_trains_on_raised_patches(synth_root):
    root, summaries = synth_root
    cfg = load_config(ROOT_DIR / "cfgs/anovox/normality_raise_cpu.yaml").DATA_CONFIG
    cfg.DATA_PATH = str(root)
    cfg.SPLIT.MODE, cfg.SPLIT.LISTS = "lists", {"train": [s["name"] for s in summaries], "val": [], "test": []}
    cfg.COPY_PASTE.PROB = 1.0
    ds = build_dataset(cfg, "train", True)
    assert ds.copy_paste_db is None and ds.raise_outliers
    fractions = [float(ds.prepare_sample(i)["point_labels"].mean()) for i in range(len(ds.frames))]
    assert max(fractions) > 0.002, fractions
    # the supervised regime: MODE anomaly pastes, RAISE.PROB adds raised patches on top (here: pasting off)
    cfg.COPY_PASTE.MODE, cfg.COPY_PASTE.PROB, cfg.SPLIT.TRAIN_NORMALITY_ONLY = "anomaly", 0.0, False
    counts = {}
    for prob in (0.0, 1.0):
        cfg.COPY_PASTE.RAISE.PROB = prob
        ds = build_dataset(cfg, "train", True)
        assert ds.copy_paste_db is not None and ds.raise_outliers == (prob > 0)
        counts[prob] = sum(int((ds.prepare_sample(i)["point_labels"] == 1).sum()) for i in range(len(ds.frames)))
    assert counts[1.0] > counts[0.0] + 100, counts     # (the augmentation draws differ: compare totals)
    cfg.COPY_PASTE.MODE = "lift"
    with pytest.raises(ValueError, match="COPY_PASTE.MODE must be anomaly, real or raise"):
        build_dataset(cfg, "train", True)
