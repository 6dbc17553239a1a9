"""Devices and the seed's selection rule (§2.4): format → backend, requirements → device."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import psutil

from .backends import Backends, extra_for
from .errors import DeviceUnavailable, MissingExtra, UnsupportedFormat
from .mold import Backend, Device, LoadOptions
from .store.manifest import Manifest

GPU_KINDS = ("cuda", "metal", "vulkan", "dx12", "gl")


def cpu_device(backend: str) -> Device:
    """The host CPU with its RAM; always present."""
    mem = psutil.virtual_memory()
    name = _cpu_model() or platform.processor() or platform.machine() or "cpu"
    cores = psutil.cpu_count(logical=True) or 1
    return Device("cpu", f"{name} ({cores} threads)", mem.total, mem.available, (backend,))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return ""


def normalize(device_id: str) -> str:
    """``cuda`` means ``cuda:0``; ids are lower-case."""
    d = device_id.strip().lower()
    return f"{d}:0" if d in GPU_KINDS else d


def choose(manifest: Manifest, backends: Backends, opts: LoadOptions) -> tuple[Backend, Device]:
    """Pick the backend and device for a model; explicit choices in ``opts`` win.

    Without them: the first GPU with room for the model (its estimated memory, or the
    model's ``min_vram`` if larger), else the CPU. Never falls back silently: a requested
    device that is not there is an error that lists what is there.
    """
    backend = backends.get(opts.backend) if opts.backend else backends.for_format(manifest.format)
    if manifest.format not in backend.formats:
        raise UnsupportedFormat(
            f"backend {backend.name} does not read {manifest.format} models; "
            f"it reads: {', '.join(sorted(backend.formats))}"
        )
    if not backend.available():
        raise MissingExtra(f"the {backend.name} backend", extra_for(backend.name))
    devices = backend.devices()
    if opts.device:
        wanted = normalize(opts.device)
        for d in devices:
            if d.id == wanted:
                return backend, d
        raise DeviceUnavailable(
            f"device {wanted!r} is not available to {backend.name}; "
            f"available: {', '.join(d.id for d in devices)}"
        )
    gpus = [d for d in devices if d.kind in GPU_KINDS]
    if manifest.metadata.requirements.gpu_required and not gpus:
        raise DeviceUnavailable(
            f"{manifest.name} requires a GPU and {backend.name} sees none; "
            f"available: {', '.join(d.id for d in devices)}"
        )
    req = manifest.metadata.requirements
    need = max(backend.estimate_memory(manifest, opts), req.min_vram or 0)
    for d in gpus:  # a GPU with room for the model beats the CPU
        if req.gpu_required or d.memory_free is None or d.memory_free >= need:
            return backend, d
    cpus = [d for d in devices if d.id == "cpu"]
    if not cpus:
        raise DeviceUnavailable(f"{backend.name} reports no usable device")
    return backend, cpus[0]
