"""Report writers: console table, JSON, CSV, ROC / PR curve PNGs."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

__all__ = ["format_table", "write_reports", "plot_curves"]


def _fmt(v):
    if isinstance(v, float):
        return "  n/a " if math.isnan(v) else f"{v:6.4f}"
    return str(v)


def format_table(summary: dict) -> str:
    cols = ["auroc", "ap", "fpr95", "num_pos", "num_neg"]
    if summary.get("protocol") == "anovox":
        cols += ["fpr95_anovox", "f1_mean", "precision_mean"]
    rows = [("pooled: " + k, v) for k, v in sorted(summary["pooled"].items(), key=lambda kv: kv[0] != "all")]
    rows += [("scene: " + k[:30], v) for k, v in summary["per_scene"].items()]
    width = max([len(r[0]) for r in rows] + [10])
    lines = [f"{'group':<{width}} " + " ".join(f"{c:>14}" for c in cols)]
    for name, m in rows:
        lines.append(f"{name:<{width}} " + " ".join(f"{_fmt(m.get(c, math.nan)):>14}" for c in cols))
    sm = summary["scene_mean"]
    lines.append(f"{'mean over scenes':<{width}} {_fmt(sm['auroc']):>14} {_fmt(sm['ap']):>14}   "
                 f"({sm['scenes_with_both_classes']} scenes with both classes)")
    if summary.get("matching"):
        lines.append("matching: " + ", ".join(f"{k}={v}" for k, v in summary["matching"].items()))
    if "warning" in sm:
        lines.append("WARNING: " + sm["warning"])
    return "\n".join(lines)


def write_reports(summary: dict, out_dir: Path, stem: str = "metrics") -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "csv": out_dir / f"{stem}.csv", "txt": out_dir / f"{stem}.txt"}
    paths["json"].write_text(json.dumps(summary, indent=2, default=float))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        keys = sorted({k for m in list(summary["pooled"].values()) + list(summary["per_scene"].values()) for k in m})
        writer.writerow(["group"] + keys)
        for name, m in summary["pooled"].items():
            writer.writerow([name] + [m.get(k, "") for k in keys])
        for name, m in summary["per_scene"].items():
            writer.writerow([f"scene:{name}"] + [m.get(k, "") for k in keys])
    paths["txt"].write_text(format_table(summary) + "\n")
    return paths


def plot_curves(curves, out_path: Path, title: str = "") -> Path | None:
    if curves is None:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fpr, tpr, recall, precision = curves
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    axes[0].plot(fpr, tpr, lw=1.5)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    axes[0].legend(loc="lower right")
    axes[1].step(recall, precision, where="post", lw=1.5)
    base = tpr[-1] and (precision[-1] if len(precision) else 0)
    axes[1].axhline(base, color="k", ls="--", lw=0.8, label=f"chance ({base:.3f})")
    axes[1].set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    axes[1].legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
