"""gpuconv's public functions on dask arrays: a dask array in, a lazy dask array out.

Every function here has the public function's name and arguments; a public
call with a dask-array argument lands here.  Nothing is computed until the
caller computes: arguments are validated up front by running the public
function on zero-size stand-ins of the same shapes (same errors, no data
read), and the graph calls the public function once per output chunk, so
NumPy chunks take the CPU path and CuPy chunks the GPU path (with dask-cuda's
LocalCUDACluster, one worker per GPU).

How an output chunk is formed (the rule for every spatial axis):

* the input is extended once, lazily, exactly as the single-array call
  extends it at the array's edges: scipy's fill/wrap/symm boundaries (periodic
  for kernels longer than the image) for convolve2d/correlate2d, torch's
  padding and padding_mode (zeros/reflect/replicate/circular) for conv;
* an output chunk [p0, p1) reads extended-input positions
  [p0*stride, (p1-1)*stride + dilation*(kernel-1) + 1) -- its own rows plus a
  halo of dilation*(kernel-1) (stride 1: kernel-1); one task gathers that
  window from as many input chunks as it spans (slicing each to the rows it
  needs), so chunks smaller than the kernel and uneven last chunks need no
  special case and no rechunk of the input;
* the same task runs the public function on the window with no padding
  ('valid').

Output chunks follow the input's: boundaries at the input's chunk boundaries
divided by the stride (times it for transposed convolution), the last chunk
grown or shrunk to the output size ('full'/'valid' change the size).  The
channel axes and the small operands (kernels, weights, bias) are rechunked to
one chunk.  Batch chunks map directly.  Weight gradients sum one partial per
block with a tree reduction (fixed order: deterministic).

dask is imported here only; ``import gpuconv`` never imports it.
"""
from __future__ import annotations

import math
import operator
from functools import reduce

import numpy as np

import gpuconv

from . import signal as _sig
from .spec import expand_param, resolve_padding

__all__ = [
    "convolve2d", "correlate2d", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "separable_conv1d", "separable_conv2d", "separable_conv3d",
    "conv1d_input", "conv2d_input", "conv3d_input",
    "conv1d_weight", "conv2d_weight", "conv3d_weight",
]

# Partial weight gradients summed per task in the tree reduction (dask's own
# reductions default to 4-8 per level: few levels, small tasks).
_SPLIT_EVERY = 8


def _da():
    import dask.array as da
    return da


def is_dask(obj) -> bool:
    """Whether `obj` is a dask array (without importing dask when it is not loaded)."""
    import sys
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(obj, mod.Array)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def _xp(a):
    if type(a).__module__.startswith("cupy"):
        import cupy
        return cupy
    return np


def _as_dask(name, x):
    da = _da()
    if is_dask(x):
        if any(math.isnan(c) for cs in x.chunks for c in cs):
            raise ValueError(f"{name} has unknown chunk sizes {x.chunks}; call "
                             f"{name}.compute_chunk_sizes() first")
        return x
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    return da.from_array(x, chunks=tuple(max(s, 1) for s in x.shape) or ())


def _probe(x, like, shape=None):
    """A zero-memory stand-in of `x` (its dtype, shape `shape`, default x's) in the
    array type of `like`'s chunks: the public function validates it without
    reading data, and small operands may be NumPy next to CuPy chunks."""
    if x is None:
        return None
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    xp = _xp(like._meta)
    return xp.broadcast_to(xp.zeros((), dtype=x.dtype), x.shape if shape is None else shape)


def _probe_input(X, nd, like=None):
    """The batched input with a batch of 0 (no data read, no work done); other ranks
    keep their shape for the public function's rank error."""
    shape = (0,) + tuple(X.shape[1:]) if X.ndim == nd + 2 else X.shape
    return _probe(X, X if like is None else like, shape)


def _like(e, w):
    """A small operand in the array type of the block `e` (NumPy weights with CuPy chunks)."""
    if w is None:
        return None
    xp = _xp(e)
    return w if _xp(w) is xp else xp.asarray(w)


def _meta(x, ndim, dtype):
    from dask.array.utils import meta_from_array
    return meta_from_array(x._meta, ndim=ndim, dtype=dtype)


def _boundaries(in_chunks, out_len, num, den):
    """Output chunk sizes from input chunks: interior boundaries at ceil(start*num/den),
    clipped to out_len; empty chunks dropped (one empty chunk if out_len is 0)."""
    starts = np.cumsum((0,) + tuple(in_chunks))[1:-1]
    bounds = [0] + [min(out_len, -(-int(s) * num // den)) for s in starts] + [out_len]
    sizes = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]) if b > a)
    return sizes or (0,)


def _block_starts(chunks):
    return tuple(int(v) for v in np.cumsum((0,) + tuple(chunks))[:-1])


# ----------------------------------------------------------------------------
# the graph: one task per output chunk gathers its window of the source
#
# A window is given per axis as an index map: for each position of the block,
# the source index it reads, or -1 for the fill value.  Boundaries and padding
# modes are index maps (wrap: t mod M; symm/reflect: mirrored; replicate:
# clipped), halos are index ranges past the chunk, transposed convolution's
# missing inputs are -1 (zeros).  The task slices only the rows and columns it
# needs from each source chunk it touches, concatenates them (one copy) and
# reorders only where the map is not a plain range (mirrored edges, wraps).
# ----------------------------------------------------------------------------

def _axis_plan(idx, bounds):
    """(touched chunk ids, local slice per touched chunk, remap or None) for one axis."""
    idx = np.asarray(idx, dtype=np.int64)
    valid = idx[idx >= 0]
    if valid.size == 0:
        return (), (), (None if idx.size == 0 else idx.copy())
    cid = np.searchsorted(bounds, valid, side="right") - 1
    touched = np.unique(cid)
    slices, offsets, total = [], {}, 0
    for c in touched:
        v = valid[cid == c] - bounds[c]
        lo, hi = int(v.min()), int(v.max()) + 1
        slices.append(slice(lo, hi))
        offsets[int(c)] = (total, lo)
        total += hi - lo
    remap = np.full(idx.shape, -1, dtype=np.int64)
    pos = idx >= 0
    ci = np.searchsorted(bounds, idx[pos], side="right") - 1
    remap[pos] = [offsets[int(c)][0] + int(i) - int(bounds[c]) - offsets[int(c)][1]
                  for c, i in zip(ci, idx[pos])]
    if remap.size == total and np.array_equal(remap, np.arange(total)):
        remap = None
    return tuple(int(c) for c in touched), tuple(slices), remap


def _concat(xp, nested, depth, axis=0):
    if depth == 1:
        return nested[0] if len(nested) == 1 else xp.concatenate(nested, axis=axis)
    parts = [_concat(xp, n, depth - 1, axis + 1) for n in nested]
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=axis)


def _slice_nested(nested, slices, depth, prefix=()):
    if depth == 0:
        return nested[tuple(slices[a][i] for a, i in enumerate(prefix))]
    return [_slice_nested(n, slices, depth - 1, prefix + (i,)) for i, n in enumerate(nested)]


def _assemble(chunks, slices, remaps, shape, fill, dtype, like):
    """One window from the touched chunks: slice, concatenate, reorder, fill."""
    ndim = len(shape)
    if any(len(s) == 0 for s in slices):       # nothing read: every position is fill
        xp = _xp(like)
        return xp.full(shape, fill, dtype=dtype)
    sliced = _slice_nested(chunks, slices, ndim)
    first = sliced
    for _ in range(ndim):
        first = first[0]
    xp = _xp(first)
    arr = _concat(xp, sliced, ndim).astype(dtype, copy=False)
    for ax, remap in enumerate(remaps):
        if remap is None:
            continue
        neg = remap < 0
        arr = xp.take(arr, xp.asarray(np.where(neg, 0, remap)), axis=ax)
        if neg.any():
            sel = [slice(None)] * ndim
            sel[ax] = xp.asarray(np.flatnonzero(neg))
            arr[tuple(sel)] = fill
    return arr


def _run_block(sources, fn, args):
    windows = [_assemble(*src) for src in sources]
    return fn(*windows, *args)


def _source_spec(src, index_maps):
    """Per block (an index into the product of the axes' block lists): the task's
    source argument for `src`."""
    bounds = [np.cumsum((0,) + tuple(c)) for c in src.chunks]
    plans = [[_axis_plan(idx, b) for idx in maps] for maps, b in zip(index_maps, bounds)]

    def spec(bid, fill, dtype):
        per_axis = [plans[ax][b] for ax, b in enumerate(bid)]
        touched = [p[0] for p in per_axis]
        shape = tuple(len(index_maps[ax][b]) for ax, b in enumerate(bid))

        def keys(prefix, depth):
            if depth == len(touched):
                return (src.name,) + prefix
            return [keys(prefix + (c,), depth + 1) for c in touched[depth]]
        chunks = keys((), 0) if all(touched) else None
        return [chunks, [p[1] for p in per_axis], [p[2] for p in per_axis], shape, fill, dtype,
                src._meta]
    return spec


def _small_args(args):
    """Small dask operands as one-chunk arrays whose key stands in the task."""
    out, deps = [], []
    for a in args:
        if is_dask(a):
            a = a.rechunk(-1)
            deps.append(a)
            out.append((a.name,) + (0,) * a.ndim)
        else:
            out.append(a)
    return out, deps


def _window_tasks(label, sources, fn, args, nblocks):
    """{block id: task} running fn(*windows, *args) per block; sources are
    (array, index_maps, fill, dtype); returns (name, tasks, dependencies)."""
    from dask.base import tokenize
    args, deps = _small_args(args)
    specs = [(_source_spec(src, maps), fill, dtype) for src, maps, fill, dtype in sources]
    name = f"gpuconv-{label}-" + tokenize(label, [(s.name, [[np.asarray(m).tobytes() for m in mm]
                                                           for mm in maps], fill, str(dt))
                                                  for s, maps, fill, dt in sources],
                                          fn, args)
    tasks = {}
    for bid in np.ndindex(*nblocks):
        srcs = [spec(bid, fill, dtype) for spec, fill, dtype in specs]
        tasks[(name,) + bid] = (_run_block, srcs, fn, list(args))
    return name, tasks, [s for s, _, _, _ in sources] + deps


def _window_array(label, sources, fn, args, out_chunks, meta):
    """A dask array of fn(*windows, *args), one task per output chunk."""
    from dask.highlevelgraph import HighLevelGraph
    da = _da()
    nblocks = tuple(len(c) for c in out_chunks)
    name, tasks, deps = _window_tasks(label, sources, fn, args, nblocks)
    graph = HighLevelGraph.from_collections(name, tasks, dependencies=deps)
    return da.Array(graph, name, chunks=tuple(out_chunks), meta=meta)


def _identity_maps(chunks):
    return [np.arange(s, s + n) for s, n in zip(_block_starts(chunks), chunks)]


def _window_maps(out_chunks, stride, span, lo, L, mode):
    """Per output chunk [p0, p0+n): source indices of padded positions
    [p0*stride, (p0+n-1)*stride + span), the input starting at padded position lo."""
    maps = []
    for p0, n in zip(_block_starts(out_chunks), out_chunks):
        t = np.arange(p0 * stride, (p0 + n - 1) * stride + span) - lo if n else np.arange(0)
        maps.append(_extend_index(t, L, mode))
    return maps


def _extend_index(t, M, mode):
    """Source index of each extended position t (-1: fill).  scipy.signal's fill /
    wrap / symm (periodic for any distance); torch's zeros / reflect / replicate /
    circular (padding at most the size, as torch checks)."""
    t = np.asarray(t, dtype=np.int64)
    inside = (t >= 0) & (t < M)
    if mode in ("fill", "zeros"):
        return np.where(inside, t, -1)
    if M == 0:
        return np.full(t.shape, -1, dtype=np.int64)
    if mode in ("wrap", "circular"):
        return t % M
    if mode == "symm":
        u = t % (2 * M)
        return np.where(u < M, u, 2 * M - 1 - u)
    if mode == "reflect":
        return np.where(t < 0, -t, np.where(t >= M, 2 * (M - 1) - t, t))
    if mode == "replicate":
        return np.clip(t, 0, M - 1)
    raise ValueError(f"unknown extension {mode!r}")


# ----------------------------------------------------------------------------
# scipy.signal: convolve2d / correlate2d
# ----------------------------------------------------------------------------

def _signal_block(e, kernel, options):
    return gpuconv.convolve2d(e, _like(e, kernel), mode="valid", **options)


def _signal_method(a, k, out2, origin, boundary, fill):
    try:
        from .fft import choose_method
    except ImportError:          # no FFT path: the direct sum is the only method
        return "direct"
    device = "cpu" if _xp(a._meta) is np else "gpu"
    return choose_method(a.shape[-2:], k.shape[-2:], out2, origin, boundary, a.dtype, device,
                         fill)


def _signal(fname, flip, in1, in2, mode, boundary, fillvalue, options):
    da = _da()
    A = _as_dask("in1", in1)
    B = _as_dask("in2", in2)
    # scipy's validation on the lazy arrays (shapes and dtypes only; casts stay lazy)
    a, k, out_shape, origin, bnd, fill, swapped = _sig.canonicalize(
        fname, flip, A, B, mode, boundary, fillvalue)
    if options:   # keywords of the public function: checked on a 1x1 problem now
        getattr(gpuconv, fname)(np.ones((1, 1), a.dtype), np.ones((1, 1), a.dtype), "valid",
                                **options)
    batch, out2 = tuple(out_shape[:-2]), tuple(out_shape[-2:])
    nb = len(batch)
    kh, kw = k.shape[-2:]
    if options.get("method", "auto") == "auto":
        # decided once, for the whole image, as the single-array call decides it: per
        # chunk, 'auto' could pick FFT for some windows and direct sums for others
        options = dict(options, method=_signal_method(a, k, out2, origin, bnd, fill))
    src = B if swapped else A                     # the image, before its lazy cast
    if nb:   # batches: the image broadcast (lazily) to the batch, its batch chunks kept
        src = da.broadcast_to(src, batch + src.shape[-2:])
    out_chunks = tuple(src.chunks[:nb]) + tuple(
        _boundaries(src.chunks[nb + i], out2[i], 1, 1) for i in range(2))
    meta = _meta(a, nb + 2, a.dtype)
    if 0 in out_shape or 0 in k.shape:
        out = da.zeros(out_shape, dtype=a.dtype, chunks=out_chunks)
        if _xp(a._meta) is not np:
            out = out.map_blocks(_xp(a._meta).asarray, meta=meta)
        return out
    maps = [_identity_maps(c) for c in src.chunks[:nb]]
    maps += [_window_maps(out_chunks[nb + i], 1, (kh, kw)[i], -origin[i], src.shape[nb + i], bnd)
             for i in range(2)]
    sources = [(src, maps, fill, a.dtype)]
    # k is flipped (convolve) or conjugated (correlate); convolving with its
    # reversal correlates with k itself, which is what the core computes.
    kernel = k[..., ::-1, ::-1]
    if kernel.ndim > 2:     # a kernel per image: one window of the kernels per batch chunk
        kernel = da.broadcast_to(kernel, batch + (kh, kw)).rechunk(src.chunks[:nb] + (-1, -1))
        kmaps = [_identity_maps(c) for c in kernel.chunks[:nb]]
        kmaps += [[np.arange(n)] * len(out_chunks[nb + i]) for i, n in enumerate((kh, kw))]
        sources.append((kernel, kmaps, fill, a.dtype))
        out = _window_array(fname, sources, _signal_block, [options], out_chunks, meta)
    else:
        out = _window_array(fname, sources, _signal_block, [kernel, options], out_chunks, meta)
    if swapped and not flip:
        out = out[..., ::-1, ::-1]
    return out


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0, method="auto", **options):
    """gpuconv.convolve2d on dask arrays (lazy): scipy.signal.convolve2d's semantics.

    The image (in1, or in2 where scipy's 'valid' swap makes it the larger) keeps
    its chunks; the output's chunks are the image's, the last one grown ('full')
    or shrunk ('valid', dropping chunks that vanish) to the output size.  Each
    output chunk is computed from its rows and columns of the extended image
    plus a halo of kernel-1 (gathered by its task from neighbouring chunks however
    small: the input is never rechunked), boundaries exact at the image's
    edges.  The kernel is rechunked to one chunk.  `options` go to the public
    function per chunk (`method` and any other keyword of the public function).

    Batches ((..., H, W) and (..., R, S), broadcast as the public function does):
    the image keeps its batch chunks (a broadcast one is broadcast lazily), a
    kernel per image is rechunked to the image's batch chunks, and each chunk is
    one batched call.
    """
    return _signal("convolve2d", True, in1, in2, mode, boundary, fillvalue,
                   dict(options, method=method))


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0, method="auto", **options):
    """gpuconv.correlate2d on dask arrays (lazy): scipy.signal.correlate2d's semantics.
    Chunks, halos and rechunking as convolve2d."""
    return _signal("correlate2d", False, in1, in2, mode, boundary, fillvalue,
                   dict(options, method=method))


# ----------------------------------------------------------------------------
# conv: forward
# ----------------------------------------------------------------------------

def _batched(X, nd):
    """(X as batched, whether it was); ranks other than nd+1/nd+2 pass through for
    the public function's error."""
    if X.ndim == nd + 1:
        return X[None], False
    return X, True


def _forward_sources(X, pads, padding_mode, kernel, stride, dilation, out_sizes, dtype,
                     batch_chunks=None, out_chunks=None):
    """The source of a forward-style window (input padded at the array's edges by
    padding_mode, halo dilation*(kernel-1)) and the output chunks."""
    nd = len(kernel)
    X = X.rechunk({1: -1})
    if out_chunks is None:
        out_chunks = tuple(_boundaries(X.chunks[2 + i], out_sizes[i], 1, stride[i])
                           for i in range(nd))
    batch_chunks = X.chunks[0] if batch_chunks is None else batch_chunks
    maps = [_identity_maps(batch_chunks), _identity_maps(X.chunks[1])]
    for i in range(nd):
        maps.append(_window_maps(out_chunks[i], stride[i], dilation[i] * (kernel[i] - 1) + 1,
                                 pads[i][0], X.shape[2 + i], padding_mode))
    return (X, maps, dtype.type(0), dtype), tuple(out_chunks)


def _conv_block(e, w, b, stride, dilation, groups, options):
    fn = (gpuconv.conv1d, gpuconv.conv2d, gpuconv.conv3d)[e.ndim - 3]
    return fn(e, _like(e, w), _like(e, b), stride, 0, dilation, groups, **options)


def _conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode, options):
    public = (gpuconv.conv1d, gpuconv.conv2d, gpuconv.conv3d)[nd - 1]
    X0 = _as_dask("input", input)
    X, batched = _batched(X0, nd)
    probe = public(_probe_input(X, nd), _probe(weight, X), _probe(bias, X), stride, padding,
                   dilation, groups, padding_mode=padding_mode, **options)
    kernel = tuple(int(s) for s in weight.shape[2:])
    stride = expand_param("stride", stride, nd)
    dilation = expand_param("dilation", dilation, nd)
    pads = resolve_padding(padding, kernel, stride, dilation, nd)
    source, out_chunks = _forward_sources(X, pads, padding_mode, kernel, stride, dilation,
                                          probe.shape[2:], probe.dtype)
    out = _window_array(f"conv{nd}d", [source], _conv_block,
                        [weight, bias, stride, dilation, groups, options],
                        (source[0].chunks[0], (probe.shape[1],)) + out_chunks,
                        _meta(X, nd + 2, probe.dtype))
    return out if batched else out[0]


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", **options):
    """gpuconv.conv1d on a dask `input` (lazy); as conv2d."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode, options)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", **options):
    """gpuconv.conv2d on a dask `input` (lazy): batch chunks map directly, the channel
    axis is rechunked to one chunk, spatial chunks read halos of dilation*(kernel-1)
    from their neighbours (each output chunk's task gathers its window), and padding
    and padding_mode are applied once at the array's edges, exactly as the
    single-array call does.  The other keywords (activation, algorithm, precision,
    ...) go to the public function, checked before the graph is built."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode, options)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", **options):
    """gpuconv.conv3d on a dask `input` (lazy); as conv2d."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode, options)


# ----------------------------------------------------------------------------
# separable
# ----------------------------------------------------------------------------

def _separable_block(e, dw, pw, b, stride, dilation, options):
    fn = (gpuconv.separable_conv1d, gpuconv.separable_conv2d,
          gpuconv.separable_conv3d)[e.ndim - 3]
    return fn(e, _like(e, dw), _like(e, pw), _like(e, b), stride, 0, dilation, **options)


def _separable(nd, input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation,
               padding_mode, options):
    public = (gpuconv.separable_conv1d, gpuconv.separable_conv2d,
              gpuconv.separable_conv3d)[nd - 1]
    X0 = _as_dask("input", input)
    X, batched = _batched(X0, nd)
    probe = public(_probe_input(X, nd), _probe(depthwise_weight, X), _probe(pointwise_weight, X),
                   _probe(bias, X), stride, padding, dilation, padding_mode=padding_mode,
                   **options)
    kernel = tuple(int(s) for s in depthwise_weight.shape[2:])
    stride = expand_param("stride", stride, nd)
    dilation = expand_param("dilation", dilation, nd)
    pads = resolve_padding(padding, kernel, stride, dilation, nd)
    source, out_chunks = _forward_sources(X, pads, padding_mode, kernel, stride, dilation,
                                          probe.shape[2:], probe.dtype)
    out = _window_array(f"separable_conv{nd}d", [source], _separable_block,
                        [depthwise_weight, pointwise_weight, bias, stride, dilation, options],
                        (source[0].chunks[0], (probe.shape[1],)) + out_chunks,
                        _meta(X, nd + 2, probe.dtype))
    return out if batched else out[0]


def separable_conv1d(input, depthwise_weight, pointwise_weight, bias=None, stride=1, padding=0,
                     dilation=1, *, padding_mode="zeros", **options):
    """gpuconv.separable_conv1d on a dask `input` (lazy); chunks as conv1d."""
    return _separable(1, input, depthwise_weight, pointwise_weight, bias, stride, padding,
                      dilation, padding_mode, options)


def separable_conv2d(input, depthwise_weight, pointwise_weight, bias=None, stride=1, padding=0,
                     dilation=1, *, padding_mode="zeros", **options):
    """gpuconv.separable_conv2d on a dask `input` (lazy); chunks as conv2d (halos
    from the depthwise kernel; the pointwise step is per pixel)."""
    return _separable(2, input, depthwise_weight, pointwise_weight, bias, stride, padding,
                      dilation, padding_mode, options)


def separable_conv3d(input, depthwise_weight, pointwise_weight, bias=None, stride=1, padding=0,
                     dilation=1, *, padding_mode="zeros", **options):
    """gpuconv.separable_conv3d on a dask `input` (lazy); chunks as conv3d."""
    return _separable(3, input, depthwise_weight, pointwise_weight, bias, stride, padding,
                      dilation, padding_mode, options)


# ----------------------------------------------------------------------------
# transposed convolution and the input gradient
# ----------------------------------------------------------------------------

def _transpose_maps(L, O, k, s, p, d, in_chunks):
    """Per output chunk [o0, o0+m): the input indices that reach it (-1: a zero input,
    added so the window's full, unpadded transposed output covers the chunk), and
    where the chunk starts in that output."""
    out_chunks = _boundaries(in_chunks, O, s, 1)
    reach = d * (k - 1)
    maps, starts = [], []
    for o0, m in zip(_block_starts(out_chunks), out_chunks):
        # output o (padded position o + p) takes input i where i*s + d*r = o + p
        ia = max(0, -(-(o0 + p - reach) // s))
        ib = min(L - 1, (o0 + m - 1 + p) // s)
        n = max(0, ib - ia + 1)
        if n:
            left = o0 + p - ia * s
        else:            # no input reaches the chunk: zero inputs give bias (+ activation)
            ia, left = 0, (o0 + p) % s
        pre = max(0, -(left // s))                          # ceil(-left / s)
        left += pre * s
        need = -(-(left + m - reach - 1) // s) + 1          # inputs for the window's end
        post = max(0, need - (n + pre), 1 - (n + pre))
        maps.append(np.concatenate([np.full(pre, -1), np.arange(ia, ia + n), np.full(post, -1)]))
        starts.append((left, m))
    return out_chunks, maps, starts


def _transpose_block(x, w, b, stride, groups, dilation, options, as_input, crop):
    """The window's full (unpadded) transposed output, cropped to the chunk: through
    conv_transpose{n}d (bias, activation), or conv{n}d_input for the input gradient."""
    nd = x.ndim - 2
    if as_input:
        full = tuple((n - 1) * s + d * (k - 1) + 1
                     for n, s, d, k in zip(x.shape[2:], stride, dilation, w.shape[2:]))
        fn = (gpuconv.conv1d_input, gpuconv.conv2d_input, gpuconv.conv3d_input)[nd - 1]
        out = fn((x.shape[0], w.shape[1] * groups) + full, _like(x, w), x, stride, 0, dilation,
                 groups, **options)
    else:
        fn = (gpuconv.conv_transpose1d, gpuconv.conv_transpose2d,
              gpuconv.conv_transpose3d)[nd - 1]
        out = fn(x, _like(x, w), _like(x, b), stride, 0, 0, groups, dilation, **options)
    sel = (slice(None), slice(None)) + tuple(slice(left, left + m) for left, m in crop)
    return _xp(out).ascontiguousarray(out[sel])


def _transpose_graph(label, nd, X, weight, bias, stride, padding, groups, dilation, options,
                     as_input, out_sizes, dtype):
    from dask.highlevelgraph import HighLevelGraph
    da = _da()
    kernel = tuple(int(s) for s in weight.shape[2:])
    X = X.rechunk({1: -1})
    maps = [_identity_maps(X.chunks[0]), _identity_maps(X.chunks[1])]
    starts, out_chunks = [], []
    for i in range(nd):
        oc, m, st = _transpose_maps(X.shape[2 + i], out_sizes[i], kernel[i], stride[i],
                                    padding[i], dilation[i], X.chunks[2 + i])
        maps.append(m)
        starts.append(st)
        out_chunks.append(oc)
    cout = int(weight.shape[1]) * groups
    chunks = (X.chunks[0], (cout,)) + tuple(out_chunks)
    nblocks = tuple(len(c) for c in chunks)
    name, tasks, tdeps = _window_tasks(label, [(X, maps, dtype.type(0), dtype)], _transpose_block,
                                       [weight, bias, stride, groups, dilation, options,
                                        as_input, None], nblocks)
    for key, task in tasks.items():     # each block's crop goes into its own task
        bid = key[1:]
        crop = [starts[i][bid[2 + i]] for i in range(nd)]
        fn_args = list(task[3])
        fn_args[-1] = crop
        tasks[key] = (task[0], task[1], task[2], fn_args)
    graph = HighLevelGraph.from_collections(name, tasks, dependencies=tdeps)
    return da.Array(graph, name, chunks=chunks, meta=_meta(X, nd + 2, dtype))


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation,
                    options):
    public = (gpuconv.conv_transpose1d, gpuconv.conv_transpose2d,
              gpuconv.conv_transpose3d)[nd - 1]
    X0 = _as_dask("input", input)
    X, batched = _batched(X0, nd)
    probe = public(_probe_input(X, nd), _probe(weight, X), _probe(bias, X), stride, padding,
                   output_padding, groups, dilation, **options)
    stride = expand_param("stride", stride, nd)
    padding = expand_param("padding", padding, nd)
    dilation = expand_param("dilation", dilation, nd)
    out = _transpose_graph(f"conv_transpose{nd}d", nd, X, weight, bias, stride, padding, groups,
                           dilation, options, False, probe.shape[2:], probe.dtype)
    return out if batched else out[0]


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, **options):
    """gpuconv.conv_transpose1d on a dask `input` (lazy); chunks as conv_transpose2d."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, options)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, **options):
    """gpuconv.conv_transpose2d on a dask `input` (lazy): output chunks at the input's
    chunk boundaries times the stride; each reads the input positions that reach it
    (a halo of about dilation*(kernel-1)/stride), padded with zero inputs where none
    do, so bias and activation land on every output as in the single-array call.
    Keywords (activation, precision, algorithm, ...) go to the public function."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, options)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, **options):
    """gpuconv.conv_transpose3d on a dask `input` (lazy); chunks as conv_transpose2d."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, options)


def _conv_input(nd, input_size, weight, grad_output, stride, padding, dilation, groups, options):
    public = (gpuconv.conv1d_input, gpuconv.conv2d_input, gpuconv.conv3d_input)[nd - 1]
    G0 = _as_dask("grad_output", grad_output)
    G, batched = _batched(G0, nd)
    size = tuple(int(s) for s in input_size)
    if batched and len(size) == nd + 2:
        probe_size = (0,) + size[1:]
    elif not batched and len(size) == nd + 1:
        probe_size = (0,) + size
    else:
        probe_size = size
    public(probe_size, _probe(weight, G), _probe_input(G, nd), stride, padding, dilation, groups,
           **options)
    stride = expand_param("stride", stride, nd)
    padding = expand_param("padding", padding, nd)
    dilation = expand_param("dilation", dilation, nd)
    out = _transpose_graph(f"conv{nd}d_input", nd, G, weight, None, stride, padding, groups,
                           dilation, options, True, size[-nd:], np.dtype(G.dtype))
    return out if batched else out[0]


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 **options):
    """gpuconv.conv1d_input with a dask `grad_output` (lazy); as conv2d_input."""
    return _conv_input(1, input_size, weight, grad_output, stride, padding, dilation, groups,
                       options)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 **options):
    """gpuconv.conv2d_input with a dask `grad_output` (lazy): chunked as
    conv_transpose2d, each chunk the public conv2d_input of its window."""
    return _conv_input(2, input_size, weight, grad_output, stride, padding, dilation, groups,
                       options)


def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 **options):
    """gpuconv.conv3d_input with a dask `grad_output` (lazy); as conv2d_input."""
    return _conv_input(3, input_size, weight, grad_output, stride, padding, dilation, groups,
                       options)


# ----------------------------------------------------------------------------
# weight gradient: one partial per block, tree-summed
# ----------------------------------------------------------------------------

def _weight_block(e, g, weight_size, stride, dilation, groups, options):
    fn = (gpuconv.conv1d_weight, gpuconv.conv2d_weight, gpuconv.conv3d_weight)[e.ndim - 3]
    return fn(e, weight_size, g, stride, 0, dilation, groups, **options)


def _sum(*parts):
    return reduce(operator.add, parts)


def _conv_weight(nd, input, weight_size, grad_output, stride, padding, dilation, groups,
                 options):
    from dask.highlevelgraph import HighLevelGraph
    da = _da()
    public = (gpuconv.conv1d_weight, gpuconv.conv2d_weight, gpuconv.conv3d_weight)[nd - 1]
    X0 = _as_dask("input", input)
    G0 = _as_dask("grad_output", grad_output)
    X, xb = _batched(X0, nd)
    G, gb = _batched(G0, nd)
    if xb != gb:   # one batched, one not: the public function's error, on zero-size stand-ins
        public(_probe(X0, X0, (0,) * X0.ndim), weight_size, _probe(G0, X0, (0,) * G0.ndim),
               stride, padding, dilation, groups, **options)
    probe = public(_probe_input(X, nd), weight_size, _probe_input(G, nd, X), stride, padding,
                   dilation, groups, **options)
    wsize = tuple(int(s) for s in probe.shape)
    kernel = wsize[2:]
    stride = expand_param("stride", stride, nd)
    dilation = expand_param("dilation", dilation, nd)
    pads = resolve_padding(padding, kernel, stride, dilation, nd)
    G = G.rechunk({1: -1})
    dtype = probe.dtype
    # one window of the padded input per grad_output chunk (its batch rows, its halo)
    xsrc, out_chunks = _forward_sources(X, pads, "zeros", kernel, stride, dilation, None, dtype,
                                        batch_chunks=G.chunks[0], out_chunks=G.chunks[2:])
    gsrc = (G, [_identity_maps(c) for c in G.chunks], dtype.type(0), dtype)
    nblocks = tuple(len(c) for c in G.chunks)
    name, tasks, deps = _window_tasks(f"conv{nd}d_weight", [xsrc, gsrc], _weight_block,
                                      [wsize, stride, dilation, groups, options],
                                      nblocks)
    # tree reduction of the partials, in a fixed order
    level, keys = 0, list(tasks)
    while len(keys) > 1:
        level += 1
        nxt = []
        for j in range(0, len(keys), _SPLIT_EVERY):
            key = (f"{name}-sum{level}", j // _SPLIT_EVERY)
            tasks[key] = (_sum, *keys[j:j + _SPLIT_EVERY])
            nxt.append(key)
        keys = nxt
    out_name = f"{name}-total"
    tasks[(out_name,) + (0,) * (nd + 2)] = keys[0]
    graph = HighLevelGraph.from_collections(out_name, tasks, dependencies=deps)
    return da.Array(graph, out_name, chunks=tuple((s,) for s in wsize),
                    meta=_meta(X, nd + 2, dtype))


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  **options):
    """gpuconv.conv1d_weight on dask arrays (lazy); as conv2d_weight."""
    return _conv_weight(1, input, weight_size, grad_output, stride, padding, dilation, groups,
                        options)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  **options):
    """gpuconv.conv2d_weight on dask arrays (lazy): grad_output keeps its chunks
    (input is gathered per grad_output chunk: its batch rows and its halo), each
    chunk gives a partial weight gradient through the public function (with its
    keywords: deterministic, precision, ...), and the partials are summed by a
    tree reduction of fixed order (a one-chunk result)."""
    return _conv_weight(2, input, weight_size, grad_output, stride, padding, dilation, groups,
                        options)


def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  **options):
    """gpuconv.conv3d_weight on dask arrays (lazy); as conv2d_weight."""
    return _conv_weight(3, input, weight_size, grad_output, stride, padding, dilation, groups,
                        options)
