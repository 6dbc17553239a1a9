"""The WGSL compute kernels, shipped as data in ``ferrousforge/wgsl/``: one self-contained
``.wgsl`` file per kernel, read as-is by the wgpu backend here and by the browser."""

from __future__ import annotations

from importlib.resources import files


def names() -> list[str]:
    """The kernels there are, by name (``matmul``, ``layernorm``, ...)."""
    folder = files("ferrousforge") / "wgsl"
    return sorted(
        p.name.removesuffix(".wgsl") for p in folder.iterdir() if p.name.endswith(".wgsl")
    )


def source(name: str) -> str:
    """The WGSL source of the kernel ``name``."""
    return (files("ferrousforge") / "wgsl" / f"{name}.wgsl").read_text(encoding="utf-8")
