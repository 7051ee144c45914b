from .anomaly_head import VoxelAnomalyHead

__all__ = {"VoxelAnomalyHead": VoxelAnomalyHead}
