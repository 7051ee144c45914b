"""Model registry: the assembled networks by MODEL.NAME."""
from .detector import CylinderFusionNet

__all__ = {"CylinderFusionNet": CylinderFusionNet}


def build_network(model_cfg, data_cfg):
    if model_cfg.NAME not in __all__:
        raise KeyError(f"MODEL.NAME '{model_cfg.NAME}' is not registered; valid: {sorted(__all__)}")
    return __all__[model_cfg.NAME](model_cfg, data_cfg)
