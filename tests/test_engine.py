import json
import os
import subprocess
import sys

import pytest
import torch

from pcdet_anomaly.config import load_config, save_config
from pcdet_anomaly.engine.checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint
from pcdet_anomaly.engine.guard import GuardStop
from pcdet_anomaly.engine.trainer import Trainer
from pcdet_anomaly.utils.common_utils import ROOT_DIR, create_logger, set_random_seed


def tiny_cfg(synth_root, epochs=2):
    root, summaries = synth_root
    anomalous = [s["name"] for s in summaries if s["anomalies"]]
    normal = [s["name"] for s in summaries if not s["anomalies"]]
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml")
    d = cfg.DATA_CONFIG
    d.DATA_PATH = str(root)
    d.SPLIT.MODE = "lists"
    assert len(anomalous) >= 3 and normal, "the session fixture should hold 3 anomaly scenarios and 1 normal one"
    d.SPLIT.LISTS = {"train": [anomalous[0]] + normal[:1], "val": [anomalous[1]], "test": [anomalous[2]]}
    d.MAX_POINTS, d.VOXELIZE.GRID_SIZE, d.IMAGE.SIZE = 3000, [40, 40, 8], [64, 96]
    cfg.MODEL.BACKBONE_3D.INIT_SIZE = 4
    cfg.MODEL.FUSION.EMBED_DIM, cfg.MODEL.FUSION.FFN_DIM = 16, 32
    cfg.OPTIMIZATION.NUM_EPOCHS, cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU = epochs, 2
    cfg.TRAIN.NUM_WORKERS, cfg.TRAIN.LOG_EVERY = 0, 1
    return cfg


def make_trainer(cfg, out, **kw):
    set_random_seed(cfg.TRAIN.SEED)
    return Trainer(cfg, out, create_logger(out / "log_train.txt"), torch.device("cpu"), progress=False, **kw)


def test_two_epoch_run_writes_every_artefact_and_tools_read_them(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root)
    cfg_file = tmp_path / "tiny.yaml"
    save_config(cfg, cfg_file)
    run = tmp_path / "run"
    sys.path.insert(0, str(ROOT_DIR / "tools"))
    import monitor
    import test as test_tool
    import train as train_tool
    result = train_tool.main(["--cfg", str(cfg_file), "--output_dir", str(run), "--no_progress"])
    assert result["status"] == "finished"
    for rel in ("config.yaml", "log_train.txt", "train_log.jsonl", "val_history.json", "guard.json",
                "run_state.json", "ckpt/latest.pth", "ckpt/best.pth", "ckpt/checkpoint_epoch_1.pth",
                "ckpt/checkpoint_epoch_2.pth", "plots/curves.png", "plots/heatmap_epoch_1.png",
                "plots/heatmap_epoch_2.png", "eval/epoch_2/metrics.json"):
        assert (run / rel).is_file(), rel
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    history = json.loads((run / "val_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and 0.0 <= history[-1]["auroc"] <= 1.0
    state = load_checkpoint(run / "ckpt" / "latest.pth")
    assert state["epoch"] == 2 and state["config"]["OPTIMIZATION"]["NUM_EPOCHS"] == 2 and "version" in state
    # tools/test.py writes AnoVox-format predictions and a report
    out = test_tool.main(["--cfg", str(cfg_file), "--output_dir", str(run), "--no_progress", "--workers", "0"])
    preds = list((run / "eval" / "best" / "test" / "predictions").rglob("VOXEL_PRED_*.npy"))
    assert len(preds) == 2 and out["best.pth"]["pooled"]["all"]["num_pos"] > 0
    all_out = test_tool.main(["--cfg", str(cfg_file), "--output_dir", str(run), "--eval_all", "--no_progress",
                              "--workers", "0"])
    assert set(all_out) == {"checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth"}
    # --tta: the same checkpoint scored under two views (identity and the y mirror), recorded in the report
    tta = test_tool.main(["--cfg", str(cfg_file), "--output_dir", str(tmp_path / "tta"), "--ckpt",
                          str(run / "ckpt" / "best.pth"), "--tta", "--no_progress", "--workers", "0"])["best.pth"]
    saved = json.loads((tmp_path / "tta" / "eval" / "best" / "test" / "metrics.json").read_text())
    assert saved["test_augmentation"]["views"] == 2 == tta["test_augmentation"]["views"]
    assert tta["pooled"]["all"]["num_pos"] == out["best.pth"]["pooled"]["all"]["num_pos"]
    assert tta["score_stats"]["voxel_score_mean"] != out["best.pth"]["score_stats"]["voxel_score_mean"]
    text = monitor.summarise(run)
    assert "status: finished  epoch 2/2" in text and "validation:" in text and "learning guard" in text


def test_resume_after_interruption_equals_uninterrupted(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root)
    full = make_trainer(cfg, tmp_path / "a")
    full.train()
    part = make_trainer(cfg, tmp_path / "b")
    assert part.train(stop_after_epoch=1)["status"] == "interrupted"
    del part
    torch.manual_seed(1234)                     # the resumed run must not depend on the process's RNG state
    resumed = make_trainer(cfg, tmp_path / "b")
    resumed.resume()
    assert resumed.epoch == 1
    resumed.train()
    a = full.model.state_dict()
    b = resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["auroc"] for r in full.val_history] == [r["auroc"] for r in resumed.val_history]


def test_truncated_checkpoint_is_reported_and_previous_one_used(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root)
    trainer = make_trainer(cfg, tmp_path)
    trainer.train()
    latest = tmp_path / "ckpt" / "latest.pth"
    epoch2 = tmp_path / "ckpt" / "checkpoint_epoch_2.pth"
    for f in (latest, epoch2):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="latest.pth: unreadable checkpoint .* truncated"):
        load_checkpoint(latest)
    path, state = find_resume_checkpoint(tmp_path / "ckpt")
    assert path.name == "checkpoint_epoch_1.pth" and state["epoch"] == 1


def test_guard_fires_on_zero_loss(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, epochs=3)
    cfg.OPTIMIZATION.GUARD.STOP_ON_FAILURE = True
    trainer = make_trainer(cfg, tmp_path)
    head = trainer.model.head
    original = head.get_loss

    def zero_loss(batch_dict):
        loss, tb = original(batch_dict)
        return loss * 0.0, tb
    head.get_loss = zero_loss
    with pytest.raises(GuardStop, match="zero_loss"):
        trainer.train()
    guard = json.loads((tmp_path / "guard.json").read_text())
    assert guard["events"][0]["kind"] == "zero_loss"
    assert json.loads((tmp_path / "run_state.json").read_text())["status"] == "guard_stop"


def test_guard_skips_nan_steps_and_stops_with_advice(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, epochs=3)
    cfg.OPTIMIZATION.GUARD.MAX_NONFINITE_STEPS = 2
    trainer = make_trainer(cfg, tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    original = trainer.model.head.get_loss
    trainer.model.head.get_loss = lambda b: (original(b)[0] * float("nan"), {})
    with pytest.raises(GuardStop, match="non-finite losses in a row; lower OPTIMIZATION.LR"):
        trainer.train()
    after = trainer.model.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert not changed, "NaN steps must be skipped, not applied"


def test_guard_flags_chance_auroc_and_flat_loss():
    from easydict import EasyDict
    from pcdet_anomaly.engine.guard import LearningGuard
    cfg = EasyDict(ENABLED=True, STOP_ON_FAILURE=False, FLAT_WINDOW=2, FLAT_REL_TOL=1e-3, MIN_SCORE_STD=1e-4,
                   CHANCE_TOL=0.02, MAX_NONFINITE_STEPS=3, MIN_UPDATE_RATIO=1e-9)
    guard = LearningGuard(cfg)
    guard.check_epoch(1, 0.5, score_std=0.1, val_auroc=0.9)
    assert not guard.events
    guard.check_epoch(2, 0.5, score_std=1e-6, val_auroc=0.505)
    guard.check_epoch(3, 0.5, score_std=0.1, val_auroc=0.8)
    assert {e["kind"] for e in guard.events} == {"constant_scores", "chance_auroc", "flat_loss"}


def test_guard_chance_patience_ignores_one_transient_dip():
    """CHANCE_PATIENCE 2: one validation at chance followed by learning is not reported; two in a row are; one at the
    run's last epoch is, at once; the count survives a resume (state / load_state)."""
    from easydict import EasyDict
    from pcdet_anomaly.engine.guard import LearningGuard
    cfg = EasyDict(ENABLED=True, STOP_ON_FAILURE=False, FLAT_WINDOW=10, FLAT_REL_TOL=1e-3, MIN_SCORE_STD=1e-4,
                   CHANCE_TOL=0.02, CHANCE_PATIENCE=2, MAX_NONFINITE_STEPS=3, MIN_UPDATE_RATIO=1e-9)
    chance = lambda g: [e for e in g.events if e["kind"] == "chance_auroc"]
    guard = LearningGuard(cfg)
    for epoch, auroc in enumerate([0.9, 0.51, 0.92, 0.95], 1):      # the end-to-end run's shape: a dip, then learning
        guard.check_epoch(epoch, 1.0 / epoch, score_std=0.1, val_auroc=auroc)
    assert not chance(guard)
    guard = LearningGuard(cfg)
    guard.check_epoch(1, 1.0, score_std=0.1, val_auroc=0.505)
    guard.check_epoch(2, 0.9, score_std=0.1, val_auroc=None)         # no validation this epoch: the count holds
    assert not chance(guard)
    resumed = LearningGuard(cfg)
    resumed.load_state(guard.state())
    resumed.check_epoch(3, 0.8, score_std=0.1, val_auroc=0.49)
    assert [e["epoch"] for e in chance(resumed)] == [3]
    last = LearningGuard(cfg)
    last.check_epoch(1, 1.0, score_std=0.1, val_auroc=0.9)
    last.check_epoch(2, 0.9, score_std=0.1, val_auroc=0.51, last=True)
    assert [e["epoch"] for e in chance(last)] == [2]


def test_two_process_gloo_run_only_rank0_writes(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, epochs=1)
    cfg_file = tmp_path / "tiny.yaml"
    save_config(cfg, cfg_file)
    run = tmp_path / "dist"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT_DIR))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", str(ROOT_DIR / "tools" / "train.py"), "--launcher", "pytorch",
                           "--cfg", str(cfg_file), "--output_dir", str(run), "--no_progress", "--workers", "0"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in (run / "log_train.txt").read_text()
    assert "[rank 1]" not in (run / "log_train.txt").read_text()
    assert (run / "ckpt" / "latest.pth").is_file()
    state = load_checkpoint(run / "ckpt" / "latest.pth")
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["model_state"])


def test_model_ema_averages_float_entries_copies_integer_ones_and_ramps_its_decay():
    from pcdet_anomaly.engine.ema import ModelEMA
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    expected = {k: v.clone().double() for k, v in start.items() if v.dtype.is_floating_point}
    for n in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * (n + 1))
        net.train()(torch.randn(4, 3))                 # moves BatchNorm's running stats and its batch counter
        d = min(0.9, (1 + n + 1) / (10 + n + 1))
        assert ema.current_decay() == min(0.9, (1 + n) / (10 + n))
        ema.update(net)
        assert ema.updates == n + 1
        for k, v in net.state_dict().items():
            if k in expected:
                expected[k] = d * expected[k] + (1 - d) * v.double()
    for k, v in ema.state_dict().items():
        if k in expected:
            assert torch.allclose(v.double(), expected[k], atol=1e-5), k
            assert not torch.allclose(v, net.state_dict()[k]), k     # an average, not a copy
        else:
            assert torch.equal(v, net.state_dict()[k]), k           # num_batches_tracked
    assert all(not p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="EMA.DECAY"):
        ModelEMA(net, 1.0)


def test_ema_run_validates_and_tests_the_average_and_resumes_it_bitwise(synth_root, tmp_path):
    import importlib.util
    from pcdet_anomaly.engine.checkpoint import inference_state
    spec = importlib.util.spec_from_file_location("pcdet_test_tool", ROOT_DIR / "tools" / "test.py")
    test_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_tool)
    cfg = tiny_cfg(synth_root)
    cfg.OPTIMIZATION.EMA.ENABLED, cfg.OPTIMIZATION.EMA.DECAY = True, 0.9
    full = make_trainer(cfg, tmp_path / "a")
    full.train()
    state = load_checkpoint(tmp_path / "a" / "ckpt" / "latest.pth")
    assert state["extra"]["ema_updates"] == full.global_step > 0
    differs = [k for k, v in state["ema_state"].items() if v.dtype.is_floating_point
               and not torch.equal(v, state["model_state"][k])]
    assert differs and inference_state(state)["model_state"] is state["ema_state"]
    assert full.eval_model() is full.ema.module
    # interrupted after epoch 1 and resumed: the average continues exactly
    part = make_trainer(cfg, tmp_path / "b")
    part.train(stop_after_epoch=1)
    del part
    resumed = make_trainer(cfg, tmp_path / "b")
    resumed.resume()
    resumed.train()
    for key, value in full.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[key]), key
    assert [r["ap"] for r in full.val_history] == [r["ap"] for r in resumed.val_history]
    # tools/test.py predicts with the average: its numbers equal validation's on the same split
    cfg_file = tmp_path / "ema.yaml"
    save_config(cfg, cfg_file)
    out = test_tool.main(["--cfg", str(cfg_file), "--output_dir", str(tmp_path / "a"), "--split", "val", "--ckpt",
                          str(tmp_path / "a" / "ckpt" / "latest.pth"), "--no_progress", "--workers", "0"])
    assert abs(out["latest.pth"]["pooled"]["all"]["ap"] - full.val_history[-1]["ap"]) < 1e-9


@pytest.mark.parametrize("validation", [False, True])
def test_test_augmentation_reaches_the_validation_only_when_asked(synth_root, tmp_path, monkeypatch, validation):
    from pcdet_anomaly.models import tta
    calls = []
    original = tta.TestTimeAugmentation.__call__

    def counting(self, batch):
        calls.append(len(self.views))
        return original(self, batch)
    monkeypatch.setattr(tta.TestTimeAugmentation, "__call__", counting)
    cfg = tiny_cfg(synth_root, epochs=1)
    cfg.DATA_CONFIG.TEST_AUGMENTATION.ENABLED = True
    cfg.DATA_CONFIG.TEST_AUGMENTATION.VALIDATION = validation
    assert make_trainer(cfg, tmp_path).train()["status"] == "finished"
    assert bool(calls) == validation and all(c == 2 for c in calls)
