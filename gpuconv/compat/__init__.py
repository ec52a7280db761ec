"""Drop-in replacements for convolution APIs that other libraries removed.

    gpuconv.compat.cudnn    CuPy 13's ``cupyx.cudnn`` convolution calls
                            (convolution_forward, convolution_backward_data,
                            convolution_backward_filter), removed in CuPy 14.

Code written for ``from cupyx import cudnn`` runs after changing that one
import to ``from gpuconv.compat import cudnn``.
"""
