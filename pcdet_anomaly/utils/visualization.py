"""Pictures a person would rather look at: bird's-eye heatmaps, camera overlays, training curves (matplotlib)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["bev_heatmap_axes", "camera_overlay_axes", "save_frame_heatmap", "save_training_curves"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def bev_heatmap_axes(ax, xyz, scores, labels=None, max_range=50.0, title="", vmin=0.0, vmax=1.0, cmap="inferno"):
    """Points (or voxel centres) seen from above: the structure in grey by height, anomaly scores above 5 % of the
    colour range on top (hotter = larger, drawn last); ground-truth anomalies circled."""
    keep = (np.abs(xyz[:, 0]) < max_range) & (np.abs(xyz[:, 1]) < max_range)
    # the scene's structure in grey, brighter with height (what a low score would paint black on black) ...
    height = np.clip((xyz[keep, 2] - np.percentile(xyz[keep, 2], 2)) / 4.0, 0, 1) if keep.any() else np.zeros(0)
    ax.scatter(xyz[keep, 0], xyz[keep, 1], c=np.stack([0.35 + 0.45 * height] * 3, 1) if keep.any() else "grey",
               s=0.4, linewidths=0)
    # ... and the scores on top: points above 5 % of the range, hotter and larger drawn last
    hot = keep & (scores >= vmin + 0.05 * (vmax - vmin))
    order = np.argsort(scores[hot])
    s_hot = scores[hot][order]
    sc = ax.scatter(xyz[hot, 0][order], xyz[hot, 1][order], c=s_hot, s=1.0 + 8.0 * (s_hot - vmin) / (vmax - vmin),
                    cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0)
    if labels is not None and (labels == 1).any():
        anomalous = (labels == 1) & keep
        ax.scatter(xyz[anomalous, 0], xyz[anomalous, 1], s=30, facecolors="none", edgecolors="cyan",
                   linewidths=0.6, label="ground-truth anomaly")
        ax.legend(loc="upper right", fontsize=7)
    ax.plot([0], [0], marker=">", color="lime", markersize=8)     # the ego sensor, facing +x
    ax.set(xlim=(-max_range / 3, max_range), ylim=(-max_range / 2, max_range / 2), aspect="equal",
           xlabel="x forward (m)", ylabel="y left (m)", title=title)
    ax.set_facecolor("#101010")
    return sc


def camera_overlay_axes(ax, rgb, uv, scores, title="", vmin=0.0, vmax=1.0, cmap="inferno"):
    ax.imshow(rgb)
    order = np.argsort(scores)
    sc = ax.scatter(uv[order, 0], uv[order, 1], c=scores[order], s=2, cmap=cmap, vmin=vmin, vmax=vmax,
                    linewidths=0, alpha=0.85)
    ax.set(xlim=(0, rgb.shape[1]), ylim=(rgb.shape[0], 0), title=title)
    ax.axis("off")
    return sc


def save_frame_heatmap(out_path, xyz, scores, labels=None, rgb=None, uv=None, uv_scores=None, title="",
                       size_px=(1600, 600)) -> Path:
    plt = _plt()
    ncols = 2 if rgb is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(size_px[0] / 100, size_px[1] / 100), dpi=100,
                             gridspec_kw={"width_ratios": [1, 1.2][:ncols]})
    axes = np.atleast_1d(axes)
    sc = bev_heatmap_axes(axes[0], xyz, scores, labels, title="bird's-eye view")
    if rgb is not None:
        camera_overlay_axes(axes[1], rgb, uv, uv_scores, title="camera view")
    cbar = fig.colorbar(sc, ax=axes.tolist(), fraction=0.025, pad=0.01)
    cbar.set_label("anomaly score")
    fig.suptitle(title)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def save_training_curves(out_path, step_log: list[dict], val_history: list[dict], title="") -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    if step_log:
        steps = np.array([r["step"] for r in step_log])
        losses = np.array([r["loss"] for r in step_log])
        axes[0].plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
        k = max(1, len(losses) // 20)
        if len(losses) >= k:
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            axes[0].plot(steps[k - 1:], smooth, lw=1.6, label=f"mean of {k}")
        axes[0].set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
        axes[0].legend()
    if val_history:
        epochs = [r["epoch"] for r in val_history]
        for key, style in (("auroc", "-o"), ("ap", "-s"), ("fpr95", "-^")):
            values = [r.get(key, np.nan) for r in val_history]
            axes[1].plot(epochs, values, style, label=key)
        axes[1].axhline(0.5, color="grey", ls=":", lw=0.8)
        axes[1].set(xlabel="epoch", ylim=(0, 1.02), title="validation (pooled voxels)")
        axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
