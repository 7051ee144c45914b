from .voxel_image_fusion import PositionalEncoding, VoxelImageFusion

__all__ = {"VoxelImageFusion": VoxelImageFusion}
