"""gpuconv's benchmark runner (the `gpuconv bench` command).

    suites.py    the layer shapes, as data (ships inside the package, so the
                 console script works from a plain wheel install)
    cases.py     one case -> inputs, the float64 reference, the contenders
                 (gpuconv's dispatcher pick and every variant that supports
                 the case) and the anchors (cuDNN through torch, cupyx,
                 torch CPU, scipy.signal)
    timing.py    CUDA-event and perf_counter timers: warm-up, L2 flush, median
    ceilings.py  copy bandwidth and GEMM rate measured in the same run
    env.py       device, driver and library versions, git commit
    runner.py    the loop: verify, time, derive TFLOP/s, GB/s, % of ceilings, ratios
    report.py    rich table, geomeans, JSON, the README markdown table
    plot.py      roofline and ratio plots (matplotlib)

CuPy, torch, scipy, rich and matplotlib are imported only when used; a missing
one turns into a note in the output, never a crash.
"""
