"""`gpuconv kernels --sass`: the SASS of every instantiation, its innermost loops
found from the control flow, and each loop's instruction mix -- the static
evidence of a hot loop's quality while no GPU runs the kernels.

    gpuconv kernels --sass [--module conv2d_depthwise.cu] [--arch sm_90] [--json]

Pipeline, per (module, arch): one compile of the module with every
instantiation forced (nvcc -cubin, else NVRTC's CUBIN; -lineinfo, which names
source lines and leaves the SASS identical: checked on the implicit GEMM),
disassembled by nvdisasm (the CUDA toolkit's beside nvcc, on PATH, or the
nvidia-cuda-nvdisasm wheel), else cuobjdump -sass (same places, the
nvidia-cuda-cuobjdump wheel).  Then, per kernel: basic blocks (leaders: entry,
branch targets, the instruction after a branch, EXIT or RET), dominators, back
edges (to a block that dominates the edge's source), natural loops; innermost =
a loop whose body holds no other loop's header.  CALL is not an edge: a callee
(the 64-bit division routines `$__internal_*_$__cuda_sm20_div_s64` ...) is
listed as a call.

Per innermost loop, counted over its whole body (both sides of a branch;
`iter_min`/`iter_max` are the shortest and longest header-to-back-edge paths,
equal when the body is one block):
  tensor, fma  HMMA/IMMA/DMMA/HGMMA (one HMMA.16816 = 4096 FLOP per warp) and
           FFMA/HFMA2/DFMA (one FFMA = 64 FLOP per warp), also as shares of the
           body; fp = FADD/FMUL/HADD2/...; an FMA with no register source
           ('HFMA2.MMA R5, -RZ, RZ, 1.875, 0': a constant load) counts as alu
  lds/ldsm/ldg/ldgsts/sts/stg/local   loads and stores by state space; per_math:
           each per math instruction (tensor + fma + fp)
  bar      BAR.* (block barriers); depbar: DEPBAR/LDGDEPBAR (cp.async groups)
  div32, div64  integer divisions and remainders.  32 bits: the reciprocal
           trick inline, a quotient estimate IMAD.HI.U32 plus compare and fix-up
           (~10 instructions), and ~10 more for the reciprocal (I2F.RP, MUFU.RCP,
           F2I, ...; `div_rcp` counts those in the loop) unless ptxas hoisted it
           for a loop-invariant divisor.  64 bits: a call (~70 instructions) beside
           an inline 32-bit fast path taken when both operands fit 32 bits (so
           div32 = sequences - calls).  Division by a constant is a multiply-high
           and a shift, not counted.
  stored_elements, instr_per_element  elements written (STG + STS at the
           kernel's element size) and instructions per element on the shortest
           and longest path: instructions per output for a loop that writes its
           outputs (im2col, grid-stride loops), per staged element for a fill loop
  accumulators, instr_per_accumulator  FMA/MMA chains (an addend no earlier
           FMA/MMA of the pass wrote: the register tile's outputs) and
           instructions per chain and pass
The straight-line part (blocks in no loop; paths from entry to EXIT) gets the
same mix.  The row `gpuconv kernels --sass` prints per instantiation is the
innermost loop with the most tensor + FMA instructions, or the straight-line
part when no loop has any (depthwise with the taps in registers: its work per
output is there).  Static counts, not a profile: a GPU run decides.

Results are cached per instantiation under gpuconv._paths.cache_dir()/sass,
keyed on the module's source (headers inlined), the instantiation, the arch,
the compiler, the disassembler and this file; a module is recompiled with only
the instantiations that miss.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import _paths
from . import loader

# the analysis is part of the cache key: an edit of this file recomputes every report
_SELF = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

# ------------------------------------------------------------------ tools


def _wheel_bins(tool: str) -> list[Path]:
    try:
        import nvidia  # namespace package of the nvidia-cuda-* wheels
    except ImportError:
        return []
    out = []
    for root in nvidia.__path__:
        out += sorted(Path(root).glob(f"*/bin/{tool}"))
    return out


def find_tool(tool: str) -> str | None:
    """The toolkit's `tool` (beside nvcc, $CUDA_HOME/bin, PATH), else the PyPI wheel's."""
    cands = []
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            cands.append(Path(os.environ[env]) / "bin" / tool)
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(Path(nvcc).resolve().parent / tool)
    on_path = shutil.which(tool)
    if on_path:
        cands.append(Path(on_path))
    cands += _wheel_bins(tool)
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def disassembler() -> tuple[str, str] | None:
    """('nvdisasm' | 'cuobjdump', path); nvdisasm preferred (labels, symbols, line info)."""
    for tool in ("nvdisasm", "cuobjdump"):
        path = find_tool(tool)
        if path:
            return tool, path
    return None


@functools.lru_cache(maxsize=None)
def _version(cmd: tuple[str, ...]) -> str:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
        return (res.stdout + res.stderr).strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def disassemble(cubin: Path, tool: tuple[str, str]) -> str:
    kind, path = tool
    cmd = [path, "-c", "-g", str(cubin)] if kind == "nvdisasm" else [path, "-sass", str(cubin)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} failed on {cubin}: {res.stderr.strip()[:2000]}")
    return res.stdout


# ------------------------------------------------------------------ parsing

@dataclass
class Instr:
    addr: int
    pred: str | None          # '@P0', '@!UP1', ... or None
    opcode: str               # 'FFMA', 'LDG.E.128', ...
    operands: str
    line: tuple[str, int] | None = None
    target: int | str | None = None   # branch / call target: address, or a label/symbol name

    @property
    def base(self) -> str:
        return self.opcode.split(".", 1)[0]

    @property
    def mods(self) -> list[str]:
        return self.opcode.split(".")[1:]


@dataclass
class Section:
    """One .text section (a kernel and the subroutines placed after it)."""
    name: str
    instrs: list[Instr] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)    # label or function symbol -> address


_INSTR = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s+(.*?)\s*;")
_PRED = re.compile(r"^(@!?U?P(?:T|\d+))\s+")
_LABEL = re.compile(r"^\s*([.$A-Za-z_][.$\w]*):\s*$")
_LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
_SECTION = re.compile(r"^\s*\.section\s+\.text\.([^,\s]+)")
_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)")
_BACKQUOTE = re.compile(r"`\(([^)]+)\)")
_HEX = re.compile(r"0x([0-9a-fA-F]+)")


def _target(opcode: str, operands: str) -> int | str | None:
    m = _BACKQUOTE.search(operands)
    if m:
        return m.group(1)
    hexes = _HEX.findall(operands)
    return int(hexes[-1], 16) if hexes else None


def parse_sass(text: str) -> dict[str, Section]:
    """nvdisasm (-c -g) or cuobjdump -sass text -> {section name: Section}."""
    sections: dict[str, Section] = {}
    cur: Section | None = None
    pending: list[str] = []
    line = None
    for raw in text.splitlines():
        m = _SECTION.match(raw) or _FUNCTION.match(raw)
        if m:
            cur = sections.setdefault(m.group(1), Section(m.group(1)))
            pending, line = [], None
            continue
        if cur is None:
            continue
        m = _LINE.search(raw)
        if m:
            line = (Path(m.group(1)).name, int(m.group(2)))
            continue
        m = _INSTR.match(raw)
        if m:
            addr, body = int(m.group(1), 16), m.group(2)
            pm = _PRED.match(body)
            pred = pm.group(1) if pm else None
            if pm:
                body = body[pm.end():]
            opcode, _, operands = body.partition(" ")
            ins = Instr(addr, pred, opcode, operands.strip(), line)
            if ins.base in _BRANCH or ins.base == "CALL":
                ins.target = _target(opcode, operands)
            for lab in pending:
                cur.labels[lab] = addr
            pending = []
            cur.instrs.append(ins)
            continue
        m = _LABEL.match(raw)
        if m:
            pending.append(m.group(1))
    return sections


# ------------------------------------------------------------------ control flow

_BRANCH = {"BRA", "JMP", "BRX", "JMX", "BRXU", "JMXU"}
_INDIRECT = {"BRX", "JMX", "BRXU", "JMXU"}
_STOP = {"EXIT", "RET", "KILL"}


@dataclass
class Block:
    start: int                 # index into Section.instrs
    end: int                   # exclusive
    succs: list[int] = field(default_factory=list)   # block ids


@dataclass
class Loop:
    header: int
    body: set[int]
    latches: set[int]
    depth: int = 1
    innermost: bool = True


def _always(ins: Instr) -> bool:
    return ins.pred is None or ins.pred in ("@PT", "@UPT")


def _never(ins: Instr) -> bool:
    return ins.pred in ("@!PT", "@!UPT")


def build_cfg(sec: Section, entry: int) -> tuple[list[Block], int, bool]:
    """Basic blocks of `sec` reachable from address `entry`: (blocks, entry block id, indirect)."""
    instrs = sec.instrs
    index = {ins.addr: i for i, ins in enumerate(instrs)}

    def resolve(t) -> int | None:
        if isinstance(t, str):
            t = sec.labels.get(t)
        return index.get(t) if t is not None else None

    leaders = {index[entry]}
    for i, ins in enumerate(instrs):
        if ins.base in _BRANCH or ins.base in _STOP:
            if i + 1 < len(instrs):
                leaders.add(i + 1)
            t = resolve(ins.target) if ins.base in _BRANCH else None
            if t is not None:
                leaders.add(t)
    starts = sorted(leaders)
    bounds = {s: (starts[k + 1] if k + 1 < len(starts) else len(instrs)) for k, s in enumerate(starts)}
    # blocks end early at a branch/stop inside (a leader follows it, so they never do)
    ids: dict[int, int] = {}
    blocks: list[Block] = []
    indirect = False
    work = [index[entry]]
    while work:
        s = work.pop()
        if s in ids:
            continue
        ids[s] = len(blocks)
        blk = Block(s, bounds[s])
        blocks.append(blk)
        last = instrs[blk.end - 1]
        nxt = blk.end if blk.end < len(instrs) else None
        succ: list[int] = []
        if last.base in _BRANCH and not _never(last):
            if last.base in _INDIRECT:
                indirect = True
            else:
                t = resolve(last.target)
                if t is not None:
                    succ.append(t)
            if not _always(last) and nxt is not None:
                succ.append(nxt)
        elif last.base in _STOP and not _never(last):
            if not _always(last) and nxt is not None:
                succ.append(nxt)
        elif nxt is not None:
            succ.append(nxt)
        blk.succs = succ           # instruction indices for now
        work += [t for t in succ if t not in ids]
    for blk in blocks:
        blk.succs = sorted({ids[t] for t in blk.succs})
    return blocks, 0, indirect


def _dominators(blocks: list[Block], entry: int) -> list[set[int]]:
    preds: list[list[int]] = [[] for _ in blocks]
    for b, blk in enumerate(blocks):
        for s in blk.succs:
            preds[s].append(b)
    order, seen = [], set()

    def dfs(b):                     # iterative post-order
        stack = [(b, iter(blocks[b].succs))]
        seen.add(b)
        while stack:
            node, it = stack[-1]
            for s in it:
                if s not in seen:
                    seen.add(s)
                    stack.append((s, iter(blocks[s].succs)))
                    break
            else:
                order.append(node)
                stack.pop()
    dfs(entry)
    rpo = order[::-1]
    every = set(range(len(blocks)))
    dom = [set(every) for _ in blocks]
    dom[entry] = {entry}
    changed = True
    while changed:
        changed = False
        for b in rpo:
            if b == entry:
                continue
            ps = [dom[p] for p in preds[b] if p in seen]
            new = set.intersection(*ps) | {b} if ps else {b}
            if new != dom[b]:
                dom[b], changed = new, True
    return dom


def find_loops(blocks: list[Block], entry: int = 0) -> list[Loop]:
    """Natural loops (one per header, back edges merged), with depth and innermost flags."""
    dom = _dominators(blocks, entry)
    preds: list[list[int]] = [[] for _ in blocks]
    for b, blk in enumerate(blocks):
        for s in blk.succs:
            preds[s].append(b)
    loops: dict[int, Loop] = {}
    for u, blk in enumerate(blocks):
        for h in blk.succs:
            if h in dom[u]:                       # back edge u -> h
                lp = loops.setdefault(h, Loop(h, {h}, set()))
                lp.latches.add(u)
                stack = [u]
                while stack:
                    x = stack.pop()
                    if x not in lp.body:
                        lp.body.add(x)
                        stack += preds[x]
    out = sorted(loops.values(), key=lambda lp: blocks[lp.header].start)
    for lp in out:
        lp.depth = sum(1 for o in out if lp.header in o.body)
        lp.innermost = not any(o is not lp and o.header in lp.body for o in out)
    return out


def dag_paths(blocks: list[Block], start: int, nodes: set[int], ends: set[int],
              skip: set[tuple[int, int]], weight) -> tuple[tuple[int, list[int]], tuple[int, list[int]]]:
    """Shortest and longest (instruction count, blocks) from `start` to a block of `ends` over
    `nodes`, edges in `skip` removed (back edges: what is left of a reducible graph is acyclic)."""
    order, seen = [], {start}
    stack = [(start, iter(blocks[start].succs))]
    while stack:                                  # post-order, then reversed: topological
        node, it = stack[-1]
        for s in it:
            if s in nodes and (node, s) not in skip and s not in seen:
                seen.add(s)
                stack.append((s, iter(blocks[s].succs)))
                break
        else:
            order.append(node)
            stack.pop()
    order.reverse()
    pos = {b: i for i, b in enumerate(order)}
    lo: dict[int, tuple[int, list[int]]] = {start: (weight(start), [start])}
    hi: dict[int, tuple[int, list[int]]] = dict(lo)
    for b in order:
        if b not in lo:
            continue
        for s in blocks[b].succs:
            if s not in pos or (b, s) in skip or pos[s] <= pos[b]:   # pos check: irreducible edges
                continue
            w = weight(s)
            if s not in lo or lo[b][0] + w < lo[s][0]:
                lo[s] = (lo[b][0] + w, lo[b][1] + [s])
            if s not in hi or hi[b][0] + w > hi[s][0]:
                hi[s] = (hi[b][0] + w, hi[b][1] + [s])
    done = [b for b in ends if b in lo] or list(lo)
    return min((lo[b] for b in done), key=lambda t: t[0]), max((hi[b] for b in done), key=lambda t: t[0])


# ------------------------------------------------------------------ instruction mix

TENSOR = {"HMMA", "IMMA", "DMMA", "BMMA", "HGMMA", "IGMMA", "BGMMA", "QGMMA", "OMMA", "QMMA"}
FMA = {"FFMA", "FFMA32I", "HFMA2", "DFMA", "FFMA2"}
FP = {"FADD", "FADD32I", "FMUL", "FMUL32I", "HADD2", "HMUL2", "DADD", "DMUL", "FMNMX", "HMNMX2",
      "FADD2", "FMUL2"}
MEMORY = {"LDS": "lds", "LDSM": "ldsm", "LDG": "ldg", "LDGSTS": "ldgsts", "STS": "sts", "STG": "stg",
          "LDL": "local", "STL": "local", "LD": "generic", "ST": "generic", "ATOMS": "atomic",
          "ATOMG": "atomic", "ATOM": "atomic", "RED": "atomic", "REDG": "atomic", "LDC": "const",
          "ULDC": "const", "UTMALDG": "tma", "UTMASTG": "tma", "UBLKCP": "tma"}
SYNC = {"BAR": "bar", "DEPBAR": "depbar", "LDGDEPBAR": "depbar", "SYNCS": "mbarrier",
        "ARRIVES": "mbarrier"}
CONVERT = {"F2F", "F2I", "I2F", "I2I", "F2FP", "FRND", "I2FP", "F2IP", "MUFU"}
CONTROL = {"BRA", "BRX", "BRXU", "JMP", "JMX", "EXIT", "RET", "CALL", "BSSY", "BSYNC", "BREAK",
           "BMOV", "WARPSYNC", "NOP", "YIELD", "KILL", "BPT", "NANOSLEEP"}
CATEGORIES = ("tensor", "fma", "fp", "lds", "ldsm", "ldg", "ldgsts", "sts", "stg", "local", "generic",
              "atomic", "const", "tma", "bar", "depbar", "mbarrier", "convert", "control", "nop",
              "alu")
# element size of an instantiation's first template argument (for elements stored)
ITEMSIZE = {"__half": 2, "__nv_bfloat16": 2, "float": 4, "double": 8, "cfloat": 8, "cdouble": 16,
            "int": 4, "longlong": 8}


def category(ins: Instr) -> str:
    b = ins.base
    if _never(ins):                # '@!PT LDS RZ, [RZ]': issued, does nothing (beside LDGSTS)
        return "nop"
    if b in TENSOR:
        return "tensor"
    if b in FMA or b in FP:
        srcs = [o.strip().lstrip("-|!") for o in ins.operands.split(",")[1:]]
        # 'HFMA2.MMA R5, -RZ, RZ, 1.875, 0' is how ptxas loads a constant on the FMA pipe: a move
        if not any(_REG.fullmatch(o) for o in srcs):
            return "alu"
        # 'HADD2.F32 R0, -RZ, R2.H0_H0': half -> float by adding -0
        if b == "HADD2" and "F32" in ins.mods and "RZ" in srcs:
            return "convert"
        return "fma" if b in FMA else "fp"
    if b in MEMORY:
        return MEMORY[b]
    if b in SYNC:
        return SYNC[b]
    if b in CONVERT:
        return "convert"
    if b in CONTROL:
        return "control"
    return "alu"


_REG = re.compile(r"U?R\d+(?:\.\w+)*\|?")


def _store_bytes(ins: Instr) -> int:
    for m in ins.mods:
        if m in ("128", "64", "32", "U16", "S16", "U8", "S8"):
            return {"128": 16, "64": 8, "32": 4, "U16": 2, "S16": 2, "U8": 1, "S8": 1}[m]
    return 4


def _dest_and_addend(ins: Instr) -> tuple[str, str] | None:
    ops = [o.strip() for o in ins.operands.split(",")]
    if len(ops) >= 4:
        return ops[0], ops[3].split(".")[0].lstrip("-|")
    return None


def itemsize(kernel: str) -> int | None:
    m = re.search(r"<\s*([^,>]+)", kernel)
    return ITEMSIZE.get(re.sub(r"\s+", "", m.group(1))) if m else None


def _is_rcp(ins: Instr) -> bool:
    """I2F.RP / I2F.U32.RP / I2F.U64.RP: the divisor's reciprocal of an integer division."""
    return ins.base == "I2F" and "RP" in ins.mods


def division_sequences(instrs: list[Instr]) -> int:
    """Inline integer divisions and remainders: a quotient estimate 'IMAD.HI.U32 Rq, Ra, Rb, RZ'
    (the reciprocal times the dividend) followed within 12 instructions by the unsigned compare
    and a predicated fix-up.  ~10 instructions when the reciprocal (I2F.RP, MUFU.RCP, F2I, IMAD,
    IMAD.HI: ~10 more) is hoisted out of the loop for a loop-invariant divisor, as ptxas does;
    a division by a compile-time constant (IMAD.HI by a magic number, a shift) is not counted."""
    n = 0
    for i, ins in enumerate(instrs):
        if ins.opcode != "IMAD.HI.U32":
            continue
        ops = [o.strip().split(".")[0] for o in ins.operands.split(",")]
        if len(ops) != 4 or ops[3] != "RZ" or not all(re.fullmatch(r"R\d+", o) for o in ops[:3]):
            continue
        window = instrs[i + 1:i + 13]
        if any(w.base == "ISETP" and "U32" in w.mods for w in window) and any(
                w.pred and not _never(w) and w.base in ("IADD3", "VIADD", "IMAD", "IADD") for w in window):
            n += 1
    return n


def _stored_bytes(instrs: list[Instr]) -> int:
    return sum(_store_bytes(i) for i in instrs if category(i) in ("stg", "sts"))


def mix(instrs: list[Instr], calls: list[dict], elem: int | None,
        paths: tuple[tuple[int, list[Instr]], tuple[int, list[Instr]]] | None = None) -> dict:
    """Counts by category over `instrs` and the ratios; `paths`: the shortest and longest pass
    (instruction count, its instructions), for the instructions per element stored."""
    counts = {c: 0 for c in CATEGORIES}
    stored = 0
    chains = 0                 # FMA/MMA chains: an addend no earlier FMA/MMA of the pass wrote
    written: set[str] = set()
    for ins in instrs:
        c = category(ins)
        counts[c] += 1
        if c in ("stg", "sts"):
            stored += _store_bytes(ins)
        if c in ("tensor", "fma"):
            da = _dest_and_addend(ins)
            if da and re.fullmatch(r"R\d+", da[1]):
                chains += da[1] not in written
                written.add(da[0])
    n = len(instrs)
    (lo, lo_ins), (hi, hi_ins) = paths or ((n, instrs), (n, instrs))
    math = counts["tensor"] + counts["fma"] + counts["fp"]
    # a 64-bit division is a call beside an inline 32-bit fast path (both operands < 2^32)
    ndc = sum(1 for c in calls if c["division"])
    seqs = division_sequences(instrs)
    out = {"instructions": n, "counts": {k: v for k, v in counts.items() if v},
           "math": math,
           "tensor_share": round(counts["tensor"] / n, 3) if n else 0.0,
           "fma_share": round(counts["fma"] / n, 3) if n else 0.0,
           "div_sequences": seqs, "div_rcp": sum(1 for i in instrs if _is_rcp(i)), "div_calls": ndc,
           "calls": calls, "bar": counts["bar"], "depbar": counts["depbar"],
           "accumulators": chains,
           "div32": max(seqs - ndc, 0), "div64": ndc}
    if math:
        out["per_math"] = {k: round(counts[k] / math, 3)
                           for k in ("lds", "ldsm", "ldg", "ldgsts", "sts", "stg", "local")}
        out["instr_per_math"] = round(n / math, 2)
    if elem and stored:
        # per path: a path that stores nothing (an early return) does not count
        st_lo, st_hi = _stored_bytes(lo_ins), _stored_bytes(hi_ins)
        per = [round(n_ * elem / st, 1) for n_, st in ((lo, st_lo), (hi, st_hi)) if st]
        out["stored_elements"] = round(stored / elem, 2)
        if per:
            out["instr_per_element"] = [min(per), max(per)]
    if chains:
        out["instr_per_accumulator"] = [round(lo / chains, 2), round(hi / chains, 2)]
    return out


def _line_span(instrs: list[Instr]) -> str:
    lines: dict[str, list[int]] = {}
    for ins in instrs:
        if ins.line:
            lines.setdefault(ins.line[0], []).append(ins.line[1])
    if not lines:
        return ""
    f = max(lines, key=lambda k: (not k.endswith(".cuh"), len(lines[k])))
    return f"{f}:{min(lines[f])}-{max(lines[f])}"


def _is_division_routine(sec: Section, target, name: str) -> bool:
    """An integer division/remainder routine: by name ($__internal_0_$__cuda_sm20_div_s64; not the
    float division slow paths, ..._div_rn_noftz_f32_slowpath), else by an I2F.RP in its body."""
    if not name.startswith("0x"):
        return re.search(r"(?:div|rem)_[su](?:16|32|64)\b", name) is not None
    addr = sec.labels.get(target) if isinstance(target, str) else target
    started = False
    for ins in sec.instrs:
        if ins.addr == addr:
            started = True
        if started:
            if _is_rcp(ins):
                return True
            if ins.base == "RET" and _always(ins):
                return False
    return False


def analyse_kernel(sec: Section, entry_name: str, kernel: str) -> dict:
    """The loop report of one kernel: innermost loops with their mix, and the straight-line part."""
    entry = sec.labels.get(entry_name, sec.instrs[0].addr if sec.instrs else 0)
    blocks, eb, indirect = build_cfg(sec, entry)
    loops = find_loops(blocks, eb)
    elem = itemsize(kernel)
    by_addr = {v: k for k, v in sec.labels.items() if not k.startswith(".")}

    def calls_in(bids) -> list[dict]:
        out = []
        for b in sorted(bids):
            for ins in sec.instrs[blocks[b].start:blocks[b].end]:
                if ins.base == "CALL":
                    t = ins.target
                    name = t if isinstance(t, str) else by_addr.get(t, hex(t) if t is not None else "?")
                    out.append({"callee": name, "division": _is_division_routine(sec, t, name)})
        return out

    def instrs_of(bids):
        return [ins for b in sorted(bids) for ins in sec.instrs[blocks[b].start:blocks[b].end]]

    def size(b):
        return blocks[b].end - blocks[b].start

    def with_instrs(path):
        return path[0], instrs_of(path[1])

    back = {(u, lp.header) for lp in loops for u in lp.latches}
    rep_loops = []
    for lp in loops:
        if not lp.innermost:
            continue
        body = instrs_of(lp.body)
        short, long_ = dag_paths(blocks, lp.header, lp.body, lp.latches, back, size)
        r = {"source": _line_span(body), "depth": lp.depth, "blocks": len(lp.body),
             "iter_min": short[0], "iter_max": long_[0]}
        r.update(mix(body, calls_in(lp.body), elem, (with_instrs(short), with_instrs(long_))))
        rep_loops.append(r)
    in_loop = set().union(*(lp.body for lp in loops)) if loops else set()
    straight = [b for b in range(len(blocks)) if b not in in_loop]
    total = sum(size(b) for b in range(len(blocks)))
    # the straight-line part: entry to EXIT with every loop counted as nothing
    exits = {b for b in range(len(blocks)) if not blocks[b].succs
             or sec.instrs[blocks[b].end - 1].base in ("EXIT", "RET")}    # '@P0 EXIT' too
    short, long_ = dag_paths(blocks, eb, set(range(len(blocks))), exits, back,
                             lambda b: 0 if b in in_loop else size(b))
    short = (short[0], [b for b in short[1] if b not in in_loop])
    long_ = (long_[0], [b for b in long_[1] if b not in in_loop])
    line = mix(instrs_of(straight), calls_in(straight), elem, (with_instrs(short), with_instrs(long_)))
    line.update(source="straight-line", iter_min=short[0], iter_max=long_[0])

    def fma_math(r):
        return r["counts"].get("tensor", 0) + r["counts"].get("fma", 0)
    hot = max(range(len(rep_loops)), default=None,
              key=lambda i: (fma_math(rep_loops[i]), rep_loops[i]["math"], rep_loops[i]["instructions"]))
    # a kernel whose FMAs are all unrolled out of its loops (depthwise, taps in registers) does its
    # work in the straight-line part: that is then the part to read
    if fma_math(line) and (hot is None or not fma_math(rep_loops[hot])):
        hot = "straight_line"
    return {"instructions": total, "loops": len(loops), "innermost": rep_loops, "hot": hot,
            "straight_line": line, "indirect_branches": indirect}


# ------------------------------------------------------------------ compile to cubin

def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s)


def _nvcc_cubin(module: str, exprs: tuple[str, ...], arch: str, td: Path):
    src = loader.read_source(module)
    table = ",\n".join(f"    (void*)&{e}" for e in exprs)
    src += f"\nvoid* gpuconv_sass_instances[] = {{\n{table}\n}};\n"
    tu = td / (Path(module).stem + "_sass.cu")
    tu.write_text(src)
    cubin = td / "out.cubin"
    cmd = ["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", "-lineinfo", "-o", str(cubin), str(tu)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None, res.stdout + res.stderr, {}
    return cubin, res.stdout + res.stderr, {}   # names matched after disassembly (c++filt)


def _nvrtc_cubin(module: str, exprs: tuple[str, ...], arch: str, td: Path):
    from . import compile_check as cc
    lib = cc._load_nvrtc()
    if lib is None:
        raise RuntimeError("NVRTC not found (pip install nvidia-cuda-nvrtc)")
    prog = ctypes.c_void_p()
    src = loader.read_source(module).encode()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), src, module.encode(), 0, None, None):
        return None, "nvrtcCreateProgram failed", {}
    try:
        for e in exprs:
            lib.nvrtcAddNameExpression(prog, e.encode())
        opts = [f"-arch={arch}", "-std=c++17", "-lineinfo"]
        inc = cc.cuda_include_dir()
        if inc is not None:
            opts.append(f"-I{inc}")
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        if rc:
            return None, log, {}
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        data = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, data)
        cubin = td / "out.cubin"
        cubin.write_bytes(data.raw)
        mapping = {}
        for e in exprs:
            low = ctypes.c_char_p()
            if lib.nvrtcGetLoweredName(prog, e.encode(), ctypes.byref(low)) == 0:
                mapping[e] = low.value.decode()
        return cubin, log, mapping
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _compiler_id(compiler: str) -> str:
    if compiler == "nvcc":
        return "nvcc " + _version(("nvcc", "--version"))
    from . import compile_check as cc
    lib = cc._load_nvrtc()
    major, minor = ctypes.c_int(), ctypes.c_int()
    if lib is not None:
        lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"nvrtc {major.value}.{minor.value}"


def _cache_key(src: str, expr: str, arch: str, compiler: str, tool: tuple[str, str]) -> str:
    h = hashlib.sha256()
    for part in (_SELF, _compiler_id(compiler), tool[0], _version((tool[1], "--version")),
                 arch, expr, src):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def analyse_module(module: str, exprs: tuple[str, ...], arch: str, compiler: str,
                   tool: tuple[str, str], use_cache: bool = True) -> tuple[bool, str, list[dict]]:
    """(ok, compiler log, one report per instantiation: {module, kernel, arch, cached, ...})."""
    from . import compile_check as cc
    src = loader.read_source(module)
    root = _paths.cache_dir() / "sass" / arch / Path(module).stem
    keys = {e: _cache_key(src, e, arch, compiler, tool) for e in exprs}
    reports: dict[str, dict] = {}
    if use_cache:
        for e, k in keys.items():
            p = root / f"{k}.json"
            if p.is_file():
                try:
                    reports[e] = dict(json.loads(p.read_text()), cached=True)
                except (OSError, ValueError):
                    pass
    missing = tuple(e for e in exprs if e not in reports)
    ok, log = True, ""
    if missing:
        with tempfile.TemporaryDirectory(prefix="gpuconv-sass-") as td:
            fn = _nvcc_cubin if compiler == "nvcc" else _nvrtc_cubin
            cubin, log, mapping = fn(module, missing, arch, Path(td))
            if cubin is None:
                return False, log, [{"module": module, "kernel": e, "arch": arch, "error": "compile failed"}
                                    for e in exprs]
            sections = parse_sass(disassemble(cubin, tool))
        if not mapping:          # nvcc: match demangled names to the expressions
            names = cc.demangle(list(sections))
            by_id = {cc._template_id(names[m]): m for m in sections}
            mapping = {e: by_id.get(_norm(e), "") for e in missing}
        for e in missing:
            mangled = mapping.get(e, "")
            sec = sections.get(mangled)
            if sec is None:
                reports[e] = {"error": f"no SASS found for {e} ({mangled or 'name not matched'})"}
                ok = False
                continue
            rep = analyse_kernel(sec, mangled, e)
            rep["mangled"] = mangled
            reports[e] = dict(rep, cached=False)
            if use_cache:
                try:
                    root.mkdir(parents=True, exist_ok=True)
                    tmp = root / f".{keys[e]}.{os.getpid()}.tmp"
                    tmp.write_text(json.dumps(rep))
                    os.replace(tmp, root / f"{keys[e]}.json")
                except OSError:          # a read-only cache: the report stands, uncached
                    pass
    return ok, log, [dict({"module": module, "kernel": e, "arch": arch}, **reports[e]) for e in exprs]


# ------------------------------------------------------------------ report

def _fmt(x, width, nd=2) -> str:
    if x is None:
        return f"{'-':>{width}s}"
    if isinstance(x, float):
        return f"{x:{width}.{nd}f}"
    return f"{x:>{width}}"


def _range(v) -> str:
    if not v:
        return "-"
    lo, hi = v
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def _row(kernel: str, arch: str, r: dict | None) -> str:
    if r is None:
        return f"{kernel:56s} {arch:6s} (no loop)"
    pm = r.get("per_math")
    it = _range((r["iter_min"], r["iter_max"]))
    return (f"{kernel:56s} {arch:6s} {it:>8s} {r['tensor_share']:6.2f} {r['fma_share']:5.2f} "
            f"{_fmt(pm['lds'] + pm['ldsm'] if pm else None, 6)} "
            f"{_fmt(pm['ldg'] + pm['ldgsts'] if pm else None, 6)} "
            f"{_fmt(pm['sts'] if pm else None, 6)} {_fmt(pm['stg'] if pm else None, 6)} "
            f"{r['div32']:>3d}/{r['div64']:<2d} {r['bar']:3d} "
            f"{_range(r.get('instr_per_element')):>9s} {_range(r.get('instr_per_accumulator')):>11s}  "
            f"{r['source']}")


HEADER = (f"{'kernel (hot innermost loop)':56s} {'arch':6s} {'instr/it':>8s} {'tensor':>6s} {'fma':>5s} "
          f"{'lds/m':>6s} {'ldg/m':>6s} {'sts/m':>6s} {'stg/m':>6s} {'div32/64':>6s} {'bar':>3s} "
          f"{'instr/el':>9s} {'instr/acc':>11s}  source")
LEGEND = ("instr/it: instructions per iteration (shortest-longest path); tensor, fma: share of the "
          "loop's instructions; x/m: per math instruction (tensor+fma+fp; lds includes LDSM, ldg "
          "LDGSTS); div32/64: integer divisions (inline sequences / 64-bit routine calls); bar: block "
          "barriers; instr/el: instructions per element stored; instr/acc: per FMA/MMA chain")


def report(modules: list[str], archs: list[str], compiler: str, modules_map: dict,
           as_json: bool = False, jobs: int = 2, use_cache: bool = True, out=None) -> int:
    """Print the hot-loop table (or JSON with every innermost loop); 0 clean, 1 a failure."""
    out = out or sys.stdout
    tool = disassembler()
    if tool is None:
        print("gpuconv kernels --sass: neither nvdisasm nor cuobjdump found (CUDA toolkit, or "
              "pip install nvidia-cuda-nvdisasm)", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    work = [(m, a) for m in modules for a in archs]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        results = list(ex.map(lambda j: analyse_module(j[0], tuple(modules_map[j[0]]), j[1], compiler,
                                                       tool, use_cache), work))
    status = 0
    rows: list[dict] = []
    for (m, a), (ok, log, reps) in zip(work, results):
        rows += reps
        if not ok:
            status = 1
            print(f"--- {m} for {a}: SASS report FAILED\n{log}", file=sys.stderr)
            for r in reps:
                if "error" in r and r["error"] != "compile failed":
                    print(f"    {r['kernel']}: {r['error']}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    if as_json:
        print(json.dumps(rows, indent=1), file=out)
        return status
    print(HEADER, file=out)
    for r in rows:
        if "error" in r:
            print(f"{r['kernel']:56s} {r['arch']:6s} ERROR {r['error']}", file=out)
            continue
        h = r["hot"]
        hot = r["straight_line"] if h == "straight_line" else r["innermost"][h] if h is not None else None
        print(_row(r["kernel"], r["arch"], hot), file=out)
    cached = sum(1 for r in rows if r.get("cached"))
    print(f"{len(rows)} instantiation x arch rows ({cached} from the cache), {elapsed:.1f} s, "
          f"{compiler} + {tool[0]}\n{LEGEND}", file=out)
    return status
