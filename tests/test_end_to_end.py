"""A short end-to-end training on a tiny generated set: validation AUROC must end clearly above chance and above
its value at the first evaluation (the untrained model)."""
import json

import torch

from pcdet_anomaly.config import load_config
from pcdet_anomaly.datasets.synthetic import GeneratorConfig, generate_dataset
from pcdet_anomaly.engine.trainer import Trainer
from pcdet_anomaly.utils.common_utils import ROOT_DIR, create_logger, set_random_seed


def test_short_training_learns(tmp_path):
    gen = GeneratorConfig(scenarios=6, frames=3, seed=21, anomaly_fraction=1.0, families=("crate", "barrel", "cone"),
                          families_per_scenario=1)
    gen.lidar.azimuth_steps = 900
    gen.camera.width, gen.camera.height = 384, 256
    summaries = generate_dataset(tmp_path / "data", gen, progress=False)
    names = [s["name"] for s in summaries]
    cfg = load_config(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml")
    d = cfg.DATA_CONFIG
    d.DATA_PATH = str(tmp_path / "data")
    d.SPLIT.MODE, d.SPLIT.LISTS = "lists", {"train": names[:4], "val": names[4:], "test": []}
    d.MAX_POINTS, d.VOXELIZE.GRID_SIZE, d.IMAGE.SIZE = 8000, [60, 60, 8], [128, 192]
    cfg.MODEL.BACKBONE_3D.INIT_SIZE = 4
    cfg.MODEL.FUSION.EMBED_DIM, cfg.MODEL.FUSION.FFN_DIM = 16, 32
    cfg.OPTIMIZATION.NUM_EPOCHS, cfg.OPTIMIZATION.LR = 6, 0.005
    cfg.TRAIN.NUM_WORKERS, cfg.TRAIN.EVAL_BEFORE_TRAINING = 0, True
    set_random_seed(0)
    trainer = Trainer(cfg, tmp_path / "run", create_logger(), torch.device("cpu"), progress=False)
    result = trainer.train()
    aurocs = [r["auroc"] for r in result["val_history"]]
    assert len(aurocs) == 7, aurocs
    assert aurocs[-1] > 0.8, aurocs
    assert aurocs[-1] > aurocs[0] + 0.05, aurocs
    assert not json.loads((tmp_path / "run" / "guard.json").read_text())["events"]
