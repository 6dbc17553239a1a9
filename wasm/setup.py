"""Builds the ``ferrousforge-wasm`` wheel (``npm run build`` runs ``pip wheel wasm``): pure
Python, plus two things copied in from the server's package, their one source, so the browser
runs the very bytes the ``wgpu`` backend runs: the WGSL kernels (``kernel/wgsl/*.wgsl``, as
package data in ``forge_wasm/wgsl/``) and the BERT dispatch plan
(``kernel/backends/bert_plan.py``, standard library only, as ``forge_wasm/bert_plan.py``)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL = Path(__file__).resolve().parent.parent / "kernel"
KERNELS = KERNEL / "wgsl"
PLAN = KERNEL / "backends" / "bert_plan.py"


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        sources = sorted(KERNELS.glob("*.wgsl"))
        if not sources or not PLAN.is_file():
            raise SystemExit(f"no WGSL kernels or {PLAN} here: build from a FerrousForge checkout")
        package = Path(self.build_lib) / "forge_wasm"
        target = package / "wgsl"
        target.mkdir(parents=True, exist_ok=True)
        for old in [*target.glob("*.wgsl"), package / PLAN.name]:
            old.unlink(missing_ok=True)
        for path in sources:
            self.copy_file(str(path), str(target / path.name))
        self.copy_file(str(PLAN), str(package / PLAN.name))


setup(cmdclass={"build_py": BuildPy})
