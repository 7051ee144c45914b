from .dataset import AnoVoxDataset, split_scenarios
from .reader import Calibration, FrameError, ScenarioReader, detect_layout, list_scenarios

__all__ = ["AnoVoxDataset", "split_scenarios", "Calibration", "FrameError", "ScenarioReader", "detect_layout",
           "list_scenarios"]
