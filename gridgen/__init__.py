"""gridgen: render the cartesian product of Stable Diffusion settings and explore it as a grid."""

from gridgen.errors import GridError
from gridgen.quiet_logs import quiet_torchvision_fallback

quiet_torchvision_fallback()

__version__ = "0.1.0"
__all__ = ["GridError", "__version__"]
