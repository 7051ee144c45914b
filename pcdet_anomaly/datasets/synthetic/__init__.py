from .generator import GeneratorConfig, generate_dataset, generate_scenario, sensor_names
from .scene import FAMILY_LABEL, SHAPE_FAMILIES

__all__ = ["GeneratorConfig", "generate_dataset", "generate_scenario", "sensor_names", "FAMILY_LABEL",
           "SHAPE_FAMILIES"]
