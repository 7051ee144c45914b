import sys

import numpy as np
import pytest
from PIL import Image

from pcdet_anomaly.config import load_config
from pcdet_anomaly.datasets.anovox.reader import ScenarioReader, list_scenarios
from pcdet_anomaly.datasets.anovox.labels import TargetMapper
from pcdet_anomaly.evaluation import frame_ground_truth
from pcdet_anomaly.evaluation.folder_eval import PredictionError, evaluate_folder
from pcdet_anomaly.utils.common_utils import ROOT_DIR

sys.path.insert(0, str(ROOT_DIR / "tools"))
CFG = load_config(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml")
LABELS, EG = CFG.DATA_CONFIG.LABELS, CFG.DATA_CONFIG.EVAL_GRID


def write_predictions(root, pred_dir, score_fn):
    targets = TargetMapper(LABELS.ANOMALY_IDS, LABELS.IGNORE_IDS, LABELS.IGNORE_INDEX)
    for scen in list_scenarios(root):
        reader = ScenarioReader(scen)
        (pred_dir / scen.name).mkdir(parents=True, exist_ok=True)
        for frame in reader.frames:
            vox, _, lab = frame_ground_truth(reader, frame, targets, "voxel_grid", -1, EG)
            np.save(pred_dir / scen.name / f"VOXEL_PRED_{frame}.npy",
                    np.concatenate([vox, score_fn(lab)[:, None]], 1).astype(np.float64))


def test_eval_voxels_perfect_random_and_bad_input(synth_root, tmp_path):
    root, _ = synth_root
    perfect = tmp_path / "perfect"
    write_predictions(root, perfect, lambda lab: lab.astype(np.float64))
    summary, _ = evaluate_folder(root, perfect, LABELS, EG)
    assert summary["pooled"]["all"]["auroc"] == 1.0 and summary["pooled"]["all"]["ap"] == 1.0
    assert summary["pooled"]["all"]["fpr95"] == 0.0 and summary["coverage"]["gt_voxels_unpredicted"] == 0
    assert "anomaly_frames" in summary["pooled"]
    rng = np.random.default_rng(0)
    noisy = tmp_path / "noisy"
    write_predictions(root, noisy, lambda lab: rng.random(len(lab)))
    summary, _ = evaluate_folder(root, noisy, LABELS, EG, protocol="anovox")
    assert 0.4 < summary["pooled"]["all"]["auroc"] < 0.6 and "fpr95_anovox" in summary["pooled"]["all"]
    # the command-line tool writes the reports and curves
    import eval_voxels
    eval_voxels.main(["--data", str(root), "--pred", str(perfect), "--out", str(tmp_path / "rep")])
    for name in ("metrics.json", "metrics.csv", "metrics.txt", "curves_all.png"):
        assert (tmp_path / "rep" / name).is_file()
    # a missing prediction, an extra one, NaN scores: errors that name the file
    scen = sorted(perfect.iterdir())[0]
    victim = sorted(scen.iterdir())[0]
    data = np.load(victim)
    victim.unlink()
    with pytest.raises(PredictionError, match=r"no prediction for frame\(s\)"):
        evaluate_folder(root, perfect, LABELS, EG)
    np.save(victim, data)
    np.save(scen / "VOXEL_PRED_99999.npy", data)
    with pytest.raises(PredictionError, match="VOXEL_PRED_99999.npy: frame 99999 is not in the dataset"):
        evaluate_folder(root, perfect, LABELS, EG)
    (scen / "VOXEL_PRED_99999.npy").unlink()
    bad = data.copy()
    bad[0, 3] = np.nan
    np.save(victim, bad)
    with pytest.raises(PredictionError, match=f"{victim.name}: 1 NaN scores"):
        evaluate_folder(root, perfect, LABELS, EG)


def test_point_score_predictions_are_voxelized(synth_root, tmp_path):
    root, _ = synth_root
    pred = tmp_path / "points"
    for scen in list_scenarios(root):
        reader = ScenarioReader(scen)
        (pred / scen.name).mkdir(parents=True)
        for frame in reader.frames:
            pts = reader.read_points(frame)
            np.save(pred / scen.name / f"SCORES_{frame}.npy", (pts[:, 2] > -1.0).astype(np.float32))
    summary, _ = evaluate_folder(root, pred, LABELS, EG, pred_type="points", score_rule="max")
    assert summary["frames"] == 8 and summary["coverage"]["pred_voxels_without_gt"] > 0
    with pytest.raises(PredictionError, match="point scores but the LiDAR frame has"):
        victim = next(next(pred.iterdir()).iterdir())
        np.save(victim, np.zeros(5))
        evaluate_folder(root, pred, LABELS, EG, pred_type="points")


def test_viewer_png_ply_and_colours_follow_scores(synth_root, tmp_path):
    import open3d as o3d
    import view_heatmap
    root, summaries = synth_root
    scene = next(s["name"] for s in summaries if s["anomalies"])
    low, high = tmp_path / "low", tmp_path / "high"
    write_predictions(root, low, lambda lab: np.full(len(lab), 0.05))
    write_predictions(root, high, lambda lab: np.full(len(lab), 0.95))
    outs = {}
    for name, pred in (("low", low), ("high", high)):
        png = tmp_path / f"{name}.png"
        view_heatmap.main(["--data", str(root), "--pred", str(pred), "--scene", scene, "--save", str(png),
                           "--size", "640", "360", "--export", str(tmp_path / f"{name}.ply"),
                           "--overlay", str(tmp_path / f"{name}_overlay.png")])
        img = np.asarray(Image.open(png).convert("RGB")).astype(np.float64)
        assert img.shape == (360, 640, 3) and img.std() > 5, "blank picture"
        outs[name] = img
        assert (tmp_path / f"{name}_overlay.png").is_file()
    # the same voxels render hotter (brighter in the inferno map) when their scores are higher
    render = slice(0, int(640 * 0.9))
    assert outs["high"][:, render].mean() > outs["low"][:, render].mean() + 3
    cloud = o3d.io.read_point_cloud(str(tmp_path / "high.ply"))
    reader = ScenarioReader(root / scene)
    n_vox = len(np.load(next((high / scene).glob(f"*_{reader.frames[0]}.npy"))))
    assert len(cloud.points) == n_vox
    from pcdet_anomaly.utils.heatmap_viewer import scores_to_colours
    assert np.allclose(np.asarray(cloud.colors)[0], scores_to_colours(np.array([0.95]))[0], atol=1 / 255)
    empty = tmp_path / "empty"
    (empty / scene).mkdir(parents=True)
    np.save(empty / scene / f"VOXEL_PRED_{reader.frames[0]}.npy", np.zeros((0, 4)))
    with pytest.raises(SystemExit, match="nothing to show"):
        view_heatmap.main(["--data", str(root), "--pred", str(empty), "--scene", scene, "--save",
                           str(tmp_path / "x.png")])


def test_check_dataset_summary_and_problems(synth_root, tmp_path):
    import shutil
    import check_dataset
    root, summaries = synth_root
    report = check_dataset.check(root, deep=True)
    assert report["scenarios"] == 4 and report["frames"] == 8 and not report["problems"]
    assert report["anomaly_frames"] == 2 * sum(bool(s["anomalies"]) for s in summaries)
    text = check_dataset.format_report(report, root)
    assert "road" in text and "problems: 0" in text
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    scen = list_scenarios(copy)[0]
    lidar = sorted(next(scen.glob("LIDAR*")).iterdir())[0]
    lidar.write_bytes(b"broken")
    report = check_dataset.check(copy, deep=True)
    assert len(report["problems"]) == 1 and lidar.name in report["problems"][0]


def test_profile_model_reports_every_stage(synth_root, capsys):
    root, _ = synth_root
    import profile_model
    profile_model.main(["--data", str(root), "--steps", "2", "--set", "DATA_CONFIG.MAX_POINTS", "4000",
                        "DATA_CONFIG.VOXELIZE.GRID_SIZE", "[40, 40, 8]", "DATA_CONFIG.IMAGE.SIZE", "[64, 96]",
                        "MODEL.BACKBONE_3D.INIT_SIZE", "4"])
    text = capsys.readouterr().out
    for stage in ("vfe", "backbone_3d", "image_backbone", "fusion", "head"):
        assert f"| forward: {stage} |" in text, text
    assert "| backward (all stages) |" in text and "frames/s per worker" in text


def test_demo_overrides_are_the_cpu_config():
    """make demo trains cylinder_fusion.yaml with run_demo's overrides; they must stay equal to cylinder_fusion_cpu.yaml
    except for what the demo sets on purpose: the study's split (held-out families), point budget and 7 epochs."""
    import run_demo
    demo = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion.yaml", run_demo.CPU_OVERRIDES)
    cpu = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml", [
        "DATA_CONFIG.MAX_POINTS", "20000", "OPTIMIZATION.NUM_EPOCHS", "7",
        "DATA_CONFIG.SPLIT.HOLDOUT_SHAPE_FAMILIES", '["cone", "boulder"]'])
    for cfg in (demo, cpu):
        cfg.pop("CFG_FILE"), cfg.pop("CFG_TAG")
    assert demo == cpu
    assert demo.DATA_CONFIG.COPY_PASTE.ENABLED


def test_demo_never_resumes_a_run_of_another_model(tmp_path, monkeypatch):
    """make demo resumes its own interrupted run, but a run made with another recipe (an earlier release's model,
    other data) or before recipes were recorded is moved aside, not resumed with the wrong architecture."""
    import run_demo
    current = run_demo.recipe("cfgs/anovox/cylinder_fusion.yaml")
    assert '"NUM_SEMANTIC_CLASSES": 8' in current and "anovox_bench_50x4" in current
    monkeypatch.setattr(run_demo, "CPU_OVERRIDES", run_demo.CPU_OVERRIDES + ["MODEL.HEAD.NUM_SEMANTIC_CLASSES", "0"])
    assert run_demo.recipe("cfgs/anovox/cylinder_fusion.yaml") != current     # another model, another recipe
    run = tmp_path / "demo"
    assert run_demo.set_aside_if_other(run, current) is None                  # nothing there
    run.mkdir()
    assert run_demo.set_aside_if_other(run, current) is None                  # empty folder: nothing to keep
    (run / "demo_recipe.json").write_text(current)
    (run / "ckpt").mkdir()
    assert run_demo.set_aside_if_other(run, current) is None and (run / "ckpt").is_dir()   # its own run: resumed
    (run / "demo_recipe.json").write_text(current.replace("8", "0"))
    aside = run_demo.set_aside_if_other(run, current)
    assert aside is not None and (aside / "ckpt").is_dir() and not run.exists()
    run.mkdir()
    (run / "config.yaml").write_text("x: 1")                                    # a run from before recipes
    assert run_demo.set_aside_if_other(run, current) is not None and not run.exists()


def test_ensemble_predictions_averages_runs(synth_root, tmp_path):
    from pcdet_anomaly.evaluation.ensemble import ensemble_frame
    # one frame: the union of the voxels, each averaged over the runs that predict it (weights 1 and 3)
    a = np.array([[1, 2, 3, 1.0], [4, 5, 6, 0.0]])
    b = np.array([[4, 5, 6, 1.0], [7, 8, 9, 0.5]])
    out = ensemble_frame([a, b], np.array([1.0, 3.0]), ["a", "b"])
    got = {tuple(r[:3].astype(int)): r[3] for r in out}
    assert got == {(1, 2, 3): 1.0, (4, 5, 6): 0.75, (7, 8, 9): 0.5}
    pts = ensemble_frame([np.array([0.0, 1.0]), np.array([1.0, 1.0])], np.array([1.0, 1.0]), ["a", "b"])
    assert np.allclose(pts, [0.5, 1.0])
    with pytest.raises(PredictionError, match="differ in length"):
        ensemble_frame([np.zeros(3), np.zeros(4)], np.ones(2), ["a", "b"])
    with pytest.raises(PredictionError, match="all be voxels"):
        ensemble_frame([a, np.zeros(2)], np.ones(2), ["a", "b"])
    # two runs with the same signal and independent Gaussian noise: their mean has sqrt(2) less noise, so it ranks
    # better than either (the CLI, end to end)
    root, _ = synth_root
    rng = np.random.default_rng(1)
    runs = []
    for name in ("a", "b"):
        write_predictions(root, tmp_path / name, lambda lab: 1.5 * (lab == 1) + rng.normal(size=len(lab)))
        runs.append(tmp_path / name)
    import ensemble_predictions
    ensemble_predictions.main(["--pred", *map(str, runs), "--out", str(tmp_path / "ens"), "--no_progress"])
    ap = {n: evaluate_folder(root, tmp_path / n, LABELS, EG)[0]["pooled"]["all"]["ap"] for n in ("a", "b", "ens")}
    assert ap["ens"] > max(ap["a"], ap["b"]) + 0.02, ap
    assert (tmp_path / "ens" / "manifest.json").is_file() and (tmp_path / "ens" / "ensemble.json").is_file()
    # runs that do not cover the same frames: an error naming the folder
    victim = sorted(sorted(runs[1].iterdir())[0].iterdir())[0]
    victim.unlink()
    with pytest.raises(PredictionError, match="not the frames of"):
        ensemble_predictions.main(["--pred", *map(str, runs), "--out", str(tmp_path / "ens2"), "--no_progress"])
    with pytest.raises(ValueError, match="one non-negative weight per folder"):
        ensemble_predictions.main(["--pred", *map(str, runs), "--out", str(tmp_path / "ens3"), "--weights", "1"])


def test_score_mix_grid_blends_head_and_stream_by_distance(tmp_path):
    """benchmarks/score_mix_grid.py: (1 - w(r)) head + w(r) stream per voxel, w = W within r0 of the sensor, linear
    to 0 at r1, 0 beyond (r: the evaluation-grid voxel centre's xy distance); other frames' voxels must match."""
    sys.path.insert(0, str(ROOT_DIR / "benchmarks"))
    from score_mix_grid import blend_folder
    # voxels on the x axis at 5, 20 and 40 m from the sensor (0.5 m grid, sensor at 250 m)
    ix = np.array([510, 540, 580])          # centres x = (ix + 0.5) * 0.5 - 250 = 5.25, 20.25, 40.25 m; y = 0.25 m
    head = np.stack([ix, np.full(3, 500), np.full(3, 10), np.array([0.1, 0.2, 0.3])], 1)
    stream = head.copy()
    stream[:, 3] = [0.9, 0.8, 0.7]
    for folder, arr in (("h", head), ("s", stream)):
        (tmp_path / folder / "Scenario_a").mkdir(parents=True)
        np.save(tmp_path / folder / "Scenario_a" / "VOXEL_PRED_1.npy", arr)
    (tmp_path / "h" / "manifest.json").write_text("{}")
    blend_folder(tmp_path / "h", tmp_path / "s", tmp_path / "o", 0.5, 10.0, 30.0)
    out = np.load(tmp_path / "o" / "Scenario_a" / "VOXEL_PRED_1.npy")
    w = np.array([0.5, 0.5 * (30 - np.hypot(20.25, 0.25)) / 20, 0.0])
    np.testing.assert_allclose(out[:, 3], (1 - w) * head[:, 3] + w * stream[:, 3])
    np.testing.assert_array_equal(out[:, :3], head[:, :3])
    assert (tmp_path / "o" / "manifest.json").is_file()
    stream[0, 0] += 1
    np.save(tmp_path / "s" / "Scenario_a" / "VOXEL_PRED_1.npy", stream)
    with pytest.raises(ValueError, match="same voxels"):
        blend_folder(tmp_path / "h", tmp_path / "s", tmp_path / "o2", 0.5, 10.0, 30.0)


def test_normality_class_scores_reads_a_run_per_predicted_class(synth_root, tmp_path, capsys):
    """benchmarks/normality_class_scores.py: the raw score of every non-ignored voxel the model predicts, with its
    predicted class and label, as the head computes it; and the table and box plot of a run folder."""
    sys.path.insert(0, str(ROOT_DIR / "benchmarks"))
    import torch
    from normality_class_scores import class_scores, main
    from pcdet_anomaly.config import save_config
    from pcdet_anomaly.datasets import batch_to_device, build_dataloader
    from pcdet_anomaly.engine.checkpoint import save_checkpoint
    from pcdet_anomaly.models import build_network
    root, _ = synth_root
    cfg = load_config(ROOT_DIR / "cfgs/anovox/normality_real_cpu.yaml")
    cfg.DATA_CONFIG.DATA_PATH, cfg.DATA_CONFIG.MAX_POINTS = str(root), 3000
    cfg.DATA_CONFIG.VOXELIZE.GRID_SIZE, cfg.DATA_CONFIG.IMAGE.SIZE = [60, 60, 8], [64, 96]
    cfg.MODEL.BACKBONE_3D.INIT_SIZE, cfg.MODEL.FUSION.EMBED_DIM, cfg.MODEL.FUSION.FFN_DIM = 4, 16, 32
    cfg.DATA_CONFIG.SPLIT.TRAIN_NORMALITY_ONLY = False      # a train split with anomalies in this tiny set
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, cfg.DATA_CONFIG).eval()
    u, p, lab = class_scores(model, cfg, "test")
    _, loader, _ = build_dataloader(cfg.DATA_CONFIG, "test", cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU, False, 0, False,
                                    cfg.TRAIN.SEED, None)
    expect_u, expect_l = [], []
    with torch.no_grad():
        for batch in loader:
            out = model(batch_to_device(batch, "cpu"))
            keep = out["voxel_labels"] != 255
            expect_u.append(-torch.logsumexp(out["voxel_semantic_logits"].float(), 1)[keep])
            expect_l.append(out["voxel_labels"][keep])
    np.testing.assert_allclose(u, torch.cat(expect_u).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(lab, torch.cat(expect_l).numpy())
    assert (lab == 1).any() and set(np.unique(lab)) <= {0, 1} and len(p) == len(u)
    run = tmp_path / "run"
    (run / "ckpt").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    model.head.class_score_count[:] = 1
    save_checkpoint(run / "ckpt" / "latest.pth", model)
    main(["--run", str(run), "--split", "test"])
    printed = capsys.readouterr().out
    assert printed.count("\n| ") >= cfg.MODEL.HEAD.NUM_SEMANTIC_CLASSES + 1
    assert f"test: {int((lab == 1).sum())} anomalous voxels" in printed
    assert (run / "class_scores_test.png").stat().st_size > 10_000
