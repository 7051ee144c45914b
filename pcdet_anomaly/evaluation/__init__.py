from .ground_truth import frame_ground_truth
from .metrics import StreamingHistogram, anovox_threshold_metrics, binary_clf_curve, ranking_metrics
from .report import format_table, plot_curves, write_reports
from .voxel_eval import POLICIES, VoxelEvaluator, join_frame, linear_key, match_voxels

__all__ = ["frame_ground_truth", "StreamingHistogram", "anovox_threshold_metrics", "binary_clf_curve",
           "ranking_metrics", "format_table", "plot_curves", "write_reports", "VoxelEvaluator", "linear_key",
           "match_voxels", "join_frame", "POLICIES"]
