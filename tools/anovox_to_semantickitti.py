#!/usr/bin/env python
"""Convert an AnoVox set (Gen-B layout, e.g. our synthetic one) to the SemanticKITTI / STU layout.

    python tools/anovox_to_semantickitti.py --src data/anovox_synth --out data/semantickitti_synth

Scenario -> sequence 100, 101, ... (sequences.json maps them back); every LiDAR point -> velodyne/<frame>.bin;
its label -> labels/<frame>.label (SemanticKITTI raw ids, anomalies 2, ignored 0, one instance id per anomaly);
RGB -> image_2/, camera -> calib.txt (KITTI P2, Tr). See pcdet_anomaly/datasets/semantickitti/convert.py.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet_anomaly.config import load_config  # noqa: E402
from pcdet_anomaly.datasets.semantickitti.convert import convert_anovox  # noqa: E402
from pcdet_anomaly.utils.common_utils import ROOT_DIR, create_logger, resolve_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default="data/anovox_synth")
    parser.add_argument("--out", default="data/semantickitti_synth")
    parser.add_argument("--cfg", default=str(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml"),
                        help="AnoVox config giving LABELS and EVAL_GRID (point labels come from VOXEL_GRID)")
    parser.add_argument("--no_images", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg)
    names = convert_anovox(resolve_path(args.src), resolve_path(args.out), cfg.DATA_CONFIG, not args.no_images,
                           logger=create_logger())
    print(f"wrote {len(names)} sequences to {resolve_path(args.out)}")


if __name__ == "__main__":
    main()
