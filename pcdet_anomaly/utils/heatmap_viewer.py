"""open3d anomaly heatmaps: coloured voxels (or points), ground-truth anomalies outlined, the ego sensor marked.

Rendering needs an OpenGL context: a display, or Xvfb (`xvfb-run -a python tools/view_heatmap.py ...`);
`ensure_display()` restarts the current command under xvfb-run when there is no display and xvfb-run exists.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .visualization import save_figure

__all__ = ["FrameScores", "scores_to_colours", "ensure_display", "build_geometries", "render_png", "export_ply",
           "interactive"]


@dataclass
class FrameScores:
    """One frame's voxels on the evaluation grid: centres [M, 3] (sensor frame, metres), scores [M], gt [M] (1
    anomaly / 0 normal / -1 no ground truth)."""
    name: str
    centres: np.ndarray
    scores: np.ndarray
    gt: np.ndarray
    voxel_size: float = 0.5


def scores_to_colours(scores: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "inferno") -> np.ndarray:
    import matplotlib
    norm = np.clip((np.asarray(scores, dtype=np.float64) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    return matplotlib.colormaps[cmap](norm)[:, :3]


def ensure_display() -> None:
    """Re-run this process under xvfb-run when no display is available; explain when that is impossible."""
    if os.environ.get("DISPLAY") or os.environ.get("PCDET_NO_XVFB_REEXEC"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        raise SystemExit("no display and no xvfb-run: install it (apt-get install xvfb) or run on a machine with a "
                         "display; `make setup` installs it")
    os.environ["PCDET_NO_XVFB_REEXEC"] = "1"
    os.execv(xvfb, [xvfb, "-a", sys.executable] + sys.argv)


def build_geometries(frame: FrameScores, mode: str = "prediction", threshold: float = 0.0):
    """mode: prediction (scores), gt (ground truth), difference (|score - gt|). Voxels below `threshold` are
    drawn grey. Returns open3d geometries."""
    import open3d as o3d
    if len(frame.centres) == 0:
        raise ValueError(f"{frame.name}: no voxels to show (empty prediction?)")
    has_gt = frame.gt >= 0
    if mode == "prediction":
        values = frame.scores
    elif mode == "gt":
        values = np.where(has_gt, frame.gt.astype(np.float64), 0.0)
    elif mode == "difference":
        values = np.where(has_gt, np.abs(frame.scores - frame.gt), 0.0)
    else:
        raise ValueError(f"mode must be prediction, gt or difference, got {mode!r}")
    colours = scores_to_colours(values)
    colours[values < threshold] = 0.35
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(frame.centres.astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(colours)
    voxels = o3d.geometry.VoxelGrid.create_from_point_cloud(cloud, voxel_size=frame.voxel_size)
    geoms = [voxels]
    anomalous = frame.centres[frame.gt == 1]
    if len(anomalous):       # ground-truth anomalies outlined with cyan boxes
        half = frame.voxel_size / 2
        boxes = o3d.geometry.LineSet()
        for c in anomalous:
            box = o3d.geometry.AxisAlignedBoundingBox(c - half, c + half)
            boxes += o3d.geometry.LineSet.create_from_axis_aligned_bounding_box(box)
        boxes.paint_uniform_color([0.0, 0.9, 1.0])
        geoms.append(boxes)
    ego = o3d.geometry.TriangleMesh.create_coordinate_frame(size=2.0)
    geoms.append(ego)
    return geoms


def _set_view(vis, frame: FrameScores):
    ctr = vis.get_view_control()
    ctr.set_lookat([15.0, 0.0, -1.0])
    ctr.set_front([-0.75, 0.0, 0.65])
    ctr.set_up([0.65, 0.0, 0.75])
    ctr.set_zoom(0.25)
    opt = vis.get_render_option()
    opt.background_color = np.array([0.06, 0.06, 0.08])
    opt.point_size = 3.0


def render_png(frame: FrameScores, out_path: Path, size=(1280, 720), mode: str = "prediction",
               threshold: float = 0.0, title: str = "") -> Path:
    """Off-screen render plus a colour bar, as a PNG of exactly `size` pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import open3d as o3d
    geoms = build_geometries(frame, mode, threshold)
    width, height = size
    render_w = int(width * 0.9)
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(width=render_w, height=height, visible=False):
        raise RuntimeError("open3d could not create an OpenGL window: run under xvfb-run or with a display")
    for g in geoms:
        vis.add_geometry(g)
    _set_view(vis, frame)
    vis.poll_events()
    vis.update_renderer()
    image = np.asarray(vis.capture_screen_float_buffer(do_render=True))
    vis.destroy_window()
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes([0.0, 0.0, render_w / width, 1.0])
    ax.imshow(image)
    ax.axis("off")
    ax.set_title(title or f"{frame.name} ({mode})", color="white", fontsize=10, y=0.96)
    cax = fig.add_axes([render_w / width + 0.02, 0.1, 0.025, 0.8])
    sm = plt.cm.ScalarMappable(cmap="inferno", norm=matplotlib.colors.Normalize(0, 1))
    cbar = fig.colorbar(sm, cax=cax)
    cbar.set_label({"prediction": "anomaly score", "gt": "ground truth", "difference": "|score - gt|"}[mode])
    fig.patch.set_facecolor("#0f0f14")
    cax.tick_params(colors="white")
    cbar.ax.yaxis.label.set_color("white")
    return save_figure(fig, out_path, tight=False, facecolor=fig.get_facecolor())


def export_ply(frame: FrameScores, out_path: Path) -> Path:
    """Voxel centres coloured by score (inferno), readable by open3d, MeshLab, CloudCompare."""
    import open3d as o3d
    if len(frame.centres) == 0:
        raise ValueError(f"{frame.name}: no voxels to export (empty prediction?)")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(frame.centres.astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(scores_to_colours(frame.scores))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(out_path), cloud):
        raise OSError(f"{out_path}: open3d could not write the PLY")
    return out_path


def interactive(frames_provider, start: int, count: int) -> None:
    """Window with keys: N / P next / previous frame, G cycles prediction / ground truth / difference,
    + / - raise / lower the score threshold, Q quits."""
    import open3d as o3d
    state = {"index": start, "mode": 0, "threshold": 0.0}
    modes = ("prediction", "gt", "difference")
    vis = o3d.visualization.VisualizerWithKeyCallback()
    vis.create_window("pcdet_anomaly heatmap", 1280, 800)

    def redraw(first=False):
        frame = frames_provider(state["index"])
        vis.clear_geometries()
        for g in build_geometries(frame, modes[state["mode"]], state["threshold"]):
            vis.add_geometry(g, reset_bounding_box=first)
        if first:
            _set_view(vis, frame)
        print(f"[{state['index'] + 1}/{count}] {frame.name}  mode={modes[state['mode']]}  "
              f"threshold={state['threshold']:.2f}", flush=True)
        return False

    def step(delta):
        def cb(_vis):
            state["index"] = (state["index"] + delta) % count
            return redraw()
        return cb

    def cycle(_vis):
        state["mode"] = (state["mode"] + 1) % 3
        return redraw()

    def thresh(delta):
        def cb(_vis):
            state["threshold"] = float(np.clip(state["threshold"] + delta, 0.0, 1.0))
            return redraw()
        return cb

    vis.register_key_callback(ord("N"), step(1))
    vis.register_key_callback(ord("P"), step(-1))
    vis.register_key_callback(ord("G"), cycle)
    vis.register_key_callback(ord("="), thresh(0.05))
    vis.register_key_callback(ord("-"), thresh(-0.05))
    redraw(first=True)
    vis.run()
    vis.destroy_window()
