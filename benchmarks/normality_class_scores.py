#!/usr/bin/env python
"""Where a normality-regime model puts the anomalies: its raw score (energy, -max logit or entropy, the run's
MODEL.HEAD.NORMALITY_SCORE) per predicted semantic class, for the normal voxels of the training split and for the
normal and anomalous voxels of a held-out split, beside the running class statistics the head kept in training
(MODEL.HEAD.NORMALITY_STANDARDIZE reads those). The README's ninth pass used it to see why standardizing per class
(SML) failed here.

    python benchmarks/normality_class_scores.py --run output/.../seed0 [--ckpt latest] [--split test] \
        [--out docs/normality_class_scores.png]

Voxels are the model's own (those its points fall in), labelled by the dataset's voxel labels; ignored voxels are
left out. Prints one row per class and writes a box plot.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcdet_anomaly.config import load_config  # noqa: E402
from pcdet_anomaly.datasets import batch_to_device, build_dataloader  # noqa: E402
from pcdet_anomaly.engine.checkpoint import inference_state, load_checkpoint, load_model_weights  # noqa: E402
from pcdet_anomaly.models import build_network  # noqa: E402
from pcdet_anomaly.utils.visualization import save_figure  # noqa: E402


@torch.no_grad()
def class_scores(model, cfg, split: str, device="cpu"):
    """-> (raw score, predicted class, voxel label) over every voxel of `split` the model predicts, ignored ones
    left out."""
    _, loader, _ = build_dataloader(cfg.DATA_CONFIG, split, cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU, False, 0, False,
                                    cfg.TRAIN.SEED, None)
    head = model.head
    out_u, out_p, out_l = [], [], []
    for batch in loader:
        out = model(batch_to_device(batch, device))
        logits = out["voxel_semantic_logits"].float()
        keep = out["voxel_labels"] != head.ignore_index
        out_u.append(head.raw_unknownness(logits)[keep].cpu())
        out_p.append(logits.argmax(1)[keep].cpu())
        out_l.append(out["voxel_labels"][keep].cpu())
    return torch.cat(out_u).numpy(), torch.cat(out_p).numpy(), torch.cat(out_l).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (config.yaml, ckpt/)")
    parser.add_argument("--ckpt", default="latest", help="checkpoint name under ckpt/ (without .pth)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=None, help="box plot (default: <run>/class_scores_<split>.png)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    if cfg.MODEL.REGIME != "normality":
        raise SystemExit(f"{run / 'config.yaml'}: MODEL.REGIME is {cfg.MODEL.REGIME!r}; this reads a normality model")
    model = build_network(cfg.MODEL, cfg.DATA_CONFIG)
    load_model_weights(model, inference_state(load_checkpoint(run / "ckpt" / f"{args.ckpt}.pth")), None, strict=True)
    model.eval()
    head = model.head
    u_tr, p_tr, l_tr = class_scores(model, cfg, "train")
    u, p, lab = class_scores(model, cfg, args.split)
    k = head.num_semantic
    names = [str(c) for c in cfg.DATA_CONFIG.LABELS.SEMANTIC_CLASSES][:k]
    print(f"raw score: {cfg.MODEL.HEAD.NORMALITY_SCORE} (higher = more anomalous); per predicted class")
    print("| class (label ids) | running mean ± sd | train normal: n, mean ± sd | "
          f"{args.split} normal: n, mean ± sd | {args.split} anomalous: n, mean ± sd |")
    print("|---|---|---|---|---|")
    # (scores, predicted classes, labels, label wanted, legend, colour): the table's columns and the plot's boxes
    groups = [(u_tr, p_tr, l_tr, 0, "train normal", "tab:blue"), (u, p, lab, 0, f"{args.split} normal", "tab:green"),
              (u, p, lab, 1, f"{args.split} anomalous", "tab:red")]
    for c in range(k):
        cells = []
        for uu, pp, ll, want, _, _ in groups:
            s = uu[(pp == c) & (ll == want)]
            cells.append(f"{len(s)}, {s.mean():.2f} ± {s.std():.2f}" if len(s) > 1 else f"{len(s)}, -")
        mean, sd = float(head.class_score_mean[c]), float(head.class_score_var[c].clamp(min=0).sqrt())
        print(f"| {c} {names[c]} | {mean:.2f} ± {sd:.2f} | " + " | ".join(cells) + " |")
    anom = lab == 1
    share = np.bincount(p[anom], minlength=k) / max(anom.sum(), 1)
    print(f"{args.split}: {anom.sum()} anomalous voxels; share per predicted class: "
          + ", ".join(f"{c}: {share[c]:.0%}" for c in range(k) if share[c] > 0))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * k), 4.5))
    for i, (uu, pp, ll, want, label, color) in enumerate(groups):
        data = [uu[(pp == c) & (ll == want)] for c in range(k)]
        pos = np.arange(k) + (i - 1) * 0.27
        present = [j for j in range(k) if len(data[j])]
        bp = ax.boxplot([data[j] for j in present], positions=pos[present], widths=0.22, showfliers=False,
                        patch_artist=True)
        for patch in bp["boxes"]:
            patch.set(facecolor=color, alpha=0.5)
        ax.plot([], [], color=color, lw=6, alpha=0.5, label=label)
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels([f"{c}\n{names[c]}\n{share[c]:.0%} of anom." for c in range(k)], fontsize=7)
    ax.set(ylabel=f"raw {cfg.MODEL.HEAD.NORMALITY_SCORE} (higher = more anomalous)", xlabel="predicted class",
           title=f"{run.name}/{args.ckpt}: the score per predicted class (whiskers 1.5 IQR, no outliers drawn)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    out = Path(args.out) if args.out else run / f"class_scores_{args.split}.png"
    print("box plot:", save_figure(fig, out))


if __name__ == "__main__":
    main()
