"""pip install -e .   (no compile step: custom ops are numba kernels, JIT-compiled on first use)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "pcdet_anomaly" / "__init__.py").read_text(), version)

setup(
    name="pcdet_anomaly",
    version=version["__version__"],
    description="Voxel-level anomaly segmentation from LiDAR and camera on AnoVox",
    python_requires=">=3.10",
    packages=find_packages(include=["pcdet_anomaly*", "cuda_ops*"]),
    package_data={"pcdet_anomaly": ["defaults.yaml"]},
    install_requires=[
        "torch>=2.1", "numba>=0.58", "numpy>=1.24", "easydict", "PyYAML", "tqdm", "matplotlib", "pillow",
        "scipy", "tensorboardX",
    ],
    extras_require={
        # spconv's wheel name carries the CUDA version: pick yours; -cu120 also runs on CPU.
        "spconv": ["spconv-cu120"],
        "viewer": ["open3d"],
        "test": ["pytest", "scikit-learn"],
    },
)
