"""Output: the terminal table (rich, or plain text without it), the JSON file,
and the markdown table bench/update_readme.py puts into bench/README.md."""
from __future__ import annotations

import json
import math
from pathlib import Path

# Keys every results JSON has (tests/test_bench.py checks them).
SCHEMA_KEYS = ("schema", "env", "mode", "dtype", "suites", "options", "ratio_definition",
               "ceilings", "notes", "cases", "summary")
ENV_KEYS = ("timestamp", "mode", "gpuconv", "git_commit", "python", "platform", "numpy", "scipy",
            "cpu_model", "cpu_cores", "cpu_native", "cuda", "torch")
CASE_KEYS = ("suite", "name", "op", "shape", "dtype", "flops", "min_bytes", "results", "ratios",
             "skipped")
RESULT_KEYS = ("impl", "role", "status")
TIMED_KEYS = ("times_s", "median_s", "tflops", "gbps", "pct_compute", "pct_bandwidth")

# Anchors a ratio is shown against, in table order, with short headers.
ANCHOR_LABELS = {"cudnn:nchw": "cuDNN NCHW", "cudnn:nhwc": "cuDNN NHWC",
                 "cupyx.signal": "cupyx signal", "cupyx.ndimage": "cupyx ndimage",
                 "torch-cpu": "torch CPU", "scipy.signal": "scipy.signal"}


def write_json(result: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")


def _jsonable(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


def fmt(v, spec=".2f", suffix=""):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:{spec}}{suffix}"


def _anchors_in(records) -> list[str]:
    seen = {r["impl"] for rec in records for r in rec["results"] if r["role"] == "anchor"}
    seen |= {a for rec in records for a in rec.get("skipped", {}) if a in ANCHOR_LABELS}
    return [a for a in ANCHOR_LABELS if a in seen]


def _main_result(rec):
    return next((r for r in rec["results"] if r["impl"] in ("gpuconv:auto", "gpuconv:numpy")), None)


def _status_cell(r) -> str:
    if r is None:
        return "-"
    if r["status"] == "ok":
        return fmt_time(r["median_s"])
    return r["status"]


def header_lines(result: dict) -> list[str]:
    env, ce = result["env"], result["ceilings"]
    if result["mode"] == "gpu":
        cu = env["cuda"]
        dev = (f"{cu.get('device')} (sm {cu.get('compute_capability')}, driver {cu.get('driver')}, "
               f"CUDA runtime {cu.get('cuda_runtime')}, CuPy {cu.get('cupy')})")
    elif result["mode"] == "sim":
        dev = f"the kernel simulator on CPU: {env['cpu_model']}, {env['cpu_cores']} cores (times are not GPU times)"
    else:
        dev = f"CPU: {env['cpu_model']}, {env['cpu_cores']} cores (no CUDA device)"
    t = env.get("torch", {})
    lines = [f"device: {dev}",
             f"torch: {t.get('torch', 'not installed')}" + (f", cuDNN {t['cudnn']}" if t.get("cudnn") else ""),
             "ceilings: copy {:.1f} GB/s; GEMM {}".format(
                 ce["copy_GBps"], ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in ce["gemm_TFLOPs"].items())),
             f"dtype: {result['dtype']}; ratio = anchor time / gpuconv time (>1 = gpuconv faster)"]
    return lines + [f"note: {n}" for n in result["notes"]]


def rows(result: dict):
    """Table rows per suite: (suite, [row dicts], geomean row)."""
    records = result["cases"]
    anchors = _anchors_in(records)
    out = []
    for suite in result["suites"]:
        recs = [r for r in records if r["suite"] == suite]
        body = []
        for rec in recs:
            main = _main_result(rec)
            pick = (rec.get("dispatch") or {}).get("pick")
            row = {"case": rec["name"], "shape": rec["shape_str"],
                   "impl": (main["impl"] if main else "-") + (f" -> {pick}" if pick else ""),
                   "time": rec["error"] and "ERROR" or _status_cell(main),
                   "tflops": fmt(main.get("tflops") if main else None, ".3g"),
                   "gbps": fmt(main.get("gbps") if main else None, ".1f"),
                   "pct_c": fmt(main.get("pct_compute") if main else None, ".1f", "%"),
                   "pct_b": fmt(main.get("pct_bandwidth") if main else None, ".1f", "%"),
                   "ratios": {a: _ratio_cell(rec, a) for a in anchors},
                   "note": rec["error"] or (main["note"] if main and main["status"] != "ok" else "")}
            body.append(row)
            for r in rec["results"]:
                if r["role"] == "gpuconv" and r is not main:
                    ratio = (main["median_s"] / r["median_s"]
                             if main and main["status"] == "ok" and r["status"] == "ok" else None)
                    body.append({"case": "", "shape": "", "impl": f"  {r['impl']}",
                                 "time": _status_cell(r), "tflops": fmt(r.get("tflops"), ".3g"),
                                 "gbps": fmt(r.get("gbps"), ".1f"),
                                 "pct_c": fmt(r.get("pct_compute"), ".1f", "%"),
                                 "pct_b": fmt(r.get("pct_bandwidth"), ".1f", "%"),
                                 "ratios": {}, "note": (f"auto/this {ratio:.2f}x" if ratio else r["note"])})
        gm = result["summary"].get(suite, {}).get("geomean", {})
        out.append((suite, body, {a: fmt(gm.get(a), ".2f", "x") for a in anchors}))
    return anchors, out


def _ratio_cell(rec, anchor) -> str:
    if anchor in rec.get("ratios", {}):
        return f"{rec['ratios'][anchor]:.2f}x"
    r = next((x for x in rec["results"] if x["impl"] == anchor), None)
    if r is not None:
        return r["status"]
    return "skip" if anchor in rec.get("skipped", {}) else "-"


def print_table(result: dict, console=None) -> None:
    anchors, suites = rows(result)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_text(result))
        return
    if console is None:
        import sys
        # a pipe or CI log gets the full width instead of rich's 80-column default
        console = Console() if sys.stdout.isatty() else Console(width=240)
    for line in header_lines(result):
        console.print(line, highlight=False, markup=False)
    for suite, body, gm in suites:
        table = Table(title=f"suite {suite}", title_justify="left")
        for col in ("case", "shape", "gpuconv", "time", "TFLOP/s", "GB/s", "% FLOP", "% BW"):
            table.add_column(col, justify="left" if col in ("case", "shape", "gpuconv") else "right",
                             no_wrap=col != "gpuconv")
        for a in anchors:
            table.add_column(f"vs {ANCHOR_LABELS[a]}", justify="right")
        table.add_column("note", overflow="fold", max_width=50)
        for row in body:
            table.add_row(row["case"], row["shape"], row["impl"], row["time"], row["tflops"],
                          row["gbps"], row["pct_c"], row["pct_b"],
                          *[row["ratios"].get(a, "") for a in anchors], row["note"])
        table.add_row("geomean", "", "", "", "", "", "", "", *[gm[a] for a in anchors], "",
                      style="bold")
        console.print(table)


def plain_text(result: dict) -> str:
    anchors, suites = rows(result)
    lines = header_lines(result)
    for suite, body, gm in suites:
        lines.append(f"\n== suite {suite}")
        lines.append("\t".join(["case", "shape", "gpuconv", "time", "TFLOP/s", "GB/s", "%FLOP", "%BW"]
                               + [f"vs {ANCHOR_LABELS[a]}" for a in anchors] + ["note"]))
        for row in body:
            lines.append("\t".join([row["case"], row["shape"], row["impl"], row["time"], row["tflops"],
                                    row["gbps"], row["pct_c"], row["pct_b"]]
                                   + [row["ratios"].get(a, "") for a in anchors] + [row["note"]]))
        lines.append("\t".join(["geomean"] + [""] * 7 + [gm[a] for a in anchors]))
    return "\n".join(lines)


def markdown(result: dict, source: str = "") -> str:
    """The README table: one row per case (gpuconv's pick), ratios to the anchors."""
    anchors, suites = rows(result)
    env = result["env"]
    if result["mode"] == "gpu":
        cu = env["cuda"]
        dev = (f"{cu.get('device')}, driver {cu.get('driver')}, CUDA {cu.get('cuda_runtime')}, "
               f"CuPy {cu.get('cupy')}")
    else:
        dev = f"{env['cpu_model']}, {env['cpu_cores']} cores, numpy {env['numpy']}"
    t = env.get("torch", {})
    if t.get("torch"):
        dev += f", torch {t['torch']}" + (f" (cuDNN {t['cudnn']})" if t.get("cudnn") else "")
    ce = result["ceilings"]
    out = [f"Measured {env['timestamp'][:10]} on {dev}"
           + (f" at commit `{env['git_commit'][:12]}`" if env.get("git_commit") else "")
           + (f" ({source})" if source else "") + ".",
           "Ceilings measured in the same run: copy {:.1f} GB/s, GEMM {}.".format(
               ce["copy_GBps"], ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in ce["gemm_TFLOPs"].items())),
           (f"Load average (1/5/15 min) at start {env.get('loadavg_start')}, at end "
            f"{env.get('loadavg_end')}: other processes on the cores distort CPU timings.\n"
            if result["mode"] == "cpu" and env.get("loadavg_start") else "")
           + f"dtype option: {result['dtype']}. Ratio = anchor time / gpuconv time: above 1.00x "
           "gpuconv is faster.", ""]
    hdr = ["suite", "case", "shape", "time", "TFLOP/s", "GB/s", "% FLOP", "% BW"] + [
        f"vs {ANCHOR_LABELS[a]}" for a in anchors]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(hdr) - 3)) + "|")
    for suite, body, gm in suites:
        for row in body:
            if not row["case"]:
                continue                      # variant rows stay in the JSON
            cells = [suite, row["case"], row["shape"].replace("|", "/"), row["time"], row["tflops"],
                     row["gbps"], row["pct_c"], row["pct_b"]] + [row["ratios"].get(a, "") for a in anchors]
            out.append("| " + " | ".join(cells) + " |")
        out.append("| " + " | ".join([f"**{suite}**", "**geomean**", "", "", "", "", "", ""]
                                     + [f"**{gm[a]}**" if gm[a] != "-" else "" for a in anchors]) + " |")
    by_op = [(suite, op, a, v) for suite, s in result["summary"].items()
             for op, per in s.get("geomean_by_op", {}).items() for a, v in per.items()
             if v.get("geomean") and len(s.get("geomean_by_op", {})) > 1]
    if by_op:
        out += ["", "Geomean per operation: " + "; ".join(
            f"{suite} {op} {v['geomean']:.2f}x vs {ANCHOR_LABELS.get(a, a)} ({v['n']} cases)"
            for suite, op, a, v in by_op) + "."]
    return "\n".join(out) + "\n"


def validate(result: dict) -> list[str]:
    """Schema problems (empty when the JSON has every documented key)."""
    errs = [f"missing key {k!r}" for k in SCHEMA_KEYS if k not in result]
    errs += [f"env: missing {k!r}" for k in ENV_KEYS if k not in result.get("env", {})]
    ce = result.get("ceilings", {})
    errs += [f"ceilings: missing {k!r}" for k in ("copy_GBps", "gemm_TFLOPs") if k not in ce]
    for rec in result.get("cases", []):
        errs += [f"case {rec.get('name')}: missing {k!r}" for k in CASE_KEYS
                 if k not in rec and not (rec.get("error") and k in ("flops", "min_bytes", "ratios"))]
        for r in rec.get("results", []):
            errs += [f"case {rec.get('name')} {r.get('impl')}: missing {k!r}" for k in RESULT_KEYS if k not in r]
            if r.get("status") == "ok":
                errs += [f"case {rec.get('name')} {r['impl']}: missing {k!r}" for k in TIMED_KEYS if k not in r]
    return errs
