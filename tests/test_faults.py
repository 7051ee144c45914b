"""Fault injection (PCDET_ANOMALY_FAULTS, pcdet_anomaly/engine/faults.py): every fault a long multi-process run meets
is survived, with nothing lost and nothing counted twice."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from pcdet_anomaly.config import save_config
from pcdet_anomaly.engine import faults
from pcdet_anomaly.engine.checkpoint import find_resume_checkpoint, load_checkpoint
from pcdet_anomaly.engine.trainer import PREEMPT_EXIT_CODE
from pcdet_anomaly.evaluation import VoxelEvaluator
from pcdet_anomaly.utils.common_utils import ROOT_DIR
from test_engine import make_trainer, tiny_cfg

TRAIN = str(ROOT_DIR / "tools" / "train.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(faults_spec=""):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT_DIR))
    env.pop(faults.ENV, None)
    if faults_spec:
        env[faults.ENV] = faults_spec
    return env


def train_cmd(cfg_file, run):
    return [sys.executable, TRAIN, "--cfg", str(cfg_file), "--output_dir", str(run), "--no_progress", "--workers", "0"]


def weights(run):
    return load_checkpoint(run / "ckpt" / "latest.pth")["model_state"]


def steps_logged(run):
    return [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


def test_fault_spec_is_parsed_and_off_by_default(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert not faults.active() and faults.loss_fault(2.0, 0, 0) == 2.0
    assert faults.parse("nan_loss@3:1, sigterm@5") == [("nan_loss", 3, 1), ("sigterm", 5, None)]
    with pytest.raises(ValueError, match="unknown fault 'melt'"):
        faults.parse("melt@1")


def test_nonfinite_step_skipped_under_an_enabled_grad_scaler(synth_root, tmp_path, monkeypatch):
    """The AMP skip path: a NaN loss with an enabled GradScaler used to raise 'No inf checks were recorded'."""
    monkeypatch.setenv(faults.ENV, "cpu_scaler@0,nan_loss@1")
    cfg = tiny_cfg(synth_root, epochs=1)
    trainer = make_trainer(cfg, tmp_path)
    assert trainer.scaler.is_enabled()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.train()["status"] == "finished"
    assert trainer.skipped_steps == 1 and trainer.guard.nonfinite_total == 1 and trainer.global_step == 2
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())   # step 0 applied
    guard = json.loads((tmp_path / "guard.json").read_text())
    assert guard["skipped_steps"] == 1 and guard["nonfinite_total"] == 1


@pytest.mark.parametrize("scaler", [False, True], ids=["fp32", "grad_scaler"])
def test_nan_on_one_rank_of_two_skips_on_both_without_hang(synth_root, tmp_path, scaler):
    """torchrun, gloo, two local 'nodes' (--nnodes 2, c10d rendezvous): rank 1 meets a NaN at step 1 (one step per
    epoch and rank here: the first step of epoch 2)."""
    cfg = tiny_cfg(synth_root, epochs=2)
    cfg_file = tmp_path / "tiny.yaml"
    save_config(cfg, cfg_file)
    run = tmp_path / "run"
    env = env_with("nan_loss@1:1" + (",cpu_scaler@0" if scaler else ""))
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                               "1", "--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_endpoint",
                               f"127.0.0.1:{port}", "--rdzv_id", "faults", *train_cmd(cfg_file, run)[1:],
                               "--launcher", "pytorch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for node in (0, 1)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    guard = json.loads((run / "guard.json").read_text())
    assert guard["skipped_steps"] == 1 and guard["nonfinite_total"] == 1
    state = json.loads((run / "run_state.json").read_text())
    assert state["status"] == "finished" and state["world_size"] == 2
    # validation ran sharded on both ranks and scored each validation frame once
    metrics = json.loads((run / "eval" / "epoch_2" / "metrics.json").read_text())
    assert metrics["frames"] == 2


def test_guard_stop_on_one_rank_stops_both(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, epochs=2)
    cfg.OPTIMIZATION.GUARD.MAX_NONFINITE_STEPS = 1
    cfg_file = tmp_path / "tiny.yaml"
    save_config(cfg, cfg_file)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), TRAIN, "--launcher", "pytorch", *train_cmd(cfg_file, run)[2:]],
                          env=env_with("nan_loss@0:1"), capture_output=True, text=True, timeout=400)
    assert proc.returncode != 0 and "non-finite losses in a row" in proc.stdout + proc.stderr
    guard = json.loads((run / "guard.json").read_text())
    assert guard["events"][0]["kind"] == "nonfinite_loss"
    assert json.loads((run / "run_state.json").read_text())["status"] == "guard_stop"


@pytest.fixture(scope="module")
def reference_run(synth_root, tmp_path_factory):
    """An uninterrupted two-epoch run in a subprocess: what an interrupted and resumed run must equal bit for bit."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg_file, ref = tmp / "tiny.yaml", tmp / "ref"
    save_config(tiny_cfg(synth_root, epochs=2), cfg_file)
    assert subprocess.run(train_cmd(cfg_file, ref), env=env_with(), timeout=400).returncode == 0
    return cfg_file, ref


def assert_same_run(ref, run):
    a, b = weights(ref), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert steps_logged(run) == steps_logged(ref) == sorted(set(steps_logged(ref)))    # nothing logged twice


def test_sigterm_checkpoints_exits_and_resumes_bitwise(reference_run, tmp_path):
    cfg_file, ref = reference_run
    run = tmp_path / "run"
    # SIGTERM in the middle of epoch 2: checkpoint at the step boundary, exit 75
    proc = subprocess.run(train_cmd(cfg_file, run), env=env_with("sigterm@2"), capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == PREEMPT_EXIT_CODE, proc.stderr[-3000:]
    state = load_checkpoint(run / "ckpt" / "latest.pth")
    assert state["epoch"] == 1 and state["extra"]["batch_in_epoch"] == 1 and state["global_step"] == 3
    assert json.loads((run / "run_state.json").read_text())["status"] == "preempted"
    # the same command resumes in the middle of the epoch and ends where the uninterrupted run ended
    assert subprocess.run(train_cmd(cfg_file, run), env=env_with(), timeout=400).returncode == 0
    assert_same_run(ref, run)


def test_kill9_then_resume_is_bitwise_and_logs_each_step_once(reference_run, tmp_path):
    cfg_file, ref = reference_run
    run = tmp_path / "run"
    proc = subprocess.run(train_cmd(cfg_file, run), env=env_with("kill@3"), timeout=400)
    assert proc.returncode == -9
    assert max(steps_logged(run)) == 3           # step 3 was logged by the run that died, then trained again
    assert subprocess.run(train_cmd(cfg_file, run), env=env_with(), timeout=400).returncode == 0
    assert_same_run(ref, run)


def test_checkpoint_write_failing_halfway_keeps_the_previous_one(synth_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(synth_root, epochs=2)
    trainer = make_trainer(cfg, tmp_path)
    trainer.train(stop_after_epoch=1)
    monkeypatch.setenv(faults.ENV, "ckpt_fail@1")
    monkeypatch.setattr(faults, "_ckpt_writes", 0)
    resumed = make_trainer(cfg, tmp_path)
    resumed.resume()
    with pytest.raises(OSError, match="injected fault: checkpoint write 1"):
        resumed.train()
    assert not list((tmp_path / "ckpt").glob("*.tmp"))
    assert load_checkpoint(tmp_path / "ckpt" / "latest.pth")["epoch"] == 1
    path, state = find_resume_checkpoint(tmp_path / "ckpt")
    assert state["epoch"] == 1


def test_bad_frames_dropped_in_training_and_validation_and_counted(synth_root, tmp_path):
    root, summaries = synth_root
    data = tmp_path / "data"
    shutil.copytree(root, data)
    cfg = tiny_cfg((data, summaries), epochs=1)
    cfg.DATA_CONFIG.ANOMALY_FRAME_WEIGHT = 1.0      # every training frame drawn once (weighted draws may skip one)
    lists = cfg.DATA_CONFIG.SPLIT.LISTS
    for scene in (lists["train"][0], lists["val"][0]):
        lidar = sorted(next((data / scene).glob("LIDAR*")).iterdir())[0]
        lidar.write_bytes(b"not a numpy file")
    trainer = make_trainer(cfg, tmp_path / "run")
    trainer.train()
    record = trainer.val_history[-1]
    assert record["train_bad_frames"] == 1 and record["val_bad_frames"] == 1
    metrics = json.loads((tmp_path / "run" / "eval" / "epoch_1" / "metrics.json").read_text())
    assert metrics["frames"] == 1 and len(metrics["bad_frames"]) == 1      # 2 val frames, 1 dropped, none twice
    assert json.loads((tmp_path / "run" / "guard.json").read_text())["bad_frames_total"] == 1
    sys.path.insert(0, str(ROOT_DIR / "tools"))
    import monitor
    assert "bad frames dropped from training (all workers and ranks): 1" in monitor.summarise(tmp_path / "run")


def test_flat_loss_fires_on_a_real_lr0_run(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, epochs=1)
    cfg.OPTIMIZATION.LR = 0.0
    trainer = make_trainer(cfg, tmp_path)
    trainer.train()
    kinds = [e["kind"] for e in json.loads((tmp_path / "guard.json").read_text())["events"]]
    assert "flat_loss" in kinds


def test_flat_loss_silent_on_a_learning_run(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, epochs=1)
    trainer = make_trainer(cfg, tmp_path)
    trainer.train()
    kinds = [e["kind"] for e in json.loads((tmp_path / "guard.json").read_text())["events"]]
    assert "flat_loss" not in kinds


def test_sharded_evaluation_merges_to_the_single_process_numbers():
    rng = np.random.default_rng(0)
    frames = []
    for i in range(6):
        k = 200
        vox = np.stack([np.arange(k), np.full(k, i), np.zeros(k, int)], 1)
        ids = np.where(rng.random(k) < 0.1, 32, 1)
        frames.append((f"S{i % 3}", i, vox, ids, (ids == 32).astype(np.int8), vox[rng.random(k) < 0.8],
                       None))
    whole, parts = VoxelEvaluator(), [VoxelEvaluator(), VoxelEvaluator()]
    for j, (scene, frame, vox, ids, lab, pvox, _) in enumerate(frames):
        scores = np.round(rng.random(len(pvox)), 2)
        whole.add(scene, frame, vox, ids, lab, pvox, scores)
        parts[j % 2].add(scene, frame, vox, ids, lab, pvox, scores)
    parts[0].merge_state(parts[1].state())
    assert parts[0].summary() == whole.summary()


def test_empty_anomaly_file_is_reported(synth_root, tmp_path, caplog):
    from pcdet_anomaly.datasets.anovox.dataset import _anomaly_meta
    from pcdet_anomaly.datasets.anovox.reader import ScenarioReader, list_scenarios
    root, _ = synth_root
    data = tmp_path / "data"
    shutil.copytree(root, data)
    scen = next(s for s in list_scenarios(data) if (s / "ANOMALY").is_dir())
    victim = sorted((scen / "ANOMALY").iterdir())[0]
    victim.write_text("")
    reader = ScenarioReader(scen)
    with caplog.at_level("WARNING", logger="pcdet_anomaly"):
        meta = _anomaly_meta(reader)
    assert f"{victim}: empty ANOMALY file" in caplog.text
    assert not meta["normality"]           # still an anomaly scenario: its voxels say so
    sys.path.insert(0, str(ROOT_DIR / "tools"))
    import check_dataset
    report = check_dataset.check(data)
    assert any(f"{victim}: empty ANOMALY file" in p for p in report["problems"])


def test_missing_scenario_predictions_are_an_error_unless_allowed(synth_root, tmp_path):
    from pcdet_anomaly.config import load_config
    from pcdet_anomaly.datasets.anovox.reader import ScenarioReader, list_scenarios
    from pcdet_anomaly.evaluation.folder_eval import PredictionError, evaluate_folder, write_manifest
    from pcdet_anomaly.evaluation.report import format_table
    root, _ = synth_root
    cfg = load_config(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml").DATA_CONFIG
    scenes = list_scenarios(root)
    pred = tmp_path / "pred"
    for scen in scenes[1:]:
        (pred / scen.name).mkdir(parents=True)
        for frame in ScenarioReader(scen).frames:
            grid = np.load(next((scen / "VOXEL_GRID").glob(f"*_{frame}.npy"))).astype(np.float64)
            np.save(pred / scen.name / f"P_{frame}.npy", np.c_[grid[:, :3], np.full(len(grid), 0.5)])
    with pytest.raises(PredictionError, match=rf"no predictions for 1 scenario\(s\).*{scenes[0].name}"):
        evaluate_folder(root, pred, cfg.LABELS, cfg.EVAL_GRID)
    summary, _ = evaluate_folder(root, pred, cfg.LABELS, cfg.EVAL_GRID, allow_missing=True)
    assert summary["missing_predictions"]["scenarios"] == [scenes[0].name]
    assert "MISSING PREDICTIONS" in format_table(summary) and summary["frames"] == 2 * (len(scenes) - 1)
    write_manifest(pred, [s.name for s in scenes[1:]], "test")      # what tools/test.py writes: only its split
    summary, _ = evaluate_folder(root, pred, cfg.LABELS, cfg.EVAL_GRID)
    assert summary["missing_predictions"]["scenarios"] == []


def test_eval_voxels_drops_an_unreadable_ground_truth_frame_under_skip(synth_root, tmp_path):
    from pcdet_anomaly.config import load_config
    from pcdet_anomaly.datasets.anovox.reader import FrameError, list_scenarios
    from pcdet_anomaly.evaluation.folder_eval import evaluate_folder
    root, _ = synth_root
    data = tmp_path / "data"
    shutil.copytree(root, data)
    cfg = load_config(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml").DATA_CONFIG
    pred = tmp_path / "pred"
    for scen in list_scenarios(data):
        (pred / scen.name).mkdir(parents=True)
        for f in (scen / "VOXEL_GRID").glob("*.npy"):
            grid = np.load(f).astype(np.float64)
            np.save(pred / scen.name / f.name, np.c_[grid[:, :3], np.full(len(grid), 0.3)])
    victim = sorted((list_scenarios(data)[0] / "VOXEL_GRID").iterdir())[0]
    victim.write_bytes(b"broken")
    with pytest.raises(FrameError, match="VOXEL_GRID"):
        evaluate_folder(data, pred, cfg.LABELS, cfg.EVAL_GRID)
    summary, _ = evaluate_folder(data, pred, cfg.LABELS, cfg.EVAL_GRID, bad_frame_policy="skip")
    assert summary["bad_frames"] == [str(victim)] and summary["frames"] == 7


def test_set_replaces_an_open_mapping():
    from pcdet_anomaly.config import load_config
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml",
                      ["DATA_CONFIG.SPLIT.LISTS", "{train: [Scenario_a], test: [Scenario_b]}",
                       "DATA_CONFIG.EVAL_GRID.Z_SHIFT", "-1.8"])
    assert cfg.DATA_CONFIG.SPLIT.LISTS == {"train": ["Scenario_a"], "test": ["Scenario_b"]}
    assert cfg.DATA_CONFIG.EVAL_GRID.Z_SHIFT == -1.8
