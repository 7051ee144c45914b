#!/usr/bin/env python
"""Summarise a training run from its files, while it trains or after.

    python tools/monitor.py output/anovox/cylinder_fusion_cpu/default [--last 50]
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np


def _load_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def summarise(run_dir: Path, last: int = 50) -> str:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SystemExit(f"{run_dir}: no such run folder")
    state = _load_json(run_dir / "run_state.json", {})
    history = _load_json(run_dir / "val_history.json", [])
    guard = _load_json(run_dir / "guard.json", {})
    steps = []
    log = run_dir / "train_log.jsonl"
    if log.is_file():
        steps = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    lines = [f"run: {run_dir}"]
    if state:
        age = time.time() - state.get("updated", time.time())
        eta = state.get("eta_seconds")
        lines.append(f"status: {state.get('status')}  epoch {state.get('epoch')}/{state.get('num_epochs')}  step "
                     f"{state.get('global_step')}  (updated {age:.0f} s ago" + (f", ETA {eta:.0f} s)" if eta else ")"))
        best = state.get("best_metric")
        if state.get("best_epoch", -1) >= 0:
            lines.append(f"best {state.get('best_metric_name')}: {abs(best):.4f} at epoch {state.get('best_epoch')}")
        es = state.get("early_stop", {})
        if es.get("enabled"):
            lines.append(f"early stopping on {es.get('metric')}: {es.get('bad_epochs')}/{es.get('patience')} "
                         f"evaluations without improvement")
    else:
        lines.append("status: no run_state.json yet (training has not finished its first epoch)")
    if steps:
        recent = [s["loss"] for s in steps[-last:]]
        x = np.arange(len(recent))
        slope = float(np.polyfit(x, recent, 1)[0]) if len(recent) > 2 else math.nan
        scale = max(abs(float(np.mean(recent))), 1e-12)
        trend = ("n/a (too few steps)" if math.isnan(slope) else "falling" if slope < -1e-3 * scale
                 else "rising" if slope > 1e-3 * scale else "flat")
        lines.append(f"loss over the last {len(recent)} logged steps: mean {np.mean(recent):.4f}, first "
                     f"{recent[0]:.4f} -> last {recent[-1]:.4f}, trend {trend} ({slope:+.2e}/log step); lr "
                     f"{steps[-1]['lr']:.2e}")
    if history:
        lines.append("validation:  epoch   auroc      ap   fpr95  train_loss  ap(intersect)  GT predicted  bad frames")
        for r in history:
            f = lambda v: "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.4f}"
            lines.append(f"             {r['epoch']:5d}  {f(r.get('auroc'))}  {f(r.get('ap'))}  {f(r.get('fpr95'))}"
                         f"  {f(r.get('train_loss'))}        {f(r.get('ap_intersect'))}        "
                         f"{f(r.get('gt_fraction_predicted'))}  {r.get('val_bad_frames', 0)} val / "
                         f"{r.get('train_bad_frames', 0)} train")
    events = guard.get("events", [])
    lines.append(f"learning guard: {len(events)} warning(s)" + ("" if events else " - none"))
    for e in events:
        lines.append(f"  ! epoch {e['epoch']} [{e['kind']}] {e['message']}")
    if guard.get("nonfinite_total"):
        lines.append(f"  non-finite losses skipped: {guard['nonfinite_total']}")
    if guard.get("skipped_steps"):
        lines.append(f"  micro-batches skipped on every rank (non-finite loss or no readable frame): "
                     f"{guard['skipped_steps']}")
    if guard.get("bad_frames_total"):
        lines.append(f"  bad frames dropped from training (all workers and ranks): {guard['bad_frames_total']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--last", type=int, default=50, help="steps for the loss trend")
    args = parser.parse_args(argv)
    text = summarise(Path(args.run_dir), args.last)
    print(text)
    return text


if __name__ == "__main__":
    main()
