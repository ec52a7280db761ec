"""Benchmark suites: real layer shapes, as data.

A conv shape is (N, C, H, W, K, R, S, stride, pad, dilation, groups), the
operands of torch.nn.functional.conv2d: input (N, C, H, W), weight
(K, C/groups, R, S), symmetric padding.  A signal shape is (H, W, R, S): one
image and one filter for convolve2d / correlate2d.

The suites live here, inside the package, so `gpuconv bench` works from a
plain wheel install; bench/suites.json in the source tree is generated from
this module (python bench/dump_suites.py) for tools that want JSON.
"""
from __future__ import annotations

from dataclasses import dataclass

OPS = ("conv2d", "conv2d_input", "conv2d_weight", "separable_conv2d", "convolve2d", "correlate2d")
SIGNAL_OPS = ("convolve2d", "correlate2d")


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    op: conv2d (forward), conv2d_input / conv2d_weight (the two gradients of
    the forward conv `shape` describes), separable_conv2d (depthwise RxS on C
    channels, then pointwise 1x1 C -> K; groups must be C), convolve2d /
    correlate2d (scipy.signal semantics, `mode` full/same/valid).
    dtype: fixed dtype for the case (the cpu suite's signal cases are
    float64), or None to use the run's --dtype.
    """

    suite: str
    name: str
    op: str
    shape: tuple
    mode: str | None = None
    dtype: str | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r} in case {self.name!r}; expected one of {OPS}")
        want = 4 if self.op in SIGNAL_OPS else 11
        if len(self.shape) != want:
            raise ValueError(f"case {self.name!r}: {self.op} takes a {want}-tuple shape, got {self.shape}")
        if self.op in SIGNAL_OPS and self.mode not in ("full", "same", "valid"):
            raise ValueError(f"case {self.name!r}: mode must be full/same/valid, got {self.mode!r}")

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"

    def shape_str(self) -> str:
        if self.op in SIGNAL_OPS:
            h, w, r, s = self.shape
            return f"{h}x{w} * {r}x{s} {self.mode}"
        n, c, h, w, k, r, s, st, pd, dl, g = self.shape
        extra = "".join([f" s{st}" if st != 1 else "", f" p{pd}" if pd else "",
                         f" d{dl}" if dl != 1 else "", f" g{g}" if g != 1 else ""])
        return f"{n}x{c}x{h}x{w} -> {k}, {r}x{s}{extra}"


def conv(n, c, h, w, k, r, s, stride=1, pad=0, dil=1, groups=1) -> tuple:
    return (n, c, h, w, k, r, s, stride, pad, dil, groups)


# ---------------------------------------------------------------- ResNet-50
# torchvision resnet50 (v1.5: the stride sits in the 3x3 of each stage's first
# block), 224x224 input.  Every distinct conv: (name, C, H, K, R, stride, pad).
_RESNET50 = [
    ("stem_7x7s2", 3, 224, 64, 7, 2, 3),
    ("c2_1x1_64-64", 64, 56, 64, 1, 1, 0),
    ("c2_3x3_64", 64, 56, 64, 3, 1, 1),
    ("c2_1x1_64-256", 64, 56, 256, 1, 1, 0),         # also the stage-2 projection
    ("c2_1x1_256-64", 256, 56, 64, 1, 1, 0),
    ("c3_1x1_256-128", 256, 56, 128, 1, 1, 0),
    ("c3_3x3_128s2", 128, 56, 128, 3, 2, 1),
    ("c3_1x1_128-512", 128, 28, 512, 1, 1, 0),
    ("c3_proj_256-512s2", 256, 56, 512, 1, 2, 0),
    ("c3_1x1_512-128", 512, 28, 128, 1, 1, 0),
    ("c3_3x3_128", 128, 28, 128, 3, 1, 1),
    ("c4_1x1_512-256", 512, 28, 256, 1, 1, 0),
    ("c4_3x3_256s2", 256, 28, 256, 3, 2, 1),
    ("c4_1x1_256-1024", 256, 14, 1024, 1, 1, 0),
    ("c4_proj_512-1024s2", 512, 28, 1024, 1, 2, 0),
    ("c4_1x1_1024-256", 1024, 14, 256, 1, 1, 0),
    ("c4_3x3_256", 256, 14, 256, 3, 1, 1),
    ("c5_1x1_1024-512", 1024, 14, 512, 1, 1, 0),
    ("c5_3x3_512s2", 512, 14, 512, 3, 2, 1),
    ("c5_1x1_512-2048", 512, 7, 2048, 1, 1, 0),
    ("c5_proj_1024-2048s2", 1024, 14, 2048, 1, 2, 0),
    ("c5_1x1_2048-512", 2048, 7, 512, 1, 1, 0),
    ("c5_3x3_512", 512, 7, 512, 3, 1, 1),
]

# ---------------------------------------------------------------- VGG-16
# The distinct 3x3/pad-1 convs of VGG-16 (conv3_3, conv4_3, conv5_2/3 repeat
# earlier shapes); batch 16 keeps conv1_2's activations at 205 MB in fp32.
_VGG16 = [
    ("conv1_1", 3, 224, 64), ("conv1_2", 64, 224, 64),
    ("conv2_1", 64, 112, 128), ("conv2_2", 128, 112, 128),
    ("conv3_1", 128, 56, 256), ("conv3_2", 256, 56, 256),
    ("conv4_1", 256, 28, 512), ("conv4_2", 512, 28, 512),
    ("conv5_1", 512, 14, 512),
]
VGG_BATCH = 16

# ---------------------------------------------------------------- MobileNetV2
# The depthwise 3x3 convs (groups = C, expansion 6 except the first block):
# (channels, input size, stride).
_MOBILENETV2_DW = [
    (32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2),
    (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1),
]
MOBILENET_BATCH = 32

SIGNAL_SIZES = (3, 5, 7, 11, 15)


def _build() -> dict[str, list[Case]]:
    suites: dict[str, list[Case]] = {}
    for batch in (32, 1):
        sname = f"resnet50_b{batch}"
        suites[sname] = [Case(sname, name, "conv2d", conv(batch, c, h, h, k, r, r, st, pd))
                         for name, c, h, k, r, st, pd in _RESNET50]
    suites["vgg16"] = [Case("vgg16", name, "conv2d", conv(VGG_BATCH, c, h, h, k, 3, 3, 1, 1))
                       for name, c, h, k in _VGG16]
    suites["mobilenetv2_dw"] = [
        Case("mobilenetv2_dw", f"dw{c}_{h}{'s2' if st == 2 else ''}", "conv2d",
             conv(MOBILENET_BATCH, c, h, h, c, 3, 3, st, 1, 1, c))
        for c, h, st in _MOBILENETV2_DW]
    # DeepBench conv_problems (speech): W=700, H=161, C=1, N=16, K=32, S=20, R=5, stride 2.
    suites["deepbench"] = [Case("deepbench", "speech_161x700_5x20s2", "conv2d",
                                conv(16, 1, 161, 700, 32, 5, 20, 2, 0))]
    suites["signal"] = [Case("signal", f"convolve2d_4096_{k}x{k}", "convolve2d",
                             (4096, 4096, k, k), mode="same") for k in SIGNAL_SIZES]
    # Gradients and the separable conv on a few ResNet-50 / MobileNet shapes.
    suites["backward"] = (
        [Case("backward", f"{op}_{name}", op, conv(32, c, h, h, k, r, r, st, pd))
         for op in ("conv2d_input", "conv2d_weight")
         for name, c, h, k, r, st, pd in (_RESNET50[2], _RESNET50[6], _RESNET50[4], _RESNET50[16])]
        + [Case("backward", "separable_dw144_56_pw144-24", "separable_conv2d",
                conv(32, 144, 56, 56, 24, 3, 3, 1, 1, 1, 144))])

    # The CPU targets of the foundation issue: conv2d vs torch CPU (float32),
    # correlate2d / convolve2d vs scipy.signal (1024^2 float64, 5x5).
    cpu_convs = [
        ("3x3_64_56", conv(8, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1)),
        ("stem_7x7s2", conv(1, 3, 224, 224, 64, 7, 7, 2, 3, 1, 1)),
        ("1x1_256-128_28", conv(8, 256, 28, 28, 128, 1, 1, 1, 0, 1, 1)),
        ("3x3s2_128-256_28", conv(8, 128, 28, 28, 256, 3, 3, 2, 1, 1, 1)),
        ("3x3d2_32_64", conv(4, 32, 64, 64, 32, 3, 3, 1, 2, 2, 1)),
        ("dw3x3_128_56", conv(8, 128, 56, 56, 128, 3, 3, 1, 1, 1, 128)),
    ]
    cpu = [Case("cpu", name, "conv2d", shp, dtype="float32") for name, shp in cpu_convs]
    cpu += [Case("cpu", f"{op}_1024_5x5_{mode}", op, (1024, 1024, 5, 5), mode=mode, dtype="float64")
            for op in SIGNAL_OPS for mode in ("full", "same", "valid")]
    cpu += [Case("cpu", f"{op}_{name}", op, shp, dtype="float32")
            for op in ("conv2d_input", "conv2d_weight")
            for name, shp in (cpu_convs[0], cpu_convs[2], cpu_convs[3],
                              ("dw3x3s2_144_56", conv(8, 144, 56, 56, 144, 3, 3, 2, 1, 1, 144)))]
    cpu += [Case("cpu", "separable_dw3x3_64_56_pw64-128", "separable_conv2d",
                 conv(8, 64, 56, 56, 128, 3, 3, 1, 1, 1, 64), dtype="float32")]
    suites["cpu"] = cpu

    # Small enough for a 2-core CPU in well under a minute (CI runs it).
    suites["quick"] = [
        Case("quick", "3x3_16-32_32", "conv2d", conv(2, 16, 32, 32, 32, 3, 3, 1, 1)),
        Case("quick", "stem_7x7s2_64", "conv2d", conv(1, 3, 64, 64, 16, 7, 7, 2, 3)),
        Case("quick", "1x1_64-32_16", "conv2d", conv(2, 64, 16, 16, 32, 1, 1)),
        Case("quick", "dw3x3_32_32", "conv2d", conv(2, 32, 32, 32, 32, 3, 3, 1, 1, 1, 32)),
        Case("quick", "correlate2d_256_5x5_same", "correlate2d", (256, 256, 5, 5), mode="same",
             dtype="float64"),
        Case("quick", "convolve2d_256_5x5_full", "convolve2d", (256, 256, 5, 5), mode="full",
             dtype="float64"),
        Case("quick", "conv2d_input_3x3_16-32", "conv2d_input", conv(2, 16, 32, 32, 32, 3, 3, 1, 1)),
        Case("quick", "conv2d_weight_3x3_16-32", "conv2d_weight", conv(2, 16, 32, 32, 32, 3, 3, 1, 1)),
        Case("quick", "separable_dw16_32_pw16-32", "separable_conv2d",
             conv(2, 16, 32, 32, 32, 3, 3, 1, 1, 1, 16)),
    ]
    return suites


SUITES: dict[str, list[Case]] = _build()

# What `gpuconv bench` runs with no --suite: the GPU suites on a GPU, the cpu
# suite on a CPU-only machine.
DEFAULT_GPU = ("resnet50_b32", "resnet50_b1", "vgg16", "mobilenetv2_dw", "deepbench", "signal",
               "backward")
DEFAULT_CPU = ("cpu",)


def get(names) -> list[Case]:
    """Cases of the named suites, in order, each case once ('all' = every suite but quick)."""
    out, seen = [], set()
    for name in names:
        if name == "all":
            sub = [c for s, cases in SUITES.items() if s != "quick" for c in cases]
        elif name in SUITES:
            sub = SUITES[name]
        else:
            raise KeyError(f"unknown suite {name!r}; known: {', '.join(sorted(SUITES))}, all")
        for c in sub:
            if c.id not in seen:
                seen.add(c.id)
                out.append(c)
    return out


def as_json() -> dict:
    return {name: [{"name": c.name, "op": c.op, "shape": list(c.shape), "mode": c.mode,
                    "dtype": c.dtype} for c in cases] for name, cases in SUITES.items()}
