#!/usr/bin/env python
"""The README's main job, on the built-in synthetic AnoVox data:
generate -> train cfgs/anovox/cylinder_fusion.yaml with CPU-sized overrides -> test on held-out scenarios ->
tools/eval_voxels.py report -> heatmap pictures. Re-running reuses the data and resumes the run.
"""
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RUN = ROOT / "output" / "demo"
DATA = "data/anovox_synth"
# The CPU-sized overrides of cfgs/anovox/cylinder_fusion.yaml (the same values as cylinder_fusion_cpu.yaml).
CPU_OVERRIDES = [
    "DATA_CONFIG.MAX_POINTS", "30000", "DATA_CONFIG.VOXELIZE.GRID_SIZE", "[120, 90, 16]",
    "DATA_CONFIG.IMAGE.SIZE", "[256, 384]", "MODEL.VFE.MLP_DIMS", "[32, 64]", "MODEL.BACKBONE_3D.INIT_SIZE", "8",
    "MODEL.IMAGE_BACKBONE.FROZEN", "false", "MODEL.FUSION.EMBED_DIM", "32", "MODEL.FUSION.FFN_DIM", "64",
    "OPTIMIZATION.NUM_EPOCHS", "6", "OPTIMIZATION.LR", "0.003",
]


def step(title, cmd):
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"=== {title}: {time.time() - start:.0f} s", flush=True)


def main():
    start = time.time()
    cfg = "cfgs/anovox/cylinder_fusion.yaml"
    step("1/5 synthetic AnoVox (12 scenarios x 10 frames)",
         [PY, "tools/make_synthetic_anovox.py", "--out", DATA, "--scenarios", "12", "--frames", "10", "--seed", "0"])
    step("2/5 train (CPU-sized overrides)",
         [PY, "tools/train.py", "--cfg", cfg, "--output_dir", str(RUN), "--set", "DATA_CONFIG.DATA_PATH", DATA,
          *CPU_OVERRIDES])
    step("3/5 test on the held-out scenarios (AnoVox voxel predictions)",
         [PY, "tools/test.py", "--cfg", cfg, "--output_dir", str(RUN), "--split", "test", "--set",
          "DATA_CONFIG.DATA_PATH", DATA, *CPU_OVERRIDES])
    pred = RUN / "eval" / "best" / "test" / "predictions"
    step("4/5 eval_voxels (per scene and pooled)",
         [PY, "tools/eval_voxels.py", "--data", DATA, "--pred", str(pred), "--out", str(RUN / "eval_voxels")])
    scene = sorted(p.name for p in pred.iterdir())[0]
    step("5/5 heatmap pictures",
         [PY, "tools/view_heatmap.py", "--data", DATA, "--pred", str(pred), "--scene", scene,
          "--save", str(RUN / "heatmap_3d.png"), "--overlay", str(RUN / "heatmap_overlay.png"),
          "--export", str(RUN / "heatmap.ply")])
    print(f"\ndone in {time.time() - start:.0f} s. Look at:\n  {RUN / 'eval_voxels' / 'metrics.txt'}\n"
          f"  {RUN / 'heatmap_3d.png'}\n  {RUN / 'heatmap_overlay.png'}\n  {RUN / 'plots'}\n"
          f"  python tools/monitor.py {RUN.relative_to(ROOT)}\n  tensorboard --logdir {RUN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
