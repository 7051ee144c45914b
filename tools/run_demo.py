#!/usr/bin/env python
"""The README's main job, on the built-in synthetic AnoVox data:
generate the study's set (50 scenarios x 4 frames, seed 1) -> train cfgs/anovox/cylinder_fusion.yaml with CPU-sized
overrides, cone and boulder anomalies held out of training -> test on the held-out test scenarios ->
tools/eval_voxels.py report -> heatmap pictures. About 10 minutes on 2 cores. Re-running reuses the data and resumes
the run.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RUN = ROOT / "output" / "demo"
# The study's set (README, Results): many short scenarios, so the split has many distinct anomaly instances.
DATA, SCENARIOS, FRAMES, GEN_SEED = "data/anovox_bench_50x4", 50, 4, 1
# The CPU-sized overrides of cylinder_fusion.yaml (the values of cylinder_fusion_cpu.yaml), the study's split
# (cone and boulder never trained on) and point budget, and 7 epochs: the demo's 15 minutes go to the model.
CPU_OVERRIDES = [
    "DATA_CONFIG.MAX_POINTS", "20000", "DATA_CONFIG.VOXELIZE.GRID_SIZE", "[120, 90, 16]",
    "DATA_CONFIG.IMAGE.SIZE", "[256, 384]", "MODEL.VFE.MLP_DIMS", "[32, 64]", "MODEL.BACKBONE_3D.INIT_SIZE", "8",
    "MODEL.IMAGE_BACKBONE.FROZEN", "false", "MODEL.FUSION.EMBED_DIM", "32", "MODEL.FUSION.FFN_DIM", "64",
    "OPTIMIZATION.NUM_EPOCHS", "7", "OPTIMIZATION.LR", "0.003",
    "DATA_CONFIG.SPLIT.HOLDOUT_SHAPE_FAMILIES", '["cone", "boulder"]',
]


def step(title, cmd):
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"=== {title}: {time.time() - start:.0f} s", flush=True)


def best_scene(metrics_path: Path) -> str:
    """The test scenario to draw: the one with the most anomalous voxels (a picture with an anomaly in it)."""
    per_scene = json.loads(metrics_path.read_text())["per_scene"]
    return max(per_scene, key=lambda k: (per_scene[k].get("num_pos") or 0, k))


def recipe(cfg: str) -> str:
    """What the demo trains: the resolved config of `cfg` with the demo's overrides and data path (the config file's
    own name and tag left out), as canonical JSON. A run made with another recipe (an earlier release's model, other
    data) is not resumed."""
    sys.path.insert(0, str(ROOT))
    from pcdet_anomaly.config import load_config
    resolved = load_config(ROOT / cfg, [*CPU_OVERRIDES, "DATA_CONFIG.DATA_PATH", DATA])
    for key in ("CFG_FILE", "CFG_TAG"):
        resolved.pop(key, None)
    return json.dumps(resolved, sort_keys=True, default=str)


def set_aside_if_other(run: Path, current: str) -> Path | None:
    """Move `run` aside (demo_previous_<time>) when it holds a run whose recipe is not `current` (or that predates
    recipes); returns where it went. A run of the same recipe is left to be resumed."""
    if not run.is_dir() or not any(run.iterdir()):
        return None
    mark = run / "demo_recipe.json"
    if mark.is_file() and mark.read_text() == current:
        return None
    stamp, n = int(time.time()), 0
    aside = run.with_name(f"demo_previous_{stamp}")
    while aside.exists():               # never onto an earlier set-aside run
        n += 1
        aside = run.with_name(f"demo_previous_{stamp}_{n}")
    run.rename(aside)
    return aside


def main():
    start = time.time()
    cfg = "cfgs/anovox/cylinder_fusion.yaml"
    current = recipe(cfg)
    aside = set_aside_if_other(RUN, current)
    if aside:
        print(f"an earlier demo run (another model or data) moved to {aside}")
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "demo_recipe.json").write_text(current)
    step(f"1/5 synthetic AnoVox ({SCENARIOS} scenarios x {FRAMES} frames)",
         [PY, "tools/make_synthetic_anovox.py", "--out", DATA, "--scenarios", str(SCENARIOS), "--frames", str(FRAMES),
          "--seed", str(GEN_SEED)])
    step("2/5 train (CPU-sized overrides)",
         [PY, "tools/train.py", "--cfg", cfg, "--output_dir", str(RUN), "--set", "DATA_CONFIG.DATA_PATH", DATA,
          *CPU_OVERRIDES])
    step("3/5 test on the held-out scenarios (AnoVox voxel predictions)",
         [PY, "tools/test.py", "--cfg", cfg, "--output_dir", str(RUN), "--split", "test", "--set",
          "DATA_CONFIG.DATA_PATH", DATA, *CPU_OVERRIDES])
    pred = RUN / "eval" / "best" / "test" / "predictions"
    step("4/5 eval_voxels (per scene and pooled)",
         [PY, "tools/eval_voxels.py", "--data", DATA, "--pred", str(pred), "--out", str(RUN / "eval_voxels")])
    scene = best_scene(RUN / "eval_voxels" / "metrics.json")
    step("5/5 heatmap pictures",
         [PY, "tools/view_heatmap.py", "--data", DATA, "--pred", str(pred), "--scene", scene,
          "--save", str(RUN / "heatmap_3d.png"), "--overlay", str(RUN / "heatmap_overlay.png"),
          "--export", str(RUN / "heatmap.ply")])
    print(f"\ndone in {time.time() - start:.0f} s. Look at:\n  {RUN / 'eval_voxels' / 'metrics.txt'}\n"
          f"  {RUN / 'heatmap_3d.png'}\n  {RUN / 'heatmap_overlay.png'}\n  {RUN / 'plots'}\n"
          f"  python tools/monitor.py {RUN.relative_to(ROOT)}\n  tensorboard --logdir {RUN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
