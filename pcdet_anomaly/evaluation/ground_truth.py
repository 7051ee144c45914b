"""Ground-truth voxels of one frame on the AnoVox evaluation grid, as binary labels."""
from __future__ import annotations

import numpy as np

from ..datasets.anovox.labels import TargetMapper
from ..datasets.anovox.reader import ScenarioReader
from .voxel_eval import voxel_ranges

__all__ = ["frame_ground_truth"]


def frame_ground_truth(reader: ScenarioReader, frame: int, targets: TargetMapper, source: str = "voxel_grid",
                       max_range: float = -1.0, eval_grid=None, z_shift: float | None = None):
    """-> (voxels [K, 3] int64, label ids [K] int64, labels [K] int8 1 anomaly / 0 normal); ignored labels removed.

    source 'voxel_grid' reads VOXEL_GRID (nothing else is needed); 'semantic_lidar' re-voxelizes the semantic cloud
    with the generator's rule (as the official benchmark does) with the scenario's vertical shift `z_shift`.
    max_range > 0 keeps voxels whose centre lies within that xy distance of the sensor.
    """
    if source == "voxel_grid":
        grid = reader.read_voxel_grid(frame).astype(np.int64)
    elif source == "semantic_lidar":
        from ..datasets.synthetic.sensors import build_voxel_grid
        if z_shift is None:
            raise ValueError("ground truth from semantic_lidar needs the scenario's z_shift")
        kwargs = {"z_shift": z_shift}
        if eval_grid is not None:
            kwargs.update(voxel_size=eval_grid.VOXEL_SIZE, grid_size=tuple(eval_grid.GRID_SIZE),
                          offset=tuple(eval_grid.OFFSET))
        grid = build_voxel_grid(reader.read_semantic_points(frame), **kwargs).astype(np.int64)
    else:
        raise ValueError(f"ground-truth source must be voxel_grid or semantic_lidar, got {source!r}")
    labels = targets.binary(grid[:, 3])
    keep = labels != targets.ignore_index
    if max_range > 0:
        keep &= voxel_ranges(grid[:, :3], eval_grid) <= max_range
    return grid[keep, :3], grid[keep, 3], labels[keep].astype(np.int8)
