#!/usr/bin/env python
"""Write bench/suites.json from gpuconv.bench.suites (the source of truth,
shipped inside the package).  tests/test_bench.py checks the two agree."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuconv.bench.suites import as_json  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "bench" / "suites.json"
    suites = as_json()
    # one case per line: reviewable diffs, still plain JSON
    lines = ["{"]
    for i, (name, cases) in enumerate(suites.items()):
        lines.append(f" {json.dumps(name)}: [")
        lines += [f"  {json.dumps(c)}" + ("," if j < len(cases) - 1 else "") for j, c in enumerate(cases)]
        lines.append(" ]" + ("," if i < len(suites) - 1 else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == suites
    out.write_text(text)
    print(f"wrote {out}")
