"""m3_core: 3D-Spatial MultiModal Memory (M3) as a pure PyTorch library (imports no ROS)."""

from m3_core.errors import M3Error
from m3_core.types import Camera, ModelSpec

__all__ = ["Camera", "M3Error", "ModelSpec"]
__version__ = "0.1.0"
