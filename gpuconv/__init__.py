"""gpuconv: convolution for CuPy (GPU kernels) and NumPy (CPU path).

    conv1d / conv2d / conv3d                 torch.nn.functional semantics
    conv_transpose1d / 2d / 3d               torch.nn.functional semantics
    grad.conv{1,2,3}d_input / _weight        torch.nn.grad semantics
    separable_conv1d / 2d / 3d               depthwise then pointwise
    convolve2d / correlate2d                 scipy.signal semantics
    output_size, receptive_field             geometry helpers
    explain                                  which GPU kernel the dispatcher picks, and why
    set_float32_precision / get_float32_precision   "highest" | "high" | "medium" (torch's words)
    set_autotune / get_autotune              time the candidate kernels of each new shape once and
                                             keep the fastest (torch.backends.cudnn.benchmark)
    use_backend(backend)                     run the GPU path on another backend, e.g.
                                             gpuconv.sim.SimBackend() (kernels simulated on the CPU)

`import gpuconv.torch` adds autograd Functions and nn.Module wrappers (torch optional).
"""
from . import grad
from .api import conv1d, conv2d, conv3d, output_size, receptive_field
from .cuda import explain
from .cuda.autotune import get_autotune, set_autotune
from .engine import use_backend
from .precision import get_float32_precision, set_float32_precision
from .grad import conv1d_input, conv1d_weight, conv2d_input, conv2d_weight, conv3d_input, conv3d_weight
from .separable import separable_conv1d, separable_conv2d, separable_conv3d
from .signal import convolve2d, correlate2d
from .spec import ConvSpec
from .transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d

from ._version import __version__

__all__ = [
    "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv1d_input", "conv1d_weight", "conv2d_input", "conv2d_weight", "conv3d_input", "conv3d_weight",
    "separable_conv1d", "separable_conv2d", "separable_conv3d",
    "convolve2d", "correlate2d", "output_size", "receptive_field", "explain", "grad",
    "ConvSpec", "use_backend", "set_float32_precision", "get_float32_precision",
    "set_autotune", "get_autotune", "__version__",
]
