"""The wgpu backend's WGSL kernels compile in Chromium's WebGPU (Tint, SwiftShader adapter):
the browser build is to run these very files, and naga accepting them does not prove it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferrousforge.backends import wgsl

from .conftest import FileServer

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
PAGE = b"""<!doctype html><html><body><script>
window.check = async (sources) => {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return { adapter: null };
  const device = await adapter.requestDevice();
  const kernels = {};
  for (const [name, code] of Object.entries(sources)) {
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code });
    const info = await module.getCompilationInfo();
    let pipeline = "ok";
    try {
      const compute = { module, entryPoint: "main" };
      await device.createComputePipelineAsync({ layout: "auto", compute });
    } catch (e) { pipeline = String(e.message || e); }
    const scope = await device.popErrorScope();
    kernels[name] = {
      errors: info.messages.filter((m) => m.type === "error")
        .map((m) => `${m.lineNum}: ${m.message}`),
      pipeline, validation: scope ? scope.message : null,
    };
  }
  return { adapter: adapter.info?.description || adapter.info?.vendor || "?", kernels };
};
</script></body></html>"""


def test_every_kernel_compiles_in_chromium_webgpu(http_server: FileServer) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    http_server.files["/check.html"] = PAGE  # from 127.0.0.1: a secure context, as WebGPU wants
    sources = {name: wgsl.source(name) for name in wgsl.names()}
    assert len(sources) == 6
    args = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"]
    args += ["--no-sandbox"] if os.geteuid() == 0 else []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(f"{http_server.base_url}/check.html")
            result = page.evaluate("(sources) => window.check(sources)", sources)
        finally:
            browser.close()
    assert result["adapter"] is not None, "Chromium offered no WebGPU adapter"
    for name, report in result["kernels"].items():
        assert report == {"errors": [], "pipeline": "ok", "validation": None}, (name, report)
