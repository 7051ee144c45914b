import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import cuda_ops
from pcdet_anomaly.config import load_config
from pcdet_anomaly.datasets import build_dataloader, build_dataset, collate_batch
from pcdet_anomaly.datasets.anovox.labels import GEN_A_PALETTE
from pcdet_anomaly.datasets.anovox.reader import FrameError, ScenarioReader, list_scenarios
from pcdet_anomaly.utils.common_utils import ROOT_DIR


def cfg_for(root, **overrides):
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml")
    cfg.DATA_CONFIG.DATA_PATH = str(root)
    for key, value in overrides.items():
        node = cfg.DATA_CONFIG
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg.DATA_CONFIG


@pytest.fixture()
def synth_copy(synth_root, tmp_path):
    root, _ = synth_root
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_sample_contract_and_labels(synth_root):
    root, summaries = synth_root
    ds = build_dataset(cfg_for(root, **{"IMAGE.SIZE": [128, 192]}), "all", training=False)
    assert len(ds) == 8
    sample = ds[0]
    n, v = len(sample["points"]), len(sample["voxel_coords"])
    assert sample["points"].shape == (n, 4) and sample["point2voxel"].shape == (n,)
    assert sample["point2voxel"].max() < v and sample["voxel_labels"].shape == (v,)
    assert set(np.unique(sample["point_labels"])) <= {0, 1, 255}
    assert sample["image"].shape == (3, 128, 192)
    assert np.allclose(sample["intrinsics"][0, 0], 384 * 192 / 768)    # intrinsics follow the resize
    # anomaly points exist in anomaly scenarios and nowhere else
    for i, (name, frame) in enumerate(ds.frames):
        has = (ds[i]["point_labels"] == 1).any()
        assert has == (not ds.meta[name]["normality"]), name


def test_frames_ordered_numerically_not_lexicographically(synth_copy):
    scen = list_scenarios(synth_copy)[0]
    reader = ScenarioReader(scen)
    for folder in [p for p in scen.iterdir() if p.is_dir()]:
        for f in sorted(folder.iterdir()):
            stem, ext = f.stem.rsplit("_", 1)[0], f.suffix
            new_id = {reader.frames[0]: 9, reader.frames[1]: 10}.get(int(f.stem.rsplit("_", 1)[1]))
            if new_id is not None:
                f.rename(folder / f"{stem}_{new_id}{ext}")
    assert ScenarioReader(scen).frames == [9, 10]


def test_splits_by_scenario_with_holdout(synth_root):
    root, summaries = synth_root
    fams = sorted({f for s in summaries for f in s["anomalies"]})
    dcfg = cfg_for(root, **{"SPLIT.RATIOS": [0.5, 0.25, 0.25], "SPLIT.HOLDOUT_SHAPE_FAMILIES": fams[:1]})
    ds = build_dataset(dcfg, "train", training=True)
    splits = ds.splits
    all_names = splits["train"] + splits["val"] + splits["test"]
    assert len(all_names) == len(set(all_names)) == 4
    for name in splits["train"]:
        assert not ds.meta[name]["families"] & set(fams[:1])
    dcfg = cfg_for(root, **{"SPLIT.TRAIN_NORMALITY_ONLY": True})
    train = build_dataset(dcfg, "train", training=True)
    assert all(train.meta[n]["normality"] for n in train.splits["train"])
    supervised = build_dataset(cfg_for(root), "train", training=True)   # same val and test scenarios: comparable rows
    assert (train.splits["val"], train.splits["test"]) == (supervised.splits["val"], supervised.splits["test"])
    assert set(train.splits["train"]) <= set(supervised.splits["train"])
    bad = cfg_for(root, **{"SPLIT.MODE": "lists"})
    bad.SPLIT.LISTS = {"train": [all_names[0]], "val": [all_names[0]]}
    with pytest.raises(ValueError, match="in both train and val"):
        build_dataset(bad, "train", training=True)
    bad.SPLIT.LISTS = {"train": ["Scenario_nope"]}
    with pytest.raises(ValueError, match="Scenario_nope' not found"):
        build_dataset(bad, "train", training=True)


def test_augmented_anomaly_points_still_project_onto_anomaly_pixels(synth_root):
    root, _ = synth_root
    dcfg = cfg_for(root, **{"IMAGE.SIZE": [512, 768], "MAX_POINTS": -1, "POINT_LABEL_SOURCE": "semantic_lidar"})
    ds = build_dataset(dcfg, "all", training=True)
    idx = next(i for i, (n, f) in enumerate(ds.frames) if not ds.meta[n]["normality"])
    name, frame = ds.frames[idx]
    sem_img = ds.readers[name].read_semantic_image(frame)
    torch.manual_seed(0)
    for _ in range(3):
        s = ds[idx]
        assert not np.allclose(s["aug_matrix"], np.eye(4))
        anomalous = s["point_labels"] == 1
        uv, _, valid = cuda_ops.project_to_image(torch.from_numpy(s["points"][anomalous]),
                                                 torch.from_numpy(s["intrinsics"]),
                                                 torch.from_numpy(s["lidar_to_cam"]), s["image_hw"],
                                                 torch.from_numpy(s["aug_matrix"]))
        px = uv[valid].floor().long().numpy()
        labels = sem_img[px[:, 1], px[:, 0]]
        assert valid.sum() > 0
        assert np.isin(labels, [29, 30, 31, 32, 33, 34, 100]).mean() > 0.6


def test_dataloader_with_workers_and_collate_offsets(synth_root):
    root, _ = synth_root
    _, loader, _ = build_dataloader(cfg_for(root), "all", batch_size=2, training=True, workers=2)
    batch = next(iter(loader))
    assert batch["points"].shape[1] == 5 and set(batch["points"][:, 0].unique().tolist()) == {0.0, 1.0}
    p2v, coords = batch["point2voxel"], batch["voxel_coords"]
    assert torch.equal(coords[p2v, 0].float(), batch["points"][:, 0])    # each point's voxel has its batch index
    assert batch["images"].shape[0] == 2 and len(batch["calib"]) == 2


# ---------------------------------------------------------------- bad input
def _scenario(root):
    return list_scenarios(root)[0]


def _first_file(scen, prefix):
    folder = next(p for p in scen.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return sorted(folder.iterdir())[0]


def _expect(root, message, policy="stop"):
    ds = build_dataset(cfg_for(root, BAD_FRAME_POLICY=policy), "all", training=False)
    with pytest.raises(FrameError, match=message):
        for i in range(len(ds)):
            ds.prepare_sample(i)


def test_truncated_npy(synth_copy):
    f = _first_file(_scenario(synth_copy), "LIDAR")
    f.write_bytes(f.read_bytes()[:200])
    _expect(synth_copy, r"LIDAR.*\.npy: cannot read \.npy")


def test_wrong_dtype_npy(synth_copy):
    f = _first_file(_scenario(synth_copy), "VOXEL_GRID")
    np.save(f, np.zeros((5, 3), np.float32))
    _expect(synth_copy, r"VOXEL_GRID_\d+\.npy: expected uint \(N, 4\), got float32 \(5, 3\)")


def test_png_wrong_size(synth_copy):
    f = _first_file(_scenario(synth_copy), "RGB-CAM")
    Image.new("RGB", (100, 50)).save(f)
    _expect(synth_copy, r"RGB-CAM.*\.png: image is 100 x 50, sensor_setup says 768 x 512")


def test_empty_and_nan_point_clouds(synth_copy):
    f = _first_file(_scenario(synth_copy), "LIDAR")
    np.save(f, np.zeros((0, 4), np.float32))
    _expect(synth_copy, r"empty point cloud")
    pts = np.ones((10, 4), np.float32)
    pts[3, 1] = np.nan
    np.save(f, pts)
    _expect(synth_copy, r"1 of 10 points contain NaN")


def test_missing_sensor_folder(synth_copy):
    scen = _scenario(synth_copy)
    shutil.rmtree(next(p for p in scen.iterdir() if p.name.startswith("SEMANTIC-LIDAR")))
    with pytest.raises(FrameError, match=r"missing sensor folder SEMANTIC-LIDAR\*"):
        build_dataset(cfg_for(synth_copy), "all", training=False)


def test_frame_missing_in_one_sensor_is_reported_and_skip_policy_counts(synth_copy):
    scen = _scenario(synth_copy)
    missing = _first_file(scen, "VOXEL_GRID")
    missing.unlink()
    with pytest.raises(FrameError, match="present in lidar .* but missing in voxel_grid"):
        build_dataset(cfg_for(synth_copy, BAD_FRAME_POLICY="stop"), "all", training=False)
    ds = build_dataset(cfg_for(synth_copy, BAD_FRAME_POLICY="skip"), "all", training=False)
    assert len(ds) == 7 and any("missing in voxel_grid" in p for p in ds.problems)
    # a corrupt frame under 'skip' is dropped (a marker that collate removes and reports), never replaced
    lidar_dir = next(p for p in scen.iterdir() if p.name.startswith("LIDAR"))
    lidar = sorted(lidar_dir.iterdir())[1]            # the frame that still has every sensor
    lidar.write_bytes(b"garbage")
    ds = build_dataset(cfg_for(synth_copy, BAD_FRAME_POLICY="skip"), "all", training=False)
    bad_index = next(i for i, (n, f) in enumerate(ds.frames) if n == scen.name
                     and ds.readers[n].file("lidar", f) == lidar)
    sample = ds[bad_index]
    assert sample["bad_frame"] == str(lidar) and sample["frame_id"] == ds.frames[bad_index][1]
    assert sum(ds.bad_frames.values()) == 1
    good = ds[(bad_index + 1) % len(ds)]
    batch = collate_batch([sample, good])
    assert batch["batch_size"] == 1 and batch["frame_id"] == [good["frame_id"]]
    assert [b["bad_frame"] for b in batch["bad_frames"]] == [str(lidar)]
    assert collate_batch([sample])["batch_size"] == 0


# ---------------------------------------------------------------- Gen-A
def test_gen_a_fixture_layout_palette_and_pcd(tmp_path):
    import open3d as o3d
    scen = tmp_path / "Scenario_genA"
    for folder in ("RGB_IMG", "SEMANTIC_IMG", "PCD", "SEMANTIC_PCD", "VOXEL_GRID", "ANOMALY"):
        (scen / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for frame in (7, 12):
        xyz = rng.uniform(-10, 10, (50, 3))
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        intensity = rng.uniform(0, 1, 50)
        cloud.colors = o3d.utility.Vector3dVector(np.stack([intensity, np.zeros(50), np.zeros(50)], 1))
        o3d.io.write_point_cloud(str(scen / "PCD" / f"PCD_{frame}.pcd"), cloud)
        labels = np.where(np.arange(50) < 10, 34, 1)
        sem = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        sem.colors = o3d.utility.Vector3dVector(np.array([GEN_A_PALETTE[int(l)] for l in labels]) / 255.0)
        o3d.io.write_point_cloud(str(scen / "SEMANTIC_PCD" / f"SEMANTIC_PCD_{frame}.pcd"), sem)
        Image.new("RGB", (768, 512), (10, 20, 30)).save(scen / "RGB_IMG" / f"RGB_IMG_{frame}.png")
        img = np.zeros((512, 768, 3), np.uint8)
        img[:] = GEN_A_PALETTE[1]
        img[:10, :10] = (245, 0, 0)
        Image.fromarray(img).save(scen / "SEMANTIC_IMG" / f"SEMANTIC_IMG_{frame}.png")
        np.save(scen / "VOXEL_GRID" / f"VOXEL_GRID_{frame}.npy", np.array([[1, 2, 3, 33]], np.uint16))
        (scen / "ANOMALY" / f"ANOMALY_{frame}.csv").write_text("anomaly_type_id ; 34\nsize ; 1.5\n")
    reader = ScenarioReader(scen)
    assert reader.layout == "gen_a" and reader.frames == [7, 12]
    assert "default mono sensor set" in reader.calibration.source
    pts = reader.read_points(7)
    assert pts.shape == (50, 4) and pts.dtype == np.float32 and (pts[:, 3] > 0).any()
    sem = reader.read_semantic_points(7)
    assert (sem[:10, 3] == 33).all() and (sem[10:, 3] == 1).all()      # (245, 0, 0) decodes as 33
    assert reader.read_semantic_image(12)[0, 0] == 33 and reader.read_semantic_image(12)[100, 100] == 1
    assert reader.read_anomaly(7)["anomaly_type_id"] == 34


def test_anomaly_frame_aware_sampling_draws_anomaly_frames_by_weight_and_repeats_per_epoch(synth_root):
    from pcdet_anomaly.datasets import EpochSeededSampler
    root, _ = synth_root
    ds, _, sampler = build_dataloader(cfg_for(root, ANOMALY_FRAME_WEIGHT=50.0), "all", batch_size=2, training=True)
    has = [ds.frame_has_anomaly(n, f) for n, f in ds.frames]
    assert 0 < sum(has) < len(has)
    sampler.set_epoch(3)
    first = list(sampler)
    assert len(first) == len(ds) and list(sampler) == first            # a function of (seed, epoch): resumable
    sampler.set_start(3)
    assert list(sampler) == first[3:]
    draws = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    share = np.mean([has[i] for i in draws])
    n_anom = sum(has)
    expected = 50 * n_anom / (50 * n_anom + len(has) - n_anom)
    assert abs(share - expected) < 0.05, (share, expected)
    # weight 1 is the plain shuffle: a permutation
    _, _, plain = build_dataloader(cfg_for(root, ANOMALY_FRAME_WEIGHT=1.0), "all", batch_size=2, training=True)
    assert plain.weights is None and sorted(plain) == list(range(len(ds)))
    # evaluation never resamples; a bad weight is refused
    _, _, val = build_dataloader(cfg_for(root, ANOMALY_FRAME_WEIGHT=50.0), "all", batch_size=2, training=False)
    assert list(val) == list(range(len(ds)))
    with pytest.raises(ValueError, match="ANOMALY_FRAME_WEIGHT"):
        build_dataloader(cfg_for(root, ANOMALY_FRAME_WEIGHT=0.0), "all", batch_size=2, training=True)
    with pytest.raises(ValueError, match="one non-negative number per frame"):
        EpochSeededSampler(ds, weights=[1.0])
    # a split without anomaly frames (the normality regime) keeps the plain shuffle
    normal = [n for n in ds.scenarios if not any(ds.frame_has_anomaly(n, f) for f in ds.readers[n].frames)]
    assert normal
    _, _, only_normal = build_dataloader(cfg_for(root, ANOMALY_FRAME_WEIGHT=50.0, **{
        "SPLIT.MODE": "lists", "SPLIT.LISTS": {"train": normal, "val": [], "test": []}}), "train", batch_size=2,
        training=True)
    assert only_normal.weights is None


@pytest.mark.parametrize("n", [0, 1, 7, 8])
def test_sampler_length_equals_its_draw_for_every_shard(n):
    from pcdet_anomaly.datasets import EpochSeededSampler
    data = list(range(n))
    for world in (1, 2, 3):
        for rank in range(world):
            for pad in (True, False):
                for weights in (None, [1.0 + i % 2 for i in range(n)] or None):
                    s = EpochSeededSampler(data, seed=1, rank=rank, world_size=world, pad=pad, weights=weights)
                    s.set_epoch(2)
                    for start in (0, 2):
                        s.set_start(start)
                        assert len(s) == len(list(s)) == max(0, len(s._indices()) - start), (n, world, rank, pad)
