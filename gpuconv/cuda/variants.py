"""Registry of the conv-forward variants: name -> launch.Variant, one calling convention.

    v = get("tiled_smem")
    ok, reason = v.supports(spec)
    config = v.default_config(spec, facts)
    v.workspace_bytes(spec, config)       # device bytes beyond the output
    v.launch(backend, x, w, b, y, spec, act, config)

The variants come from the kernel-family modules (gpuconv.cuda.families), in their
order; `MODULES` (kernels_cu file -> instantiations) is theirs too.  Tests and
benchmarks loop over `conv_variant_names()`.
"""
from __future__ import annotations

from .families import MODULES, VARIANTS
from .launch import Variant
from ..spec import ConvSpec


def _registry(variants) -> dict[str, Variant]:
    reg: dict[str, Variant] = {}
    for v in variants:
        if v.name in reg:
            raise ValueError(f"variant {v.name!r} registered twice")
        reg[v.name] = v
    return reg


_REGISTRY = _registry(VARIANTS)


def conv_variant_names() -> tuple[str, ...]:
    """Registered conv-forward variants, in registration order (stable)."""
    return tuple(_REGISTRY)


def get(name: str) -> Variant:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown conv algorithm {name!r}; registered variants: "
                         f"{', '.join(conv_variant_names())}") from None


def supported(spec: ConvSpec) -> tuple[str, ...]:
    return tuple(n for n, v in _REGISTRY.items() if v.supports(spec)[0])


__all__ = ["MODULES", "Variant", "conv_variant_names", "get", "supported"]
