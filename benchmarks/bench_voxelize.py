#!/usr/bin/env python
"""Voxelization speed, side by side in one process: our numba CPU kernel vs spconv's PointToVoxel (CPU) and a
torch.unique-based version; plus scatter-max backward (ours vs torch's generic scatter_reduce backward).

    python benchmarks/bench_voxelize.py [--sizes 30000 100000 1000000] [--threads 1]
Prints a markdown table of points/s and ratios.
"""
import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import cuda_ops  # noqa: E402
from cuda_ops import cpu_kernels, reference  # noqa: E402

GRID = (480, 360, 32)
CART_RANGE = (-50.0, -50.0, -4.0, 50.0, 50.0, 2.0)
CART_VOXEL = (0.2, 0.2, 0.2)
CART_GRID = tuple(int(round((CART_RANGE[i + 3] - CART_RANGE[i]) / CART_VOXEL[i])) for i in range(3))


def lidar_like(n, seed=0):
    g = np.random.default_rng(seed)
    az = g.uniform(-np.pi, np.pi, n)
    el = np.deg2rad(g.uniform(-25, 15, n))
    r = np.clip(1.8 / np.maximum(np.sin(-el), 0.03), 2, 60) * g.uniform(0.7, 1.0, n)
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el), g.random(n)], 1)
    return torch.from_numpy(pts.astype(np.float32))


def timeit(fn, repeat=5):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=1, help="numba and torch threads (1: single-threaded)")
    args = parser.parse_args(argv)
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    from spconv.pytorch.utils import PointToVoxel
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), torch "
          f"{torch.__version__}, numba {numba.__version__}\n")
    print("| points | ours cartesian (Mpts/s) | spconv PointToVoxel CPU (Mpts/s) | ratio | torch.unique version "
          "(Mpts/s) | ratio | ours cylindrical (Mpts/s) | ours index+unique only (Mpts/s) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        pts = lidar_like(n)
        batch = torch.zeros(n, dtype=torch.int64)
        ours_cart = timeit(lambda: cuda_ops.voxelize(pts, batch, "cartesian", CART_GRID, CART_RANGE, "drop"))
        gen = PointToVoxel(vsize_xyz=list(CART_VOXEL), coors_range_xyz=list(CART_RANGE), num_point_features=4,
                           max_num_voxels=n, max_num_points_per_voxel=32, device=torch.device("cpu"))
        spc = timeit(lambda: gen(pts))
        torch_u = timeit(lambda: reference.voxelize_ref(pts, batch, "cartesian", CART_GRID, CART_RANGE, "drop"))
        ours_cyl = timeit(lambda: cuda_ops.voxelize(pts, batch, "cylindrical", GRID,
                                                    (0, -np.pi, -4, 50, np.pi, 2), "clamp"))
        p_np, b_np = pts[:, :3].numpy(), batch.numpy()

        def index_unique():
            keys = cpu_kernels.grid_keys_cpu(p_np, b_np, False, *CART_GRID, *CART_RANGE, False)
            cpu_kernels.unique_inverse_cpu(keys)
        core = timeit(index_unique)
        mp = lambda t: f"{n / t / 1e6:.1f}"
        print(f"| {n:,} | {mp(ours_cart)} | {mp(spc)} | {spc / ours_cart:.1f}x | {mp(torch_u)} | "
              f"{torch_u / ours_cart:.1f}x | {mp(ours_cyl)} | {mp(core)} |")

    print("\nscatter-max forward + backward, 100k points x 64 channels -> 40k voxels")
    n, c, v = 100_000, 64, 40_000
    feats = torch.randn(n, c)
    index = torch.randint(0, v, (n,))
    grad = torch.randn(v, c)

    def ours():
        f = feats.clone().requires_grad_(True)
        cuda_ops.scatter_max(f, index, v).backward(grad)

    def generic():
        f = feats.clone().requires_grad_(True)
        torch.zeros(v, c).scatter_reduce(0, index[:, None].expand(-1, c), f, "amax", include_self=False).backward(grad)
    t_ours, t_generic = timeit(ours), timeit(generic)
    print(f"| ours {t_ours * 1e3:.1f} ms | torch scatter_reduce(amax) {t_generic * 1e3:.1f} ms | ratio "
          f"{t_generic / t_ours:.1f}x |")


if __name__ == "__main__":
    main()
