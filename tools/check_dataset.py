#!/usr/bin/env python
"""Summarise an AnoVox dataset folder: layouts, scenarios, frames, anomaly frames, label histogram, problems.

    python tools/check_dataset.py data/anovox_synth [--deep]      (--deep reads every file, not only names)
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pcdet_anomaly.datasets.anovox.labels import LABEL_NAMES  # noqa: E402
from pcdet_anomaly.datasets.anovox.reader import FrameError, ScenarioReader, list_scenarios  # noqa: E402
from pcdet_anomaly.datasets.anovox.zshift import detect_z_shift  # noqa: E402
from pcdet_anomaly.utils.common_utils import resolve_path  # noqa: E402


class _Grid:        # the AnoVox evaluation grid (DATA_CONFIG.EVAL_GRID defaults)
    VOXEL_SIZE, GRID_SIZE, OFFSET = 0.5, (1000, 1000, 64), (250.0, 250.0, 16.0)


def check(root: Path, deep: bool = False) -> dict:
    report = {"scenarios": 0, "frames": 0, "anomaly_frames": 0, "normality_scenarios": 0, "layouts": Counter(),
              "labels": Counter(), "problems": [], "z_shift": Counter(), "z_shift_detail": {}}
    for path in list_scenarios(root):
        try:
            reader = ScenarioReader(path)
        except FrameError as err:
            report["problems"].append(str(err))
            continue
        report["scenarios"] += 1
        report["layouts"][reader.layout] += 1
        report["frames"] += len(reader.frames)
        report["problems"] += [f"{path.name}: {p}" for p in reader.problems]
        anomaly_frames = [f for f in reader.frames if reader.has("anomaly", f)]
        report["problems"] += [f"{path.name}: {p}" for p in
                               reader.anomaly_file_problems()]      # every ANOMALY file: they are small
        report["anomaly_frames"] += len(anomaly_frames)
        report["normality_scenarios"] += not anomaly_frames
        if reader.layout != "gt_only":
            try:
                evidence = detect_z_shift(reader, _Grid)
            except FrameError as err:
                report["problems"].append(f"{path.name}: z shift: {err}")
            else:
                verdict = "undecided" if evidence.shift is None else f"{evidence.shift:+.2f} m"
                report["z_shift"][verdict] += 1
                report["z_shift_detail"][path.name] = evidence.describe()
                if evidence.shift is None:
                    report["problems"].append(f"{path.name}: VOXEL_GRID vertical convention cannot be told: "
                                              f"{evidence.describe()}")
        frames = reader.frames if deep else reader.frames[:1]
        for frame in tqdm(frames, desc=path.name[:17], leave=False, disable=not deep):
            try:
                grid = reader.read_voxel_grid(frame)
                report["labels"].update(dict(zip(*np.unique(grid[:, 3].astype(int), return_counts=True))))
                if deep:
                    reader.read_points(frame)
                    reader.read_semantic_points(frame)
                    reader.read_rgb(frame)
            except FrameError as err:
                report["problems"].append(str(err))
    return report


def format_report(report: dict, root: Path) -> str:
    lines = [f"dataset: {root}", f"scenarios: {report['scenarios']} ({report['normality_scenarios']} normality), "
             f"layouts {dict(report['layouts'])}",
             f"frames: {report['frames']}, with an anomaly: {report['anomaly_frames']}",
             f"VOXEL_GRID z shift (told from GT road voxels vs LiDAR road points, EVAL_GRID.Z_SHIFT auto): "
             f"{dict(report['z_shift']) or 'not measured (ground truth only)'}",
             "voxel labels (first frame of each scenario unless --deep):"]
    total = sum(report["labels"].values()) or 1
    for label, count in sorted(report["labels"].items()):
        lines.append(f"  {label:4d} {LABEL_NAMES.get(label, '?'):16s} {count:9d}  {100 * count / total:6.2f}%")
    if len(report["z_shift"]) > 1:
        lines.append("  the scenarios disagree on the z shift: Z_SHIFT auto handles each on its own")
        lines += [f"  {name[:30]}: {d}" for name, d in report["z_shift_detail"].items()]
    lines.append(f"problems: {len(report['problems'])}")
    lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--deep", action="store_true")
    args = parser.parse_args(argv)
    root = resolve_path(args.root)
    report = check(root, args.deep)
    print(format_report(report, root))
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["problems"] else 0)
