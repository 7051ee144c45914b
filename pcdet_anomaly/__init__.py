"""pcdet_anomaly: voxel-level anomaly segmentation from LiDAR and camera on AnoVox."""
import os as _os

# numba's default GNU OpenMP layer aborts when a DataLoader forks its workers; workqueue is fork-safe.
_os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
__version__ = "0.1.0"
