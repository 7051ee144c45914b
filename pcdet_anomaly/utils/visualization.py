"""Pictures a person would rather look at: bird's-eye heatmaps, camera overlays, training curves (matplotlib)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["bev_heatmap_axes", "camera_overlay_axes", "save_frame_heatmap", "save_training_curves", "save_figure"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, out_path, dpi: int = 100, tight: bool = True, **savefig_kw) -> Path:
    """Lay out (`tight`), write (folders made) and close a figure; -> its path."""
    import matplotlib.pyplot as plt
    if tight:
        fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi, **savefig_kw)
    plt.close(fig)
    return out_path


def bev_window(xyz, max_range=50.0):
    return (xyz[:, 0] > -max_range / 3) & (xyz[:, 0] < max_range) & (np.abs(xyz[:, 1]) < max_range / 2)


def score_floor(scores, vmin=0.0, vmax=1.0, top_fraction=0.1) -> float:
    """The lowest score drawn in colour: the frame's top `top_fraction` and at least 5 % of the colour range."""
    floor = vmin + 0.05 * (vmax - vmin)
    if len(scores) and top_fraction < 1:
        floor = max(floor, float(np.quantile(scores, 1 - top_fraction)))
    return floor


def bev_heatmap_axes(ax, xyz, scores, labels=None, max_range=50.0, title="", vmin=0.0, vmax=1.0, cmap="YlOrRd",
                     top_fraction=0.1):
    """Points seen from above on a light background: the whole scene's structure in grey (darker = higher, so walls,
    cars and poles read as outlines), and on top only the frame's highest scores (its top `top_fraction` of points
    and at least 5 % of the colour range), coloured and sized by score, hottest drawn last; ground-truth anomalies
    circled in blue. A model that separates the anomaly shows one dark-red blob on a grey map."""
    keep = bev_window(xyz, max_range)
    if keep.any():
        z = xyz[keep, 2]
        height = np.clip((z - np.percentile(z, 2)) / 3.0, 0, 1)
        grey = np.stack([0.78 - 0.5 * height] * 3, 1)
        ax.scatter(xyz[keep, 0], xyz[keep, 1], c=grey, s=1.2, linewidths=0, rasterized=True)
    floor = score_floor(scores[keep], vmin, vmax, top_fraction)
    hot = keep & (scores >= floor)
    order = np.argsort(scores[hot])
    s_hot = scores[hot][order]
    sc = ax.scatter(xyz[hot, 0][order], xyz[hot, 1][order], c=s_hot, s=2.0 + 14.0 * (s_hot - vmin) / (vmax - vmin),
                    cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0, rasterized=True, zorder=3)
    if labels is not None and (labels == 1).any():     # under the scores, so the anomaly's own colour shows
        anomalous = (labels == 1) & keep
        ax.scatter(xyz[anomalous, 0], xyz[anomalous, 1], s=90, facecolors="none", edgecolors="#1f4fd1",
                   linewidths=0.6, alpha=0.6, label="ground-truth anomaly", zorder=2)
    ax.plot([0], [0], marker=">", color="#1a9641", markersize=9, linestyle="none", label="ego sensor (+x)")
    ax.legend(loc="upper right", fontsize=7, title=f"coloured: top {100 * top_fraction:.0f}% of scores "
              f"(>= {floor:.2f})", title_fontsize=7)
    ax.set(xlim=(-max_range / 3, max_range), ylim=(-max_range / 2, max_range / 2), aspect="equal",
           xlabel="x forward (m)", ylabel="y left (m)", title=title)
    ax.set_facecolor("white")
    return sc


def camera_overlay_axes(ax, rgb, uv, scores, title="", vmin=0.0, vmax=1.0, cmap="YlOrRd", floor=None):
    """The image with the projected scores on top: points at or above `floor` (the bird's-eye view's threshold)
    coloured and sized by score, the rest as faint dots."""
    ax.imshow(rgb)
    floor = vmin + 0.05 * (vmax - vmin) if floor is None else floor
    low = scores < floor
    ax.scatter(uv[low, 0], uv[low, 1], c="white", s=0.6, linewidths=0, alpha=0.35)
    order = np.argsort(scores[~low])
    s_hot = scores[~low][order]
    sc = ax.scatter(uv[~low, 0][order], uv[~low, 1][order], c=s_hot, s=2.0 + 10.0 * (s_hot - vmin) / (vmax - vmin),
                    cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0, alpha=0.9)
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
        floor = score_floor(scores[bev_window(xyz)])
        camera_overlay_axes(axes[1], rgb, uv, uv_scores, title="camera view", floor=floor)
    cbar = fig.colorbar(sc, ax=axes.tolist(), fraction=0.025, pad=0.01)
    cbar.set_label("anomaly score")
    fig.suptitle(title)
    return save_figure(fig, out_path, tight=False)


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
    return save_figure(fig, out_path)
