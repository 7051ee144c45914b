from .cylinder_vfe import CylinderPointVFE

__all__ = {"CylinderPointVFE": CylinderPointVFE}
