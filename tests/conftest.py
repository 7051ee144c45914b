import os
import sys
from pathlib import Path

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic AnoVox set at full sensor resolution: 4 scenarios x 2 frames (1 normality at least)."""
    from pcdet_anomaly.datasets.synthetic import GeneratorConfig, generate_dataset
    root = tmp_path_factory.mktemp("anovox_synth")
    cfg = GeneratorConfig(scenarios=4, frames=2, seed=3, anomaly_fraction=0.75)
    summaries = generate_dataset(root, cfg, progress=False)
    return root, summaries
