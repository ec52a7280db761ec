"""gpuconv: convolution for CuPy (GPU kernels) and NumPy (CPU path).

    conv1d / conv2d / conv3d      torch.nn.functional semantics
    convolve2d / correlate2d      scipy.signal semantics
    output_size, receptive_field  geometry helpers
"""
from .api import conv1d, conv2d, conv3d, output_size, receptive_field
from .signal import convolve2d, correlate2d
from .spec import ConvSpec

__version__ = "0.1.0"

__all__ = [
    "conv1d", "conv2d", "conv3d", "convolve2d", "correlate2d",
    "output_size", "receptive_field", "ConvSpec", "__version__",
]
