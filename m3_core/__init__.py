"""m3_core: 3D-Spatial MultiModal Memory (M3) as a pure PyTorch library (imports no ROS)."""

import os

# OpenMP threads that spin-wait starve each other when the CPU is shared (a robot's computer,
# a busy workstation): measured 5-7x slower CPU rasterization. It must be set before torch is
# imported to take effect; an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from m3_core.errors import M3Error
from m3_core.types import Camera, ModelSpec

__all__ = ["Camera", "M3Error", "ModelSpec"]
__version__ = "0.1.0"
