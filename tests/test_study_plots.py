"""The study's pictures and table are drawn from run records (benchmarks/run_study.py): the range-band picture orders
bands by distance and skips runs without range groups; the last epoch is scored on the test and validation
scenarios."""
import importlib.util

import numpy as np

from pcdet_anomaly.utils.common_utils import ROOT_DIR


def _run_study():
    spec = importlib.util.spec_from_file_location("run_study", ROOT_DIR / "benchmarks" / "run_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_range_band_picture(tmp_path, monkeypatch):
    rs = _run_study()
    rec = lambda aps: {"per_range": {b: {"ap": a} for b, a in aps.items()}}
    results = {"fusion/seed0": rec({"range:10-20m": 0.1, "range:0-5m": 0.9, "range:5-10m": 0.5, "range:20m+": 0.0}),
               "fusion/seed1": rec({"range:10-20m": 0.2, "range:0-5m": 0.8, "range:5-10m": 0.4, "range:20m+": 0.1}),
               "lidar_only/seed0": {"pooled": {}}, "done:fusion/seed0": True}
    drawn = {}
    import matplotlib.axes
    orig = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, x, h, *a, label=None, **k:
                        drawn.setdefault(label, np.asarray(h)) is None or orig(self, x, h, *a, label=label, **k))
    path = rs.plot_range_bands(results, tmp_path / "bands.png")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
    assert list(drawn) == ["0-5m", "5-10m", "10-20m", "20m+"]           # by distance, not alphabetically
    assert np.allclose(drawn["0-5m"], [0.85]) and np.allclose(drawn["10-20m"], [0.15])   # mean over seeds
    assert rs.plot_range_bands({"x/seed0": {"pooled": {}}}, tmp_path / "none.png") is None


def _metrics(ap, auroc=0.9):
    pooled = {"all": {"ap": ap, "auroc": auroc, "fpr95": 0.1}}
    return {"policies": {"zero": {"pooled": pooled, "scene_mean": {}}, "intersect": {"pooled": pooled}},
            "coverage": {"range": "50 m", "gt_voxels": 10, "anomaly_voxels": 2, "gt_fraction_predicted": 1.0,
                         "anomaly_fraction_predicted": 1.0}, "per_scene": {"s1": {}, "s2": {}}}


def _run_folder(root, best_ap, last_ap, val_aps, epochs=6, regime="supervised", score="max_logit"):
    import json

    import yaml
    for ck, ap in (("best", best_ap), ("latest", last_ap)):
        if ap is not None:
            (root / "eval" / ck / "test").mkdir(parents=True)
            (root / "eval" / ck / "test" / "metrics.json").write_text(json.dumps(_metrics(ap)))
    history = [{"epoch": e, "ap": a, "auroc": 0.95} for e, a in val_aps]
    (root / "val_history.json").write_text(json.dumps(history))
    cfg = {"OPTIMIZATION": {"NUM_EPOCHS": epochs}, "MODEL": {"REGIME": regime, "HEAD": {"NORMALITY_SCORE": score}}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_last_epoch_on_two_held_out_sets(tmp_path):
    """A run's record holds the last epoch's AP on the test scenarios (latest.pth tested) and on the validation
    scenarios (the history's entry of the last epoch, not its best), and their mean; the table shows them."""
    rs = _run_study()
    a = _run_folder(tmp_path / "a", 0.5, 0.6, [(3, 0.9), (6, 0.4)])       # validation's best (0.9) is not the last
    rec = rs.run_record(a)
    assert rec["pooled"]["ap"] == 0.5
    last = rec["last_epoch"]
    assert (last["test_ap"], last["val_ap"], last["epoch"]) == (0.6, 0.4, 6)
    assert np.isclose(last["mean_ap"], 0.5)
    # a history that stops before the last epoch (an interrupted run) gives no validation AP, not a wrong one
    b = _run_folder(tmp_path / "b", 0.5, 0.6, [(3, 0.9)])
    assert rs.run_record(b)["last_epoch"]["val_ap"] is None and rs.run_record(b)["last_epoch"]["mean_ap"] is None
    # a normality run tested with another score than it validated with: that score has no validation AP
    c = _run_folder(tmp_path / "c", 0.2, 0.3, [(6, 0.25)], regime="normality", score="energy")
    assert rs.run_record(c, score="entropy")["last_epoch"]["val_ap"] is None
    assert rs.run_record(c, score="energy")["last_epoch"]["val_ap"] == 0.25
    # without a test of latest.pth there is no last-epoch record
    d = _run_folder(tmp_path / "d", 0.5, None, [(6, 0.4)])
    assert rs.run_record(d)["last_epoch"] is None
    e = _run_folder(tmp_path / "e", 0.7, 0.8, [(6, 0.6)])
    results = {"fusion/seed0": rs.run_record(a), "fusion/seed1": rs.run_record(e), "done:fusion/seed0": True}
    text = rs.table(results)
    header, row = text.splitlines()[0], text.splitlines()[2]
    assert "last epoch: AP validation" in header and "last epoch: mean of the two" in header
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[-3:] == ["0.700 ± 0.141", "0.500 ± 0.141", "0.600 ± 0.141"]
