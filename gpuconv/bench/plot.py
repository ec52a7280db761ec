"""PNG of one results JSON: left, achieved TFLOP/s of every gpuconv result
against arithmetic intensity (FLOPs / compulsory bytes) under the measured
roofline, min(GEMM ceiling, intensity x copy bandwidth); right, the ratio
anchor time / gpuconv time per case (log scale, 1 = parity)."""
from __future__ import annotations

from .ceilings import compute_ceiling


def plot(result: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    ce = result["ceilings"]
    dtype = result["dtype"]
    key, peak = compute_ceiling(ce, dtype)
    bw = ce["copy_GBps"] * 1e9
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 6.5))

    pts = [(rec["intensity"], r["tflops"], rec["suite"], r["impl"]) for rec in result["cases"]
           if rec.get("intensity") for r in rec["results"] if r["role"] == "gpuconv" and r["status"] == "ok"]
    suites = list(dict.fromkeys(p[2] for p in pts))
    colors = plt.cm.tab10(np.linspace(0, 1, max(len(suites), 1)))
    for s, col in zip(suites, colors):
        sel = [p for p in pts if p[2] == s]
        main = [p for p in sel if p[3] in ("gpuconv:auto", "gpuconv:numpy")]
        other = [p for p in sel if p not in main]
        ax.scatter([p[0] for p in main], [p[1] for p in main], color=col, label=s, s=28, zorder=3)
        if other:
            ax.scatter([p[0] for p in other], [p[1] for p in other], color=col, marker="x", s=14,
                       alpha=0.5, zorder=2)
    if pts:
        lo, hi = min(p[0] for p in pts) / 2, max(p[0] for p in pts) * 2
    else:
        lo, hi = 0.1, 1000.0
    xi = np.logspace(np.log10(lo), np.log10(hi), 200)
    if peak:
        ax.plot(xi, np.minimum(peak, xi * bw / 1e12), "k-", lw=1.5,
                label=f"roofline: {key} {peak:.3g} TFLOP/s, copy {ce['copy_GBps']:.0f} GB/s")
    else:
        ax.plot(xi, xi * bw / 1e12, "k-", lw=1.5, label=f"copy {ce['copy_GBps']:.0f} GB/s")
    # cases with their own dtype (the cpu suite's float64 signal cases) get their roof too
    for other in sorted({rec["dtype"] for rec in result["cases"]} - {dtype}):
        okey, opeak = compute_ceiling(ce, other)
        if opeak and okey != key:
            ax.plot(xi, np.minimum(opeak, xi * bw / 1e12), "k--", lw=1,
                    label=f"roofline: {okey} {opeak:.3g} TFLOP/s ({other} cases)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / compulsory byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title("gpuconv on the measured roofline (x: forced variants)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

    labels, series = [], {}
    for rec in result["cases"]:
        if not rec.get("ratios"):
            continue
        labels.append(f"{rec['suite']}/{rec['name']}")
        for a, v in rec["ratios"].items():
            series.setdefault(a, {})[labels[-1]] = v
    y = np.arange(len(labels))
    h = 0.8 / max(len(series), 1)
    for i, (a, vals) in enumerate(series.items()):
        bx.barh(y + i * h, [vals.get(lbl, np.nan) for lbl in labels], height=h, label=f"vs {a}")
    bx.axvline(1.0, color="k", lw=1)
    bx.set_xscale("log")
    bx.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    bx.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    bx.set_yticks(y + h * (len(series) - 1) / 2)
    bx.set_yticklabels(labels, fontsize=6)
    bx.invert_yaxis()
    bx.set_xlabel("anchor time / gpuconv time (>1: gpuconv faster)")
    bx.set_title("ratio to the anchors")
    bx.grid(True, axis="x", which="both", alpha=0.3)
    if series:
        bx.legend(fontsize=7)
    env = result["env"]
    dev = env["cuda"].get("device") if result["mode"] == "gpu" else env["cpu_model"]
    fig.suptitle(f"gpuconv bench, {dev}, {dtype}, {env['timestamp'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
