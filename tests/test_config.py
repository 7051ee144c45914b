import textwrap
from pathlib import Path

import pytest

from pcdet_anomaly.config import ConfigError, cfg_from_list, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_inheritance_across_folders_resolves_relative_to_including_file(tmp_path, monkeypatch):
    write(tmp_path / "a" / "base.yaml", """
        OPTIMIZATION:
          LR: 0.01
          NUM_EPOCHS: 3
    """)
    child = write(tmp_path / "b" / "c" / "child.yaml", """
        _BASE_CONFIG_: ../../a/base.yaml
        OPTIMIZATION:
          NUM_EPOCHS: 7
    """)
    monkeypatch.chdir(tmp_path / "b")   # working directory must not matter
    cfg = load_config(child)
    assert cfg.OPTIMIZATION.LR == 0.01
    assert cfg.OPTIMIZATION.NUM_EPOCHS == 7
    assert cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU == 2      # from the schema
    assert cfg.CFG_TAG == "child"


def test_overrides_are_type_checked(tmp_path):
    cfg = load_config(write(tmp_path / "c.yaml", "TRAIN:\n  SEED: 3\n"))
    cfg_from_list(["OPTIMIZATION.LR", "0.5", "MODEL.FUSION.MODE", "concat", "OPTIMIZATION.NUM_EPOCHS", "2"], cfg)
    assert cfg.OPTIMIZATION.LR == 0.5 and cfg.MODEL.FUSION.MODE == "concat" and cfg.OPTIMIZATION.NUM_EPOCHS == 2
    cfg_from_list(["OPTIMIZATION.LR", "1"], cfg)        # an int is a valid float
    assert isinstance(cfg.OPTIMIZATION.LR, float)
    with pytest.raises(ConfigError, match=r"OPTIMIZATION\.NUM_EPOCHS: expected int"):
        cfg_from_list(["OPTIMIZATION.NUM_EPOCHS", "two"], cfg)
    with pytest.raises(ConfigError, match=r"unknown key 'OPTIMIZATION\.LRR'"):
        cfg_from_list(["OPTIMIZATION.LRR", "0.1"], cfg)
    with pytest.raises(ConfigError, match="odd number"):
        cfg_from_list(["OPTIMIZATION.LR"], cfg)


def test_unknown_key_names_path_and_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "MODEL:\n  FUSION:\n    NUM_HEDS: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "MODEL.FUSION.NUM_HEDS" in str(err.value) and str(bad) in str(err.value)
    assert "NUM_HEADS" in str(err.value)       # the known keys are listed


def test_wrong_type_names_path_and_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "OPTIMIZATION:\n  GRAD_CLIP: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: OPTIMIZATION\.GRAD_CLIP: expected float"):
        load_config(bad)


def test_missing_base_cycle_and_malformed(tmp_path):
    missing = write(tmp_path / "m.yaml", "_BASE_CONFIG_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml' not found"):
        load_config(missing)
    write(tmp_path / "x.yaml", "_BASE_CONFIG_: y.yaml\n")
    write(tmp_path / "y.yaml", "_BASE_CONFIG_: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.yaml")
    broken = write(tmp_path / "broken.yaml", "MODEL: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: malformed YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    scalar = write(tmp_path / "scalar.yaml", "3\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_open_mapping_accepts_any_keys_and_roundtrips(tmp_path):
    cfg_path = write(tmp_path / "lists.yaml", """
        DATA_CONFIG:
          SPLIT:
            MODE: lists
            LISTS: {train: [s1], val: [s2], test: [s3]}
    """)
    cfg = load_config(cfg_path)
    assert cfg.DATA_CONFIG.SPLIT.LISTS.train == ["s1"]
    save_config(cfg, tmp_path / "out" / "cfg.yaml")
    again = load_config(tmp_path / "out" / "cfg.yaml")
    assert again.DATA_CONFIG.SPLIT.LISTS == cfg.DATA_CONFIG.SPLIT.LISTS
    assert again.OPTIMIZATION == cfg.OPTIMIZATION


def test_every_shipped_config_loads():
    cfgs = sorted((ROOT / "cfgs").rglob("*.yaml"))
    assert cfgs, "no configs shipped"
    for path in cfgs:
        load_config(path)
