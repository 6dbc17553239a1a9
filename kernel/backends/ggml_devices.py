"""The devices llama.cpp's ggml backends report (CPU, CUDA, Metal, Vulkan ...), via ctypes."""

from __future__ import annotations

import ctypes
import logging

from ..devices import cpu_device
from ..mold import Device

log = logging.getLogger(__name__)

# ggml backend registry name -> our device kind
_KINDS = {"cuda": "cuda", "metal": "metal", "vulkan": "vulkan", "cpu": "cpu", "rocm": "cuda"}


def ggml_devices(backend: str) -> list[Device]:
    """Every ggml device of the installed llama.cpp, numbered per kind."""
    from llama_cpp._ggml import libggml as lib

    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]

    devices: list[Device] = []
    counts: dict[str, int] = {}
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        reg = (lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)) or b"").decode()
        kind = _KINDS.get(reg.lower())
        if kind is None:
            log.debug("skipping ggml device of unknown backend %s", reg)
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = (lib.ggml_backend_dev_description(dev) or b"").decode() or reg
        if kind == "cpu":  # ggml reports all RAM as free; psutil knows better
            host = cpu_device(backend)
            devices.append(
                Device("cpu", host.name, host.memory_total, host.memory_free, (backend,))
            )
            continue
        dev_id = f"{kind}:{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        devices.append(Device(dev_id, name, total.value or None, free.value, (backend,)))
    return devices
