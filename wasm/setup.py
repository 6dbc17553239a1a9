"""Builds the ``ferrousforge-wasm`` wheel (``npm run build`` runs ``pip wheel wasm``): pure
Python, plus the server's WGSL kernels copied in as package data from ``kernel/wgsl``, their
one source, so the browser runs the very bytes the ``wgpu`` backend runs."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNELS = Path(__file__).resolve().parent.parent / "kernel" / "wgsl"


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        sources = sorted(KERNELS.glob("*.wgsl"))
        if not sources:
            raise SystemExit(f"no WGSL kernels in {KERNELS}: build from a FerrousForge checkout")
        target = Path(self.build_lib) / "forge_wasm" / "wgsl"
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.wgsl"):
            old.unlink()
        for path in sources:
            self.copy_file(str(path), str(target / path.name))


setup(cmdclass={"build_py": BuildPy})
