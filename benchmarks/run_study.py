#!/usr/bin/env python
"""The results study of the README: supervised ablations and the normality regime on a synthetic benchmark split by
scenario, with anomaly shape families held out of training; several seeds; metrics on the held-out test split.

    python benchmarks/run_study.py [--seeds 0 1 2] [--epochs 5] [--only fusion lidar_only] [--study output/study]
Writes <study>/results.json and prints the markdown table. Re-running skips finished (variant, seed) runs.
"""
import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcdet_anomaly.utils.visualization import save_figure  # noqa: E402
PY = sys.executable
DATA_PREFIX = ROOT / "data" / "anovox_bench"   # + "_<scenarios>x<frames>"
STUDY = ROOT / "output" / "study"
HOLDOUT = ["cone", "boulder"]
VARIANTS = {   # name: config
    "fusion": "cfgs/anovox/cylinder_fusion_cpu.yaml",
    "no_posenc": "cfgs/anovox/ablation_no_posenc_cpu.yaml",
    "concat": "cfgs/anovox/ablation_concat_cpu.yaml",
    "lidar_only": "cfgs/anovox/ablation_lidar_only_cpu.yaml",
    "image_only": "cfgs/anovox/ablation_image_only_cpu.yaml",
    "normality": "cfgs/anovox/normality_cpu.yaml",
    "normality_real": "cfgs/anovox/normality_real_cpu.yaml",
    "normality_raise": "cfgs/anovox/normality_raise_cpu.yaml",
}
# extra --set pairs per variant (the levers studied on top of a config)
VARIANT_SETS = {}
NORMALITY_SCORES = ["max_logit", "energy", "entropy"]
# per-voxel groups of the held-out shapes (each anomalous voxel's own anomaly row names its family) and of label 29
HELD_OUT_GROUPS = {"cone": "family:cone", "boulder": "family:boulder"}
LABEL_29 = "label:29"


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def common_sets(data, seed, epochs):
    return ["DATA_CONFIG.DATA_PATH", str(data), "DATA_CONFIG.SPLIT.HOLDOUT_SHAPE_FAMILIES", json.dumps(HOLDOUT),
            "TRAIN.SEED", str(seed), "OPTIMIZATION.NUM_EPOCHS", str(epochs), "DATA_CONFIG.MAX_POINTS", "20000"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--only", nargs="+", default=list(VARIANTS))
    # many short scenarios rather than few long ones: distinct anomaly instances are what a split is short of
    parser.add_argument("--scenarios", type=int, default=50)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--report", action="store_true", help="only print the table and draw the curves")
    parser.add_argument("--study", default="output/study", help="output folder (results.json, runs, pictures)")
    args = parser.parse_args(argv)
    global STUDY
    STUDY = Path(args.study) if Path(args.study).is_absolute() else ROOT / args.study
    results_path = STUDY / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if not args.report:
        data = DATA_PREFIX.with_name(f"{DATA_PREFIX.name}_{args.scenarios}x{args.frames}")
        run([PY, "tools/make_synthetic_anovox.py", "--out", str(data), "--scenarios", str(args.scenarios),
             "--frames", str(args.frames), "--seed", "1"])
        for seed in args.seeds:
            for variant in args.only:
                train_and_test(results, variant, seed, common_sets(data, seed, args.epochs))
                results_path.parent.mkdir(parents=True, exist_ok=True)
                results_path.write_text(json.dumps(results, indent=2, default=float))
    print(table(results))
    print("curves:", plot_curves(results, STUDY / "learning_curves.png"))
    print("per-label AP:", plot_label_ap(results, STUDY / "label_ap.png"))
    print("PR curves:", plot_pr_curves(results, STUDY / "pr_curves.png"))
    print("false alarms:", plot_false_alarms(results, STUDY / "false_alarms.png"))
    print("range bands:", plot_range_bands(results, STUDY / "range_bands.png"))


def train_and_test(results: dict, variant: str, seed: int, sets: list) -> None:
    """One (variant, seed): train, test best.pth on the test split (three scores for the normality regime)."""
    key = f"{variant}/seed{seed}"
    if f"done:{key}" in results:
        return
    cfg, out = VARIANTS[variant], STUDY / variant / f"seed{seed}"
    start = time.time()
    sets = sets + VARIANT_SETS.get(variant, [])
    run([PY, "tools/train.py", "--cfg", cfg, "--output_dir", str(out), "--no_progress", "--set", *sets])
    train_s = time.time() - start
    for score in NORMALITY_SCORES if variant.startswith("normality") else [None]:
        test_sets = sets + (["MODEL.HEAD.NORMALITY_SCORE", score] if score else [])
        for ckpt in ([], ["--ckpt", str(out / "ckpt" / "latest.pth")]):     # best.pth, then the last epoch
            run([PY, "tools/test.py", "--cfg", cfg, "--output_dir", str(out), "--split", "test", "--no_progress",
                 *ckpt, "--set", *test_sets])
        name = f"{variant}:{score}" if score else variant
        results[f"{name}/seed{seed}"] = run_record(out, train_s, score)
    results[f"done:{key}"] = True


def plot_curves(results, path):
    """Validation AUROC and AP per epoch, one line per variant (mean over seeds, band = min..max)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curves = {}
    for name, value in finished_runs(results):
        if ":" not in name:      # one curve per trained model, not per normality score
            curves.setdefault(name, []).append(value["val_history"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for variant, runs in sorted(curves.items()):
        for ax, metric in zip(axes, ("auroc", "ap")):
            n = min(len(r) for r in runs)
            epochs = [r["epoch"] for r in runs[0][:n]]
            values = np.array([[r[metric] for r in run[:n]] for run in runs], dtype=float)
            line, = ax.plot(epochs, values.mean(0), marker="o", label=f"{variant} ({len(runs)} seeds)")
            if len(runs) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
    for ax, metric in zip(axes, ("validation AUROC (pooled)", "validation AP (pooled)")):
        ax.set(xlabel="epoch", title=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_label_ap(results, path):
    """Test AP per anomaly label id (policy zero), one bar group per variant, mean over seeds with the sample spread."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = {}
    for name, value in finished_runs(results):
        rows.setdefault(name, []).append(value.get("per_label", {}))
    labels = sorted({g for runs in rows.values() for r in runs for g in r}, key=lambda g: int(g.split(":")[1]))
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(labels)), 4.2))
    width = 0.8 / len(rows)
    for i, (name, runs) in enumerate(sorted(rows.items())):
        vals = [[r[g]["ap"] for r in runs if g in r and r[g]["ap"] == r[g]["ap"]] for g in labels]
        means = [np.mean(v) if v else 0.0 for v in vals]
        errs = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(np.arange(len(labels)) + i * width, means, width, yerr=errs, capsize=2, label=f"{name} ({len(runs)})")
    names = {29: "home (crate, flat)", 30: "animal", 31: "nature (boulder)", 32: "special (cone, barrel, carlike)",
             33: "airplane", 34: "falling", 100: "dynamic"}
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{g}\n{names.get(int(g.split(':')[1]), '')}" for g in labels], fontsize=8)
    ax.set(ylabel="test AP (policy zero, 50 m)", ylim=(0, 1), title="AP per anomaly label (mean ± sd over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def plot_pr_curves(results, path, seed: int = 0):
    """Precision-recall on the test split (policy zero), one curve per variant, from seed `seed`'s predictions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pcdet_anomaly.config import load_config
    from pcdet_anomaly.evaluation.folder_eval import evaluate_folder
    fig, ax = plt.subplots(figsize=(6.5, 5))
    drawn = 0
    for key, value in results.items():
        if key.startswith("done:") or not key.endswith(f"/seed{seed}") or not isinstance(value, dict):
            continue
        name = key.rsplit("/seed", 1)[0]
        run_dir = STUDY / name.split(":")[0] / f"seed{seed}"
        pred = run_dir / "eval" / "best" / "test" / "predictions"
        if ":" in name or not pred.is_dir():
            continue
        cfg = load_config(run_dir / "config.yaml").DATA_CONFIG
        _, evaluator = evaluate_folder(Path(cfg.DATA_PATH), pred, cfg.LABELS, cfg.EVAL_GRID, policy="zero",
                                       max_range=cfg.EVAL_GRID.MAX_RANGE, allow_missing=True)   # runs predict their split
        curves = evaluator.curves("all", "zero")
        if curves is None:
            continue
        _, _, recall, precision = curves
        ax.step(recall, precision, where="post", label=f"{name} (AP {value['pooled']['ap']:.3f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
           title=f"test precision-recall, policy zero, 50 m (seed {seed})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_false_alarms(results, path, recall: str = "recall_0.5", classes: int = 5):
    """What each variant confuses with anomalies: left, its false alarms at `recall` (normal voxels scoring at or
    above the threshold that finds that share of the anomalous voxels), stacked by ground-truth class, mean over
    seeds; right, its AP beside the AP with the most confused class's normal voxels left out (mean ± sd)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = {}
    for name, value in finished_runs(results):
        if value.get("false_alarms") and recall in value["false_alarms"]:
            rows.setdefault(name, []).append(value)
    if not rows:
        return None
    names = list(rows)
    totals = {}
    for runs in rows.values():
        for r in runs:
            for c in r["false_alarms"][recall]["by_class"]:
                totals[c["name"]] = totals.get(c["name"], 0) + c["false_alarms"] / len(runs)
    top = sorted(totals, key=lambda k: -totals[k])[:classes]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    bottom = np.zeros(len(names))
    def count(r, cls):          # mean over a variant's seeds; "other": every alarm outside the top classes
        fa = r["false_alarms"][recall]
        per = {c["name"]: c["false_alarms"] for c in fa["by_class"]}
        return fa["false_alarms"] - sum(per.get(t, 0) for t in top) if cls == "other" else per.get(cls, 0)

    totals_n = np.array([np.mean([r["false_alarms"][recall]["false_alarms"] for r in rows[n]]) for n in names])
    for cls in top + ["other"]:         # shares of each variant's alarms (stacked to 100 %), the count on top
        vals = np.array([np.mean([count(r, cls) for r in rows[n]]) for n in names]) / np.maximum(totals_n, 1) * 100
        axes[0].bar(np.arange(len(names)), vals, 0.6, bottom=bottom, label=cls)
        bottom += vals
    for i, t in enumerate(totals_n):
        axes[0].text(i, 101, f"{t:.0f}", ha="center", va="bottom", fontsize=8)
    axes[0].set_ylim(0, 112)
    axes[0].set_xticks(np.arange(len(names)))
    axes[0].set_xticklabels([f"{n} ({len(rows[n])} seed{'s' if len(rows[n]) > 1 else ''})" for n in names],
                            fontsize=7, rotation=20, ha="right")
    axes[0].set(ylabel=f"share of the false alarms at recall {recall.split('_')[1]} (%)",
                title="normal voxels that outrank half the anomalies: class shares (number on top)")
    axes[0].legend(fontsize=7)
    ap = [[r["pooled"]["ap"] for r in rows[n]] for n in names]
    car = [[max(r["false_alarms"]["ap_without_class"].values()) for r in rows[n]] for n in names]
    x = np.arange(len(names))
    sd = lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0
    axes[1].bar(x - 0.2, [np.mean(v) for v in ap], 0.4, yerr=[sd(v) for v in ap], capsize=2, label="test AP")
    axes[1].bar(x + 0.2, [np.mean(v) for v in car], 0.4, yerr=[sd(v) for v in car], capsize=2,
                label="AP, most confused class left out")
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(names, fontsize=7, rotation=20, ha="right")
    axes[1].set(ylim=(0, 1), ylabel="AP (policy zero, 50 m)", title="what the confusion costs")
    axes[1].grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=7)
    return save_figure(fig, path)


def plot_range_bands(results, path):
    """AP per range band (every voxel of the band, normal and anomalous), one group of bars per variant, mean ± sd
    over its seeds: where a model stops separating anomalies from what surrounds them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = {}
    for name, value in finished_runs(results):
        if value.get("per_range"):
            rows.setdefault(name, []).append(value["per_range"])
    if not rows:
        return None
    bands = sorted({b for runs in rows.values() for r in runs for b in r},
                   key=lambda b: float(b.split(":")[1].split("-")[0].rstrip("m+")))
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(names) + 3), 4.5))
    width = 0.8 / len(bands)
    sd = lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0
    for j, band in enumerate(bands):
        vals = [[r[band]["ap"] for r in rows[n] if band in r and not math.isnan(r[band]["ap"])] for n in names]
        x = np.arange(len(names)) + (j - (len(bands) - 1) / 2) * width
        ax.bar(x, [np.mean(v) if v else 0 for v in vals], width, yerr=[sd(v) if v else 0 for v in vals], capsize=2,
               label=band.split(":", 1)[1])
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"{n} ({len(rows[n])} seed{'s' if len(rows[n]) > 1 else ''})" for n in names], fontsize=7,
                       rotation=20, ha="right")
    ax.set(ylabel="test AP within the band", ylim=(0, 1.05),
           title="AP by distance (every voxel of the band; mean ± sd over seeds)")
    ax.legend(title="xy distance", fontsize=8)
    return save_figure(fig, path)


def last_epoch_record(out: Path, history: list[dict], score: str | None = None) -> dict | None:
    """The last epoch's model on two held-out sets: the test scenarios (eval/latest/test) and the validation scenarios
    (the last entry of the run's validation history `history`, same protocol). Validation chose best.pth, never the last epoch's
    weights, so for the last epoch both sets are held out: 20 scenarios instead of 10. None without a test of
    latest.pth; the validation AP is None when the history's score is not `score` (a normality run tested with
    another score) or the history does not reach the last epoch."""
    path = out / "eval" / "latest" / "test" / "metrics.json"
    if not path.is_file():
        return None
    import yaml
    test = json.loads(path.read_text())["policies"]["zero"]["pooled"]["all"]
    cfg = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").is_file() else {}
    epochs = _dig(cfg, ("OPTIMIZATION", "NUM_EPOCHS"))
    trained_score = _dig(cfg, ("MODEL", "HEAD", "NORMALITY_SCORE"))
    val = history[-1] if history and history[-1].get("epoch") == epochs else None
    if val is not None and score is not None and _dig(cfg, ("MODEL", "REGIME")) == "normality" \
            and score != trained_score:
        val = None
    val_ap = val.get("ap") if val else None
    return {"test_ap": test["ap"], "test_auroc": test["auroc"], "val_ap": val_ap,
            "val_auroc": val.get("auroc") if val else None, "epoch": epochs,
            "mean_ap": None if val_ap is None else (test["ap"] + val_ap) / 2}


def run_record(out: Path, train_s: float = math.nan, score: str | None = None) -> dict:
    """The numbers of a run folder: test metrics of best.pth (both policies, coverage), the last epoch's AP on the
    test and validation scenarios (last_epoch_record) and the validation history."""
    m = json.loads((out / "eval" / "best" / "test" / "metrics.json").read_text())
    zero, inter = m["policies"]["zero"], m["policies"]["intersect"]
    history = json.loads((out / "val_history.json").read_text())
    return {"pooled": zero["pooled"]["all"], "pooled_intersect": inter["pooled"]["all"],
            "last_epoch": last_epoch_record(out, history, score),
            "scene_mean": zero["scene_mean"], "coverage": m["coverage"],
            "held_out": {k: zero["pooled"].get(g) for k, g in HELD_OUT_GROUPS.items()},
            "label29": zero["pooled"].get(LABEL_29),
            "per_label": {g: v for g, v in zero["pooled"].items() if g.startswith("label:")},
            "per_range": {g: v for g, v in zero["pooled"].items() if g.startswith("range:")},
            "test_scenarios": sorted(m["per_scene"]), "false_alarms": m.get("false_alarms"),
            "train_seconds": train_s, "val_history": history}


def finished_runs(results: dict):
    """(row name, record) per finished run."""
    for key, value in results.items():
        if key.startswith("done:") or not isinstance(value, dict):
            continue
        name, _seed = key.rsplit("/seed", 1)
        yield name, value


def ms(values):
    """mean ± sample standard deviation (ddof=1) over seeds."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def table(results):
    rows = {}
    for name, value in finished_runs(results):
        rows.setdefault(name, []).append(value)
    test_sets = {tuple(r["test_scenarios"]) for runs in rows.values() for r in runs}
    lines = ["| variant | seeds | AUROC | AP | FPR95 | AP (official intersect) | AUROC scene mean | AP scene mean "
             "| AP label 29 | AP held-out cone | AP held-out boulder | last epoch: AP test | last epoch: AP validation "
             "| last epoch: mean of the two |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    get = lambda r, *path: _dig(r, path)
    for name, runs in rows.items():
        lines.append(f"| {name} | {len(runs)} | {ms([get(r, 'pooled', 'auroc') for r in runs])} | "
                     f"{ms([get(r, 'pooled', 'ap') for r in runs])} | {ms([get(r, 'pooled', 'fpr95') for r in runs])} | "
                     f"{ms([get(r, 'pooled_intersect', 'ap') for r in runs])} | "
                     f"{ms([get(r, 'scene_mean', 'auroc') for r in runs])} | {ms([get(r, 'scene_mean', 'ap') for r in runs])} | "
                     f"{ms([get(r, 'label29', 'ap') for r in runs])} | "
                     f"{ms([get(r, 'held_out', 'cone', 'ap') for r in runs])} | "
                     f"{ms([get(r, 'held_out', 'boulder', 'ap') for r in runs])} | "
                     f"{ms([get(r, 'last_epoch', 'test_ap') for r in runs])} | "
                     f"{ms([get(r, 'last_epoch', 'val_ap') for r in runs])} | "
                     f"{ms([get(r, 'last_epoch', 'mean_ap') for r in runs])} |")
    # drop columns that no row has (a held-out family that fell into validation, not test)
    cells = [line.split("|")[1:-1] for line in lines]
    keep = [j for j in range(len(cells[0])) if j < 2 or any(c[j].strip() != "n/a" for c in cells[2:])]
    lines = ["|" + "|".join(c[j] for j in keep) + "|" for c in cells]
    cov = next((r["coverage"] for runs in rows.values() for r in runs), None)
    if cov:
        lines.append("")
        lines.append(f"All rows: the same {len(next(iter(test_sets)))} test scenarios "
                     f"({'identical for every row' if len(test_sets) == 1 else 'WARNING: rows differ in test set'}); "
                     f"{cov['range']}; {cov['gt_voxels']} ground-truth voxels ({cov['anomaly_voxels']} anomalous), "
                     f"{100 * cov['gt_fraction_predicted']:.1f}% of them ({100 * cov['anomaly_fraction_predicted']:.1f}% "
                     f"of the anomalous) predicted by the first row's model; unpredicted voxels score 0 (policy zero). "
                     f"Columns AUROC to AP held-out boulder: best.pth (chosen on validation). Last epoch: AP on the test scenarios, on "
                     f"the validation scenarios (never used to choose these weights) and the mean of the two.")
    return "\n".join(lines)


def _dig(record, path):
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


if __name__ == "__main__":
    main()
