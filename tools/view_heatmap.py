#!/usr/bin/env python
"""Show anomaly scores of a frame as a voxel heatmap (open3d), or save pictures of it.

    # predictions written by tools/test.py (a folder or one file), interactive window
    python tools/view_heatmap.py --data data/anovox_synth --pred output/.../predictions --scene 0
    # headless picture (starts xvfb-run itself when there is no display), PLY export, camera/BEV overlay
    python tools/view_heatmap.py --data ... --pred ... --save out.png --export out.ply --overlay overlay.png
    # run a checkpoint on the frame first
    python tools/view_heatmap.py --data ... --cfg cfgs/anovox/cylinder_fusion_cpu.yaml --ckpt .../best.pth --save x.png

Keys (window): N / P next / previous frame, G prediction / ground truth / difference, + / - threshold, Q quit.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import cuda_ops  # noqa: E402
from pcdet_anomaly.config import load_config  # noqa: E402
from pcdet_anomaly.datasets.anovox.labels import TargetMapper  # noqa: E402
from pcdet_anomaly.datasets.anovox.reader import ScenarioReader, frame_id_of, list_scenarios  # noqa: E402
from pcdet_anomaly.datasets.anovox.zshift import resolve_z_shift  # noqa: E402
from pcdet_anomaly.evaluation import frame_ground_truth, linear_key  # noqa: E402
from pcdet_anomaly.utils.common_utils import ROOT_DIR, resolve_path  # noqa: E402
from pcdet_anomaly.utils.heatmap_viewer import (FrameScores, ensure_display, export_ply, interactive,  # noqa: E402
                                                render_png)
from pcdet_anomaly.utils.visualization import save_frame_heatmap  # noqa: E402


def voxel_centres(voxels: np.ndarray, eg, z_shift: float) -> np.ndarray:
    return (voxels.astype(np.float64) + 0.5) * eg.VOXEL_SIZE - np.asarray(eg.OFFSET) - np.array([0, 0, z_shift])


class FrameSource:
    """Frames of one scenario with their predicted voxel scores (from files or a model)."""

    def __init__(self, args, cfg):
        self.cfg, self.args = cfg, args
        self.eg = cfg.DATA_CONFIG.EVAL_GRID
        scenarios = list_scenarios(resolve_path(args.data))
        if args.scene.isdigit():
            self.reader = ScenarioReader(scenarios[int(args.scene)])
        else:
            self.reader = ScenarioReader(resolve_path(args.data) / args.scene)
        labels = cfg.DATA_CONFIG.LABELS
        self.targets = TargetMapper(labels.ANOMALY_IDS, labels.IGNORE_IDS, labels.IGNORE_INDEX)
        self.frames = self.reader.frames
        self.z_shift = resolve_z_shift(self.reader, self.eg) if self.reader.layout != "gt_only" else 0.0
        self.model = None
        if args.ckpt:
            from pcdet_anomaly.engine.checkpoint import inference_state, load_checkpoint, load_model_weights
            from pcdet_anomaly.models import build_network
            self.model = build_network(cfg.MODEL, cfg.DATA_CONFIG).eval()
            load_model_weights(self.model, inference_state(load_checkpoint(args.ckpt)))

    def prediction(self, frame: int):
        if self.model is not None:
            return self._run_model(frame)
        pred = resolve_path(self.args.pred)
        if pred.is_dir():
            folder = pred / self.reader.name if (pred / self.reader.name).is_dir() else pred
            files = [f for f in folder.glob("*.npy") if frame_id_of(f) == frame]
            if not files:
                raise SystemExit(f"{folder}: no prediction for frame {frame} of {self.reader.name}")
            pred = files[0]
        arr = np.load(pred)
        if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
            raise SystemExit(f"{pred}: expected voxel predictions (M, 4) [ix, iy, iz, score] with M > 0, got "
                             f"{arr.shape}: nothing to show")
        return arr[:, :3].astype(np.int64), arr[:, 3].astype(np.float64)

    def _run_model(self, frame: int):
        from pcdet_anomaly.datasets import build_dataset, collate_batch
        cfg = self.cfg
        if not hasattr(self, "_dataset"):
            cfg.DATA_CONFIG.DATA_PATH = str(resolve_path(self.args.data))
            self._dataset = build_dataset(cfg.DATA_CONFIG, "all", training=False)
        index = self._dataset.frames.index((self.reader.name, frame))
        with torch.no_grad():
            out = self.model(collate_batch([self._dataset[index]]))
        vox, sc = cuda_ops.eval_grid_scores(out["points"][:, 1:4].double(), out["point_scores"].double(), "nearest",
                                            self.eg.VOXEL_SIZE, self.eg.GRID_SIZE, self.eg.OFFSET, self.z_shift)
        return vox.numpy(), sc.numpy()

    def __call__(self, index: int) -> FrameScores:
        frame = self.frames[index]
        voxels, scores = self.prediction(frame)
        gt_vox, _, gt_lab = frame_ground_truth(self.reader, frame, self.targets, "voxel_grid", -1.0, self.eg)
        gt = np.full(len(voxels), -1, dtype=np.int64)
        order = np.argsort(linear_key(gt_vox))
        keys = linear_key(gt_vox)[order]
        pos = np.clip(np.searchsorted(keys, linear_key(voxels)), 0, max(len(keys) - 1, 0))
        hit = keys[pos] == linear_key(voxels) if len(keys) else np.zeros(len(voxels), bool)
        gt[hit] = gt_lab[order][pos[hit]]
        return FrameScores(f"{self.reader.name[:17]} frame {frame}", voxel_centres(voxels, self.eg, self.z_shift),
                           scores, gt,
                           self.eg.VOXEL_SIZE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="AnoVox dataset root")
    parser.add_argument("--scene", default="0", help="scenario folder name or index")
    parser.add_argument("--frame", type=int, default=None, help="frame id (default: the first)")
    parser.add_argument("--pred", default=None, help="prediction file or folder (AnoVox voxel format)")
    parser.add_argument("--cfg", default=str(ROOT_DIR / "cfgs/anovox/cylinder_fusion_cpu.yaml"))
    parser.add_argument("--ckpt", default=None, help="run this checkpoint on the frame instead of --pred")
    parser.add_argument("--set", dest="set_cfgs", nargs="+", default=None)
    parser.add_argument("--mode", choices=["prediction", "gt", "difference"], default="prediction")
    parser.add_argument("--threshold", type=float, default=0.0)
    parser.add_argument("--save", default=None, help="render off-screen to this PNG")
    parser.add_argument("--size", type=int, nargs=2, default=[1280, 720], metavar=("W", "H"))
    parser.add_argument("--export", default=None, help="write a coloured PLY")
    parser.add_argument("--overlay", default=None, help="camera overlay + bird's-eye PNG (matplotlib)")
    args = parser.parse_args(argv)
    if not args.pred and not args.ckpt:
        parser.error("give --pred (predictions) or --ckpt (a model to run)")
    if args.save:
        ensure_display()      # may re-run this command under xvfb-run: before any file is written
    cfg = load_config(args.cfg, args.set_cfgs)
    source = FrameSource(args, cfg)
    index = source.frames.index(args.frame) if args.frame is not None else 0
    frame = source(index)
    if args.export:
        print(f"wrote {export_ply(frame, Path(args.export))} ({len(frame.centres)} voxels)")
    if args.overlay:
        reader, fid = source.reader, source.frames[index]
        cal = reader.calibration
        uv, _, valid = cuda_ops.project_to_image(torch.from_numpy(frame.centres), torch.from_numpy(cal.intrinsics),
                                                 torch.from_numpy(cal.lidar_to_cam), cal.image_hw)
        valid = valid.numpy()
        save_frame_heatmap(args.overlay, frame.centres, frame.scores, np.where(frame.gt == 1, 1, 0),
                           reader.read_rgb(fid), uv.numpy()[valid], frame.scores[valid], title=frame.name)
        print(f"wrote {args.overlay}")
    if args.save:
        print(f"wrote {render_png(frame, Path(args.save), tuple(args.size), args.mode, args.threshold)}")
    if not (args.save or args.export or args.overlay):
        import os
        if not os.environ.get("DISPLAY"):
            raise SystemExit("no display for the interactive window: use --save out.png (headless) or run under "
                             "a desktop / `xvfb-run -a` with a VNC viewer")
        interactive(source, index, len(source.frames))


if __name__ == "__main__":
    main()
