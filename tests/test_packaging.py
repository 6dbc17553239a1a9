"""A normal (non-editable) wheel carries what editable installs find in the tree: the widget
ES modules and CSS, the WGSL kernels, and the config file that enables the server extension."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("ferrousforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for widget in ("compare", "models", "chat"):
        assert f"ferrousforge/widgets/{widget}.js" in names
        assert f"ferrousforge/widgets/{widget}.css" in names
    for kernel in ("matmul", "attention", "layernorm", "gelu", "embed", "meanpool"):
        assert f"ferrousforge/wgsl/{kernel}.wgsl" in names
    config = "etc/jupyter/jupyter_server_config.d/ferrousforge.json"
    assert any(n.endswith(f".data/data/{config}") for n in names)
    for module in ("jupyter_ext", "notebook/jupyter_ext", "notebook/magics", "notebook/answer"):
        assert f"ferrousforge/{module}.py" in names  # jupyter_ext: the old configs' name
    for package in ("api", "backends", "store", "cli", "notebook", "wgsl"):
        assert any(n.startswith(f"ferrousforge/{package}/") for n in names)
    assert not any(n.startswith("ferrousforge/widgets/widgets/") for n in names)  # no doubles
