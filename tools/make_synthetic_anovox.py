#!/usr/bin/env python
"""Write a synthetic AnoVox dataset in the Gen-B layout.

    python tools/make_synthetic_anovox.py --out data/anovox_synth --scenarios 12 --frames 10 --seed 0
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcdet_anomaly.datasets.synthetic import SHAPE_FAMILIES, GeneratorConfig, generate_dataset  # noqa: E402
from pcdet_anomaly.datasets.synthetic.sensors import CameraSpec, LidarSpec  # noqa: E402
from pcdet_anomaly.utils.common_utils import resolve_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/anovox_synth", help="output root (relative: to the repo root)")
    parser.add_argument("--scenarios", type=int, default=12)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anomaly_fraction", type=float, default=0.7)
    parser.add_argument("--families", nargs="+", default=list(SHAPE_FAMILIES), choices=SHAPE_FAMILIES)
    parser.add_argument("--families_per_scenario", type=int, default=2)
    parser.add_argument("--azimuth_steps", type=int, default=1800)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--image_size", type=int, nargs=2, default=[512, 768], metavar=("H", "W"))
    parser.add_argument("--semantickitti_out", default=None,
                        help="also write the set in the SemanticKITTI / STU layout there (tools/anovox_to_semantickitti.py)")
    args = parser.parse_args(argv)
    cfg = GeneratorConfig(scenarios=args.scenarios, frames=args.frames, seed=args.seed,
                          anomaly_fraction=args.anomaly_fraction, families=tuple(args.families),
                          families_per_scenario=args.families_per_scenario,
                          lidar=LidarSpec(channels=args.channels, azimuth_steps=args.azimuth_steps),
                          camera=CameraSpec(height=args.image_size[0], width=args.image_size[1]))
    out = resolve_path(args.out) if not Path(args.out).is_absolute() else Path(args.out)
    start = time.time()
    summaries = generate_dataset(out, cfg)
    made = sum(not s["skipped"] for s in summaries)
    with_anomaly = sum(bool(s.get("anomalies")) for s in summaries if not s["skipped"])
    print(f"wrote {made} scenarios ({with_anomaly} with anomalies, {len(summaries) - made} already present) "
          f"x {args.frames} frames to {out} in {time.time() - start:.1f} s")
    if args.semantickitti_out:
        from pcdet_anomaly.config import load_config
        from pcdet_anomaly.datasets.semantickitti.convert import convert_anovox
        from pcdet_anomaly.utils.common_utils import ROOT_DIR
        sk = resolve_path(args.semantickitti_out)
        names = convert_anovox(out, sk, load_config(ROOT_DIR / "cfgs/dataset_configs/anovox_synth.yaml").DATA_CONFIG)
        print(f"wrote {len(names)} sequences in the SemanticKITTI layout to {sk}")


if __name__ == "__main__":
    main()
