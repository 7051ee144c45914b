"""Custom ops with one Python API and several backends (numba CPU, numba.cuda, pure-torch reference)."""
import os as _os

# numba's default GNU OpenMP layer aborts when a DataLoader forks its workers; workqueue is fork-safe.
_os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
from .ops import (VoxelizeResult, eval_grid_scores, label_vote, project_to_image, scatter_max, scatter_mean,
                  voxelize)

__all__ = ["VoxelizeResult", "voxelize", "label_vote", "eval_grid_scores", "scatter_max", "scatter_mean",
           "project_to_image"]
