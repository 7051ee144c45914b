#!/usr/bin/env python
"""Parameters per stage and forward / backward time per stage of one training step, plus data loading.

    python tools/profile_model.py --cfg cfgs/anovox/cylinder_fusion_cpu.yaml --data data/anovox_synth
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pcdet_anomaly.config import load_config  # noqa: E402
from pcdet_anomaly.datasets import batch_to_device, build_dataset, collate_batch  # noqa: E402
from pcdet_anomaly.models import build_network  # noqa: E402
from pcdet_anomaly.utils.common_utils import resolve_path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cfg", default="cfgs/anovox/cylinder_fusion_cpu.yaml")
    parser.add_argument("--data", default="data/anovox_synth")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--set", dest="set_cfgs", nargs="+", default=None)
    args = parser.parse_args(argv)
    cfg = load_config(resolve_path(args.cfg), args.set_cfgs)
    cfg.DATA_CONFIG.DATA_PATH = str(resolve_path(args.data))
    dataset = build_dataset(cfg.DATA_CONFIG, "train", training=True)
    bs = cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU
    # data: reading + labels + augmentation + voxelization, per frame
    t = time.perf_counter()
    samples = [dataset[i % len(dataset)] for i in range(bs * args.steps)]
    data_s = (time.perf_counter() - t) / len(samples)
    t = time.perf_counter()
    for s in samples[:bs]:
        dataset.voxelize(s)
    vox_s = (time.perf_counter() - t) / bs
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    model = build_network(cfg.MODEL, cfg.DATA_CONFIG).to(device).train()
    model.profile = True
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    fwd = {}
    bwd, loss_s = [], []
    for step in range(args.steps):
        batch = batch_to_device(collate_batch(samples[step * bs:(step + 1) * bs]), device)
        out = model(batch)
        sync()
        t = time.perf_counter()
        loss, _ = model.get_loss(out)
        sync()
        loss_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        loss.backward()
        sync()
        bwd.append(time.perf_counter() - t)
        opt.step()
        opt.zero_grad()
        if step > 0:           # the first step pays JIT / allocator warm-up
            for k, v in out["timings"].items():
                fwd.setdefault(k, []).append(v)
    counts = model.parameter_counts()
    print(f"config {cfg.CFG_TAG}, batch {bs}, {np.mean([len(s['points']) for s in samples]):.0f} points and "
          f"{np.mean([len(s['voxel_coords']) for s in samples]):.0f} voxels per frame, {torch.get_num_threads()} "
          f"threads\n")
    print("| stage | parameters (trainable) | time per step (ms) |")
    print("|---|---|---|")
    print(f"| data: read + labels + augment + voxelize (x{bs} frames) | - | {data_s * bs * 1e3:.0f} |")
    print(f"| of which voxelization (x{bs}) | - | {vox_s * bs * 1e3:.1f} |")
    for k, v in fwd.items():
        total, trainable = counts[k]
        print(f"| forward: {k} | {total:,} ({trainable:,}) | {np.mean(v) * 1e3:.0f} |")
    print(f"| loss | - | {np.mean(loss_s[1:]) * 1e3:.0f} |")
    print(f"| backward (all stages) | - | {np.mean(bwd[1:]) * 1e3:.0f} |")
    print(f"\ndata loading: {1 / data_s:.1f} frames/s per worker")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
