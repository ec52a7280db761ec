"""kernels_cu/im2col.cu: lowering to a column matrix, the GEMM through xp.matmul (cuBLAS),
bias + activation fused into the transposing epilogue (variant "im2col")."""
from __future__ import annotations

import math

from .._types import ACT_CODES, COMPLEX, REAL, ctype, expr
from ..launch import GRID_YZ_MAX, I32, INT32_MAX, Variant, bias_args, geometry_args
from ...spec import ConvSpec

MODULE = "im2col.cu"
THREADS = 256
WORKSPACE_CAP = 1 << 30          # 1 GiB: the GEMM is as efficient on 1 GiB of columns as on more
WORKSPACE_FREE_FRACTION = 4      # ... and never more than 1/4 of free memory (the caller's arrays,
                                 # CuPy's pool and other streams need the rest)


# Column elements to aim for per launch wave: 132 SMs x 2048 resident threads x 4 (an
# estimate, MEASURE); each thread walks at least MIN_ROWS rows so its two decodes (~120
# instructions) cost < 8 instructions per element.
TARGET_THREADS = 132 * 2048 * 4
MIN_ROWS = 16


def index_type(spec: ConvSpec) -> str:
    """The in-plane offset type of im2col: int unless one channel's D*H*W passes 2^31."""
    return "int" if math.prod(spec.in_size) <= INT32_MAX else "long long"


def im2col_name(dtype, index: str = "int", pm: int = 0) -> str:
    """im2col<T> (32-bit in-plane offsets) or im2col_i64<T>; pm = 1: im2col_pm /
    im2col_i64_pm, which resolve a non-zero padding mode (kernels of their own: the zeros
    kernels keep their registers)."""
    name = ("im2col" if index == "int" else "im2col_i64") + ("_pm" if pm else "")
    return expr(name, ctype(dtype))


def im2col_grid(spec: ConvSpec, cur: int):
    """(grid, rows_per_split): column blocks x row splits (<= 65535)."""
    L = math.prod(spec.out_size)
    rows = spec.c * math.prod(spec.kernel)
    ncol = cur * L
    per = max(MIN_ROWS, -(-rows * ncol // TARGET_THREADS))
    per = max(per, -(-rows // GRID_YZ_MAX))
    return (-(-ncol // THREADS), -(-rows // per), 1), per


def _grid3(L: int, k: int, n: int):
    return (-(-L // THREADS), min(k, GRID_YZ_MAX), min(max(1, n), GRID_YZ_MAX))


def col2out_name(dtype, act: int) -> str:
    return expr("col2out", ctype(dtype), act)


def bias_act_name(dtype, act: int) -> str:
    return expr("bias_act", ctype(dtype), act)


INSTANTIATIONS = (
    tuple(im2col_name(dt, i, pm) for dt in REAL + COMPLEX for i in ("int", "long long") for pm in (0, 1))
    + tuple(col2out_name(dt, a) for dt in REAL for a in ACT_CODES)
    + tuple(col2out_name(dt, 0) for dt in COMPLEX)
    + tuple(bias_act_name(dt, a) for dt in REAL for a in ACT_CODES)
    + tuple(bias_act_name(dt, 0) for dt in COMPLEX))
SOURCES = {MODULE: INSTANTIATIONS}


def is_pointwise(spec: ConvSpec) -> bool:
    """1x1 (x1x1), stride 1, unpadded: x viewed as (N, G, Cg, L) is the GEMM operand itself."""
    return (all(k == 1 for k in spec.kernel) and all(s == 1 for s in spec.stride)
            and not any(lo or hi for lo, hi in spec.pad))


def image_bytes(spec: ConvSpec) -> int:
    """Workspace per image of a chunk: its columns plus its GEMM result."""
    L = math.prod(spec.out_size)
    taps = math.prod(spec.kernel)
    return spec.dtype.itemsize * L * (spec.c * taps + spec.k)


def chunk(spec: ConvSpec, free_bytes: int) -> int:
    """Images per chunk: as many as fit the workspace budget, at least one."""
    budget = min(WORKSPACE_CAP, free_bytes // WORKSPACE_FREE_FRACTION)
    L = max(1, math.prod(spec.out_size))
    nb = max(1, budget // max(1, image_bytes(spec)))
    nb = min(nb, max(1, spec.n), max(1, INT32_MAX // L))   # cuBLAS takes int dimensions
    return int(nb)


def supports(spec: ConvSpec):
    if spec.dtype not in REAL + COMPLEX:
        return False, f"dtype {spec.dtype}"
    L = math.prod(spec.out_size)
    if L > INT32_MAX or spec.c * math.prod(spec.kernel) > INT32_MAX:
        return False, "GEMM dimensions (or the column matrix's rows) exceed 32 bits"
    return True, "any geometry, real or complex (GEMM through xp.matmul)"


def workspace_bytes(spec: ConvSpec, config: dict) -> int:
    if is_pointwise(spec):
        return 0
    return int(config.get("chunk", 1)) * image_bytes(spec)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _alloc_workspace(xp, spec, nb):
    """(cols, gemm_out, nb): halves the chunk until the workspace fits."""
    L = math.prod(spec.out_size)
    rows = spec.c * math.prod(spec.kernel)
    while True:
        try:
            cols = xp.empty(rows * nb * L, dtype=spec.dtype)
            gout = xp.empty(spec.k * nb * L, dtype=spec.dtype)
            return cols, gout, nb
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            if not _is_oom(exc):
                raise
            if nb == 1:
                raise MemoryError(
                    f"im2col needs {image_bytes(spec)} B of workspace for a single image and "
                    f"that could not be allocated; use algorithm='direct' or 'tiled_smem'") from exc
            nb = max(1, nb // 2)


def launch(backend, x, w, b, y, spec, act, config):
    geo = geometry_args(spec)
    xp = backend.xp
    G, Kg, Cg, N = spec.groups, spec.k_per_group, spec.c_per_group, spec.n
    taps = math.prod(spec.kernel)
    L = math.prod(spec.out_size)
    wmat = w.reshape(G, Kg, Cg * taps)
    bias, has_bias = bias_args(b, w)

    if is_pointwise(spec):
        # (G, Kg, Cg) @ (N, G, Cg, L) -> (N, G, Kg, L), which is y's own layout
        xp.matmul(wmat[None], x.reshape(N, G, Cg, L), out=y.reshape(N, G, Kg, L))
        if has_bias or act:
            fn = backend.get_function(MODULE, INSTANTIATIONS, bias_act_name(spec.dtype, act))
            fn(_grid3(L, spec.k, N), (THREADS,), (y, bias, I32(N), I32(spec.k), I32(L), has_bias))
        return

    # columns (and the kernel's int column index, rounded up to whole blocks) below 2^31
    nb = min(int(config.get("chunk") or 1), max(1, (INT32_MAX - THREADS) // max(1, L)))
    cols_buf, gout_buf, nb = _alloc_workspace(xp, spec, min(nb, N))
    f_im2col = backend.get_function(MODULE, INSTANTIATIONS, im2col_name(spec.dtype, index_type(spec),
                                                                       int(spec.padding_mode != "zeros")))
    f_out = backend.get_function(MODULE, INSTANTIATIONS, col2out_name(spec.dtype, act))
    for n0 in range(0, N, nb):
        cur = min(nb, N - n0)
        cols = cols_buf[: spec.c * taps * cur * L]
        grid_, per = im2col_grid(spec, cur)
        f_im2col(grid_, (THREADS,), (x, cols, *geo, I32(n0), I32(cur), I32(per)))
        gout = gout_buf[: spec.k * cur * L]
        xp.matmul(wmat, cols.reshape(G, Cg * taps, cur * L), out=gout.reshape(G, Kg, cur * L))
        f_out(_grid3(L, spec.k, cur), (THREADS,),
              (gout, bias, y, I32(n0), I32(cur), I32(spec.k), I32(L), has_bias))


VARIANTS = (Variant(
    name="im2col", module=MODULE, instantiations=INSTANTIATIONS,
    summary="im2col lowering + GEMM through xp.matmul (cuBLAS), batch chunked to a bounded workspace",
    supports=supports,
    default_config=lambda spec, facts: {"chunk": chunk(spec, facts.free_bytes)},
    workspace_bytes=workspace_bytes,
    launch=launch,
    padding_modes=True),)
