"""The `gpuconv` command.

    gpuconv --version
    gpuconv bench [--suite NAME ...] [--quick] [--dtype D] [--variant NAME ...]
                  [--repeats N] [--no-anchors] [--out DIR] [--json PATH] [--plot PATH]
        gpuconv against cuDNN (torch) and cupyx on this GPU, or against torch
        CPU and scipy.signal on a machine without one.  Without --json/--plot
        the JSON and the PNG go to DIR (default: a dated folder
        gpuconv-bench-YYYY-MM-DD-HHMMSS under the current directory).
    gpuconv info [--shape N,C,H,W,K,R,S[,stride,pad,dil,groups]] [--dtype D]
        device, library versions, kernel cache, and the dispatcher's pick for a shape.
    gpuconv kernels [ARGS ...]
        compile every kernel instantiation and check the ptxas report
        (gpuconv.cuda.compile_check; ARGS are passed through).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from ._version import __version__

GPU_DTYPES = ("float32", "tf32", "3xtf32", "float16", "bfloat16")
CPU_DTYPES = ("float32", "float64")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpuconv", description="GPU convolution kernels for CuPy.")
    p.add_argument("--version", action="version", version=f"gpuconv {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{bench,info,kernels}")

    b = sub.add_parser("bench", help="benchmark gpuconv against cuDNN / cupyx (or torch CPU / scipy)",
                       description="Verify, then time, gpuconv on real layer shapes against the "
                       "anchors on this machine. Ratios are anchor time / gpuconv time (>1: gpuconv faster).")
    b.add_argument("--suite", action="append", default=None, metavar="NAME",
                   help="suite to run (repeatable; 'all' = every suite but quick; default: the GPU "
                   "suites on a GPU, 'cpu' without one; --list shows them)")
    b.add_argument("--quick", action="store_true",
                   help="the small 'quick' suite (unless --suite is given) with short timing")
    b.add_argument("--dtype", default="float32", choices=sorted(set(GPU_DTYPES + CPU_DTYPES)),
                   help="float32 (exact, TF32 off on both sides), tf32 (precision 'medium' vs cuDNN "
                   "TF32), 3xtf32 (precision 'high' vs exact cuDNN), float16, bfloat16 on a GPU; "
                   "float32 or float64 on the CPU path (cases with a fixed dtype keep it)")
    b.add_argument("--variant", action="append", default=None, metavar="NAME",
                   help="time only these registered GPU variants besides the dispatcher's pick (repeatable)")
    b.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="minimum timed repeats per implementation (default 20 GPU, 10 CPU)")
    b.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                   help="minimum measured time per implementation (default 0.2 GPU, 0.5 CPU)")
    b.add_argument("--no-anchors", action="store_true", help="time gpuconv only")
    b.add_argument("--cpu", action="store_true", help="use the CPU path even when a GPU is present")
    b.add_argument("--out", metavar="DIR",
                   help="folder for bench.json and bench.png (default without --json/--plot: "
                   "gpuconv-bench-<date>-<time> under the current directory)")
    b.add_argument("--json", metavar="PATH", help="write every result and raw timing as JSON")
    b.add_argument("--plot", metavar="PATH", help="write a roofline / ratio PNG (matplotlib)")
    b.add_argument("--list", action="store_true", help="list the suites and their cases, then exit")

    i = sub.add_parser("info", help="device, versions, kernel cache, the dispatcher's pick for a shape")
    i.add_argument("--shape", metavar="N,C,H,W,K,R,S[,stride,pad,dil,groups]",
                   help="a conv2d shape to explain")
    i.add_argument("--dtype", default="float32", choices=("float16", "bfloat16", "float32", "float64"))
    i.add_argument("--precision", default="highest", choices=("highest", "high", "medium"),
                   help="float32 precision: highest (exact), high (3xTF32), medium (TF32)")

    sub.add_parser("kernels", help="compile-check every kernel (gpuconv.cuda.compile_check); "
                   "arguments after 'kernels' are passed through", add_help=False)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "kernels":
        return cmd_kernels(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command == "info":
        return cmd_info(args)
    _parser().print_help()
    return 2


# ----------------------------------------------------------------- kernels
def cmd_kernels(argv) -> int:
    try:
        from gpuconv.cuda import compile_check
    except ImportError as exc:
        print(f"gpuconv kernels: gpuconv.cuda.compile_check is not available in this build ({exc})",
              file=sys.stderr)
        return 2
    rc = compile_check.main(list(argv))
    return int(rc or 0)


# ----------------------------------------------------------------- bench
class _Progress:
    """A rich progress bar on stderr (the case being timed, cases done, time
    elapsed and left), or one line per case without rich or without a terminal."""

    def __init__(self):
        self._p = None
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
        except ImportError:
            Console = None
        if Console is not None:
            console = Console(stderr=True)
            if console.is_terminal:
                self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                   TimeElapsedColumn(), TextColumn("left"),
                                   TimeRemainingColumn(compact=True, elapsed_when_finished=True),
                                   console=console, transient=True)
                self._p.start()
        self._task = None
        self._label = ""

    def start(self, label, total):
        self._label = label
        if self._p is not None:
            if self._task is not None:
                self._p.remove_task(self._task)
            self._task = self._p.add_task(label, total=total)
        else:
            print(f"[gpuconv bench] {label} ({total})", file=sys.stderr, flush=True)

    def describe(self, text):
        if self._p is not None:
            self._p.update(self._task, description=f"{self._label}: {text}")

    def case(self, text):
        """A new case starts (a line of its own without a live bar)."""
        if self._p is not None:
            self.describe(text)
        else:
            print(f"[gpuconv bench] {text}", file=sys.stderr, flush=True)

    def advance(self):
        if self._p is not None:
            self._p.advance(self._task)

    def stop(self):
        if self._p is not None:
            self._p.stop()


def output_paths(args, now=None) -> tuple[Path | None, Path | None]:
    """(JSON path, PNG path) of a bench run: --json/--plot as given; with --out, or
    with neither (a dated folder under the current directory), DIR/bench.json and
    DIR/bench.png."""
    json_path = Path(args.json) if args.json else None
    plot_path = Path(args.plot) if args.plot else None
    if args.out or (json_path is None and plot_path is None):
        stamp = (now or _dt.datetime.now()).strftime("%Y-%m-%d-%H%M%S")
        folder = Path(args.out) if args.out else Path.cwd() / f"gpuconv-bench-{stamp}"
        json_path = json_path or folder / "bench.json"
        plot_path = plot_path or folder / "bench.png"
    return json_path, plot_path


def cmd_bench(args) -> int:
    from .bench import runner, suites
    if args.list:
        for name, cases in suites.SUITES.items():
            print(f"{name} ({len(cases)} cases)")
            for c in cases:
                print(f"  {c.name:34s} {c.op:17s} {c.shape_str()}" + (f"  [{c.dtype}]" if c.dtype else ""))
        return 0
    mode, facts = runner.detect_mode(args.cpu)
    allowed = GPU_DTYPES if mode == "gpu" else CPU_DTYPES
    if args.dtype not in allowed:
        where = "on the GPU" if mode == "gpu" else "on the CPU path (no CUDA device)"
        print(f"gpuconv bench: --dtype {args.dtype} is not available {where}; choose one of "
              f"{', '.join(allowed)}", file=sys.stderr)
        return 2
    if args.dtype == "bfloat16":
        ok, why = runner.bf16_supported()
        if not ok:
            print(f"gpuconv bench: --dtype bfloat16 is not supported: {why}", file=sys.stderr)
            return 2
    if args.repeats is not None and args.repeats < 1:
        print("gpuconv bench: --repeats must be at least 1", file=sys.stderr)
        return 2
    names = args.suite or (["quick"] if args.quick else
                           list(suites.DEFAULT_GPU if mode == "gpu" else suites.DEFAULT_CPU))
    try:
        cases = suites.get(names)
    except KeyError as exc:
        print(f"gpuconv bench: {exc.args[0]}", file=sys.stderr)
        return 2
    opts = runner.Options(suites=tuple(names), dtype=args.dtype,
                          variants=tuple(args.variant) if args.variant else None,
                          repeats=args.repeats, min_time_s=args.min_time, anchors=not args.no_anchors,
                          quick=args.quick, force_cpu=args.cpu)
    json_path, plot_path = output_paths(args)          # the folder is named for the start
    progress = _Progress()
    try:
        result = runner.run(cases, opts, progress)
    finally:
        progress.stop()
    from .bench import report
    report.print_table(result)
    wrote = []
    if json_path is not None:
        report.write_json(result, json_path)
        wrote.append(f"{json_path} (every result and raw time)")
    if plot_path is not None:
        try:
            from .bench import plot
            plot_path.parent.mkdir(parents=True, exist_ok=True)
            plot.plot(result, plot_path)
            wrote.append(f"{plot_path} (roofline and ratios)")
        except ImportError as exc:
            print(f"gpuconv bench: the plot needs matplotlib ({exc}); no plot written", file=sys.stderr)
    for line in wrote:
        print(f"wrote {line}")
    failed = sum(r["status"] == "FAIL" for rec in result["cases"] for r in rec["results"]
                 if r["role"] == "gpuconv")
    if failed:
        print(f"gpuconv bench: {failed} gpuconv result(s) did not match the reference (FAIL)",
              file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------- info
def parse_shape(text: str) -> tuple:
    """'N,C,H,W,K,R,S[,stride,pad,dil,groups]' -> 11 ints."""
    try:
        vals = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--shape takes comma-separated integers, got {text!r}") from None
    if not 7 <= len(vals) <= 11:
        raise ValueError(f"--shape takes N,C,H,W,K,R,S[,stride,pad,dil,groups] (7 to 11 integers), "
                         f"got {len(vals)}: {text!r}")
    return tuple(vals + [1, 0, 1, 1][len(vals) - 7:])


def cmd_info(args) -> int:
    import numpy as np
    import gpuconv
    from ._paths import cache_dir
    from .bench import env as E
    facts = E.cuda_facts()
    tf = E.torch_facts()
    print(f"gpuconv {getattr(gpuconv, '__version__', '?')}, numpy {np.__version__}, "
          f"python {E.platform.python_version()}")
    if facts.get("available"):
        print(f"device: {facts['device']} (cuda:{facts['device_id']} of {facts['device_count']}, "
              f"sm {facts['compute_capability']}, {facts['sm_count']} SMs, "
              f"{facts['memory_bytes'] / 2**30:.1f} GiB, L2 {(facts.get('l2_bytes') or 0) / 2**20:.0f} MiB)")
        print(f"CuPy {facts['cupy']}, CUDA runtime {facts['cuda_runtime']}, driver {facts.get('driver')} "
              f"(supports CUDA {facts['driver_cuda']})")
    else:
        print(f"device: no CUDA device ({facts.get('reason')})")
        if facts.get("cupy"):
            print(f"CuPy {facts['cupy']}")
    if tf.get("available"):
        print(f"torch {tf['torch']} (CUDA {tf['torch_cuda'] or 'none'}, cuDNN {tf['cudnn'] or 'none'}, "
              f"{'CUDA available' if tf['cuda'] else 'no CUDA'})")
    else:
        print("torch: not installed")
    print(f"CPU: {E.cpu_model()}, {E.cpu_cores()} cores")
    from . import _native
    print(f"CPU compiled kernels: {_native.status()}")
    print(f"kernel cache: {cache_dir()}")
    try:
        from ._paths import kernels_dir
        print(f"kernel sources: {kernels_dir()}")
    except (ImportError, FileNotFoundError) as exc:
        print(f"kernel sources: not found ({exc})")
    if not args.shape:
        return 0
    from .bench.cases import explain, gpu_variants
    from .spec import make_spec
    try:
        n, c, h, w, k, r, s, st, pd, dl, g = parse_shape(args.shape)
        if g <= 0 or c % g:
            raise ValueError(f"groups={g} must be positive and divide C={c}")
        if args.dtype == "bfloat16":
            from .spec import bfloat16_dtype
            dt = bfloat16_dtype()
        else:
            dt = np.dtype(args.dtype)
        spec, _ = make_spec((n, c, h, w), (k, c // g, r, s), None, st, pd, dl, g, dt, 2)
    except (ValueError, TypeError) as exc:
        print(f"gpuconv info: {exc}", file=sys.stderr)
        return 2
    print(f"\nshape: input {spec.input_shape}, weight {spec.weight_shape} -> output {spec.output_shape}, "
          f"stride {spec.stride}, pad {spec.pad}, dilation {spec.dilation}, groups {spec.groups}, {spec.dtype}")
    print(f"work: {spec.flops / 1e9:.3f} GFLOP, {spec.min_bytes / 1e6:.2f} MB compulsory traffic, "
          f"{spec.flops / spec.min_bytes:.1f} FLOP/byte")
    facts = None
    try:                                     # the device's facts where a GPU is at hand
        from .bench.cases import device_facts
        from .bench.env import cuda_facts
        if cuda_facts().get("available"):
            facts = device_facts()
    except Exception:  # noqa: BLE001 - no CuPy / no device: the dispatcher's H100 defaults
        facts = None
    from .cuda.facts import DeviceFacts
    shown = facts or DeviceFacts()
    print(f"device facts: {shown.name}, {shown.sm_count} SMs, sm_{shown.cc[0]}{shown.cc[1]}"
          + ("" if facts else " (no GPU here: the dispatcher's defaults)"))
    try:
        ex = explain(spec, facts, args.precision)
    except ValueError as exc:                # e.g. bfloat16 where no kernel takes it
        print(f"dispatcher: {exc}")
        return 0
    print(f"dispatcher pick: {ex['pick']} {ex['config']} (float32 precision {args.precision})")
    for why in ex["why"]:
        print(f"  because: {why}")
    print("  (the waves and % of peak are napkin-math estimates until a GPU measures them)")
    ok, no = gpu_variants(spec, args.precision)
    print("variants supporting this shape: " + (", ".join(ok) or "none"))
    for name, why in no.items():
        print(f"  {name}: no ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
