from .cylinder3d import Cylinder3DUNet

__all__ = {"Cylinder3DUNet": Cylinder3DUNet}
