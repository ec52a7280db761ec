"""gpuconv's own times per case, through pytest-benchmark (see conftest.py).

Each case is verified against the float64 reference first (a mismatch fails
the test and is never timed).  CPU: pytest-benchmark's perf_counter rounds.
GPU: every round is one call followed by a stream synchronisation, with the
L2 flushed in the (untimed) setup, so the wall-clock rounds bound the GPU
time from above; the CUDA-event median of the same call (gpuconv.bench.timing,
the number `gpuconv bench` reports) goes into extra_info['cuda_event_median_s'].
"""
from __future__ import annotations

import pytest

from gpuconv.bench import cases as C


def _gpuconv_impl(prep, gpu: bool):
    return next((i for i in prep.impls if i.name in ("gpuconv:auto", "gpuconv:numpy")), None)


def test_gpuconv(benchmark, bench_case, request):
    from conftest import _on_gpu
    gpu = _on_gpu()
    dtype = bench_case.dtype or request.config.getoption("--gpuconv-dtype")
    prep, host = C.prepare_host(bench_case, dtype)
    if gpu:
        C.add_device_impls(prep, host, anchors=False, variants=())
    else:
        C.add_cpu_impls(prep, host, anchors=False)
    impl = _gpuconv_impl(prep, gpu)
    if impl is None:
        pytest.skip("; ".join(f"{k}: {v}" for k, v in prep.skipped.items()) or "no gpuconv implementation")
    try:
        out = impl.fn()
    except NotImplementedError as exc:
        pytest.skip(f"{bench_case.op} not implemented yet ({exc})")
    host_out = C.to_host(out)
    if prep.verify_index is not Ellipsis:
        host_out = host_out[prep.verify_index]
    ok, err, msg = C.compare(host_out, prep.reference, prep.dtype, prep.reduction)
    assert ok, f"{bench_case.id}: gpuconv does not match the float64 reference: {msg}"
    del out, host_out

    benchmark.extra_info.update(case=bench_case.id, shape=bench_case.shape_str(), dtype=dtype,
                                flops=prep.flops, min_bytes=prep.min_bytes, max_abs_err=err)
    if not gpu:
        benchmark.pedantic(impl.fn, rounds=max(5, min(50, int(0.5 / _once(impl.fn)) + 1)),
                           iterations=1, warmup_rounds=1)
        return
    import cupy
    from gpuconv.bench.timing import CupyTimer
    timer = CupyTimer()
    t = timer.run(impl.fn)
    benchmark.extra_info["cuda_event_median_s"] = t.median_s
    benchmark.extra_info["tflops_event"] = prep.flops / t.median_s / 1e12
    stream = cupy.cuda.get_current_stream()

    def synced():
        impl.fn()
        stream.synchronize()

    def flush():
        timer.flush()
        stream.synchronize()

    benchmark.pedantic(synced, setup=flush, rounds=max(20, min(200, int(0.2 / t.median_s) + 1)),
                       iterations=1, warmup_rounds=2)


def _once(fn) -> float:
    import time
    t0 = time.perf_counter()
    fn()
    return max(time.perf_counter() - t0, 1e-6)
