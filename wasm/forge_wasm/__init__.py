"""FerrousForge inside Pyodide: the Python side of the browser's Pyodide + WGSL Mold.

``bert`` runs BERT sentence encoders (minilm:l6) on WebGPU through ``from js import
navigator``, dispatching the server ``wgpu`` backend's own WGSL kernels by its own dispatch
plan, which the wheel carries byte for byte (``wasm/setup.py`` copies ``kernel/wgsl/*.wgsl``
and ``kernel/backends/bert_plan.py`` in at build time).
Pure Python, standard library only: Pyodide offline has no numpy.
"""

from __future__ import annotations

from importlib.resources import files

__version__ = "0.1.0"


def names() -> list[str]:
    """The WGSL kernels the wheel carries, by name (``matmul``, ``layernorm``, ...)."""
    folder = files(__name__) / "wgsl"
    return sorted(
        p.name.removesuffix(".wgsl") for p in folder.iterdir() if p.name.endswith(".wgsl")
    )


def source(name: str) -> str:
    """The WGSL source of the kernel ``name``, as the server's ``wgpu`` backend reads it."""
    return (files(__name__) / "wgsl" / f"{name}.wgsl").read_text(encoding="utf-8")
