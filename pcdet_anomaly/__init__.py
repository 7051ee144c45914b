"""pcdet_anomaly: voxel-level anomaly segmentation from LiDAR and camera on AnoVox."""
__version__ = "0.1.0"
