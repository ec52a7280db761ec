"""convolve2d / correlate2d with scipy.signal's semantics (being written)."""


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    raise NotImplementedError


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    raise NotImplementedError
