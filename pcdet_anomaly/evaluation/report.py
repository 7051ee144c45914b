"""Report writers: console table, JSON, CSV, ROC / PR curve PNGs."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..utils.visualization import save_figure

__all__ = ["format_table", "write_reports", "plot_curves"]


def _fmt(v):
    if isinstance(v, float):
        return "  n/a " if math.isnan(v) else f"{v:6.4f}"
    return str(v)


def coverage_lines(summary: dict) -> list[str]:
    c = summary.get("coverage")
    if not c:
        return []
    pct = lambda a, b: f"{100.0 * a / b:.1f}%" if b else "n/a"
    if "points_evaluated" in c:     # the point-level (STU) protocol
        return [f"coverage ({c['range']}): frames {c['frames_seen']}, skipped {c['frames_skipped']}; points "
                f"{c['points']}, evaluated {c['points_evaluated']} (scored by the model "
                f"{pct(c['points_evaluated_scored_by_model'], c['points_evaluated'])}, the rest outside "
                f"POINT_FILTER_RANGE take their nearest scored point's score); anomalous {c['anomaly_points']} "
                f"(scored by the model {pct(c['anomaly_points_scored_by_model'], c['anomaly_points'])})"
                + (f"; bad frames {c['bad_frames']}" if c.get("bad_frames") else "")]
    return [f"coverage ({c['range']}): ground-truth voxels {c['gt_voxels']}, predicted {c['gt_voxels_predicted']} "
            f"({pct(c['gt_voxels_predicted'], c['gt_voxels'])}), unpredicted {c['gt_voxels_unpredicted']}; "
            f"anomalous {c['anomaly_voxels']}, predicted {c['anomaly_voxels_predicted']} "
            f"({pct(c['anomaly_voxels_predicted'], c['anomaly_voxels'])}), unpredicted "
            f"{c['anomaly_voxels_unpredicted']}; predicted voxels without ground truth {c['pred_voxels_without_gt']} "
            f"of {c['pred_voxels']}"]


def false_alarm_lines(summary: dict, classes: int = 4) -> list[str]:
    """What the headline policy's false alarms are, by ground-truth class, at each recall the summary holds."""
    fa = summary.get("false_alarms")
    if not fa:
        return []
    lines = [f"false alarms by class (policy '{summary.get('policy')}'; normal voxels scoring at or above the "
             f"threshold that finds the stated share of anomalous voxels):"]
    for key, r in fa.items():
        if not key.startswith("recall_"):
            continue
        parts = ", ".join(f"{c['name']} {100 * c['share']:.0f}% ({100 * c['rate']:.2g}% of its {c['voxels']})"
                          for c in r["by_class"][:classes])
        lines.append(f"  recall {100 * r['recall']:.0f}%: {r['false_alarms']} false alarms at score >= "
                     f"{r['threshold']:.4g}, precision {r['precision']:.3f}" + (f": {parts}" if parts else ""))
        if r.get("by_range"):
            lines.append("    by range: " + ", ".join(
                f"{b['band']} {b['false_alarms']} ({100 * b['rate']:.2g}% of its {b['voxels']} normal voxels; "
                f"{b['anomalies']} anomalous)" for b in r["by_range"]))
    without = sorted(fa.get("ap_without_class", {}).items(), key=lambda kv: -kv[1])[:classes]
    if without:
        lines.append("  AP with one class's normal voxels left out: " +
                     ", ".join(f"{name} {ap:.4f}" for name, ap in without))
    return lines


def format_table(summary: dict) -> str:
    """Both policies, side by side: every group once per policy (the headline policy first)."""
    policies = summary.get("policies") or {summary.get("policy", "intersect"): summary}
    head = summary.get("policy", next(iter(policies)))
    cols = ["auroc", "ap", "fpr95", "num_pos", "num_neg"]
    cols += ["threshold"] if head == "points" else ["fpr95_anovox", "f1_mean", "precision_mean"]
    order = [head] + [p for p in policies if p != head]
    if head == "points":
        lines = [f"protocol {summary.get('protocol')}, {summary.get('frames', '?')} frames scored; every point of "
                 f"every scan (FPR95: first ROC point with TPR > 0.95, as STU)"]
    else:
        lines = [f"protocol {summary.get('protocol', 'default')}, {summary.get('frames', '?')} frames; headline "
                 f"policy '{head}' (zero: unpredicted ground truth scores 0; intersect: official AnoVox join, "
                 f"unpredicted ground truth dropped)"]
    lines += coverage_lines(summary)
    rows = []
    for policy in order:
        ps = policies[policy]
        rows += [(f"[{policy}] pooled: {k}", v) for k, v in sorted(ps["pooled"].items(),
                                                                     key=lambda kv: (kv[0] != "all", kv[0]))]
        rows += [(f"[{policy}] scene: {k[:30]}", v) for k, v in ps["per_scene"].items()]
        sm = ps["scene_mean"]
        rows.append((f"[{policy}] mean over scenes ({sm['scenes_with_both_classes']})",
                     {"auroc": sm["auroc"], "ap": sm["ap"]}))
    width = max([len(r[0]) for r in rows] + [10])
    lines.append(f"{'group':<{width}} " + " ".join(f"{c:>14}" for c in cols))
    for name, m in rows:
        lines.append(f"{name:<{width}} " + " ".join(f"{_fmt(m.get(c, '')):>14}" for c in cols))
    lines += false_alarm_lines(summary)
    if summary.get("matching"):
        lines.append("matching: " + ", ".join(f"{k}={v}" for k, v in summary["matching"].items()))
    bad = summary.get("bad_frames")
    if bad:
        lines.append(f"BAD FRAMES dropped, not scored: {len(bad)}: " + ", ".join(map(str, bad[:5])) +
                     (" ..." if len(bad) > 5 else ""))
    missing = summary.get("missing_predictions") or {}
    if missing.get("scenarios") or missing.get("frames"):
        lines.append(f"MISSING PREDICTIONS (not scored; expected by {missing.get('expected_by')}): scenarios "
                     f"{missing.get('scenarios')}, frames {missing.get('frames')}")
    if "stu" in summary:
        st = summary["stu"]
        lines.append(f"STU point level (x 100, as compute_point_level_ood.py prints): AP {st['AP']:.2f}, "
                     f"FPR95 {st['FPR95']:.2f}, AUROC {st['AUROC']:.2f}, threshold {st['threshold']:.6g}")
    if "object" in summary:
        o = summary["object"]
        lines.append(f"STU object level: SQ {o['SQ']:.2f}, RecallQ {o['RecallQ']:.2f}, UQ {o['UQ']:.2f}, "
                     f"RQ {o['RQ']:.2f}, PQ {o['PQ']:.2f}, TP {o['TP']}, FP {o['FP']}, FN {o['FN']} ({o['rule']})")
    if "warning" in summary.get("scene_mean", {}):
        lines.append("WARNING: " + summary["scene_mean"]["warning"])
    return "\n".join(lines)


def write_reports(summary: dict, out_dir: Path, stem: str = "metrics") -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "csv": out_dir / f"{stem}.csv", "txt": out_dir / f"{stem}.txt"}
    paths["json"].write_text(json.dumps(summary, indent=2, default=float))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        policies = summary.get("policies") or {summary.get("policy", "intersect"): summary}
        keys = sorted({k for ps in policies.values() for m in list(ps["pooled"].values()) +
                       list(ps["per_scene"].values()) for k in m})
        writer.writerow(["policy", "group"] + keys)
        for policy, ps in policies.items():
            for name, m in ps["pooled"].items():
                writer.writerow([policy, name] + [m.get(k, "") for k in keys])
            for name, m in ps["per_scene"].items():
                writer.writerow([policy, f"scene:{name}"] + [m.get(k, "") for k in keys])
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
    return save_figure(fig, out_path, dpi=110)
