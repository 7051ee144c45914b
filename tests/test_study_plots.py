"""The study's pictures are drawn from run records (benchmarks/run_study.py): the range-band picture orders bands by
distance and skips runs without range groups."""
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
