#!/usr/bin/env python
"""Regenerate the results table in bench/README.md from a results JSON.

    python bench/update_readme.py bench/results/2026-11-24-cpu-epyc-2core.json
    python bench/update_readme.py bench/results/2026-12-01-h200       # a gpu_record.py folder
    python bench/update_readme.py RESULTS.json --readme other.md --marker gpu

The table sits between the lines
    <!-- gpuconv-bench:MARKER:begin -->   and   <!-- gpuconv-bench:MARKER:end -->
(MARKER defaults to the run's mode, 'cpu' or 'gpu'); everything else in the
file is left as it is.  Ratios are anchor time / gpuconv time, so above 1.00x
gpuconv is faster: cuDNN (NCHW, NHWC) and cupyx for GPU results, torch CPU and
scipy.signal for CPU results.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # run from a checkout without installing

from gpuconv.bench import report  # noqa: E402


def begin(marker: str) -> str:
    return f"<!-- gpuconv-bench:{marker}:begin -->"


def end(marker: str) -> str:
    return f"<!-- gpuconv-bench:{marker}:end -->"


def replace_between(text: str, marker: str, body: str) -> str:
    b, e = begin(marker), end(marker)
    if text.count(b) != 1 or text.count(e) != 1 or text.index(b) > text.index(e):
        raise ValueError(f"expected exactly one {b} ... {e} pair, in that order")
    head, rest = text.split(b, 1)
    _, tail = rest.split(e, 1)
    return f"{head}{b}\n{body.rstrip()}\n{e}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a JSON written by `gpuconv bench`, or a folder holding "
                    "bench.json (`gpuconv bench --out`, bench/gpu_record.py --out)")
    ap.add_argument("--readme", default=str(ROOT / "bench" / "README.md"))
    ap.add_argument("--marker", default=None, help="table marker (default: the run's mode)")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is not up to date")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if results.is_dir():
        results = results / "bench.json"
    result = json.loads(results.read_text())
    problems = report.validate(result)
    if problems:
        print("not a gpuconv bench JSON:\n  " + "\n  ".join(problems[:20]), file=sys.stderr)
        return 2
    if result["mode"] not in ("cpu", "gpu") and args.marker is None:
        print(f"{results}: a {result['mode']} run (the simulator's times are not measurements); "
              f"the README tables take cpu and gpu runs", file=sys.stderr)
        return 2
    readme = Path(args.readme)
    try:
        src = results.resolve().relative_to(readme.resolve().parent)
    except ValueError:
        src = Path(results.name)
    body = report.markdown(result, source=f"[{src.as_posix()}]({src.as_posix()})")
    old = readme.read_text()
    new = replace_between(old, args.marker or result["mode"], body)
    if args.check:
        if new != old:
            print(f"{readme} is out of date; run python bench/update_readme.py {results}",
                  file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"updated {readme} from {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
