"""The store and device commands: ``pull``, ``check``, ``list``, ``show``, ``rm``, ``cp``,
``ps`` and ``devices``. Each goes through the engine, as the HTTP API does."""

from __future__ import annotations

import argparse
import json
import time

from ..backends import extra_for
from ..config import load_settings
from ..errors import MissingExtra
from ..humanize import ago, clip, kv_cells, size, slots, table, until
from ..runstate import read_all
from .commands import local_engine
from .render import ProgressBars, err, out


def pull(args: argparse.Namespace) -> int:
    bars = ProgressBars()
    with local_engine() as engine:
        try:
            m = engine.pull(
                args.spec, name=args.name, sha256=args.sha256, progress=bars, force=args.force
            )
        finally:
            bars.close()
    out(f"pulled {m.name} ({m.format}, {size(m.size)}, sha256 {m.sha256[:12]})")
    return 0


def check(args: argparse.Namespace) -> int:
    with local_engine() as engine:
        for path in engine.sweep():
            out(f"removed {path} (left by a crash)")
        bars = ProgressBars()
        try:
            problems = engine.verify(bars)
        finally:
            bars.close()
        count = len(engine.list())
    for name, problem in problems.items():
        err(f"{name}: {problem}; pull it again")
    out(f"checked {count} model{'s' * (count != 1)}: {count - len(problems)} ok")
    return 1 if problems else 0


def list_models(args: argparse.Namespace) -> int:
    with local_engine() as engine:
        found = engine.list()
    rows = [
        (m.name, m.sha256[:12], size(m.size), m.format, clip(m.source, 48), ago(m.created_at))
        for m in found
    ]
    out(table(("NAME", "ID", "SIZE", "FORMAT", "SOURCE", "MODIFIED"), rows))
    return 0


def show(args: argparse.Namespace) -> int:
    with local_engine() as engine:
        m = engine.show(args.model)
    if args.json:
        out(m.model_dump_json(indent=2))
        return 0
    md = m.metadata
    fields = [
        ("name", m.name),
        ("format", m.format),
        ("architecture", md.architecture),
        ("parameters", f"{md.parameters:,}" if md.parameters else "-"),
        ("quantization", md.quantization or "-"),
        ("context length", str(md.context_size or "-")),
        ("chat template", "yes" if md.chat_template else "no"),
        ("type", md.model_type),
        ("size", size(m.size)),
        ("sha256", m.sha256),
        ("source", m.source),
        ("path", m.path),
        ("managed", "yes" if m.managed else "no (registered in place)"),
    ]
    if m.options:
        fields.append(("options", json.dumps(m.options)))
    if md.description:
        fields.append(("description", md.description))
    width = max(len(k) for k, _ in fields)
    out("\n".join(f"  {k.ljust(width)}  {v}" for k, v in fields))
    return 0


def rm(args: argparse.Namespace) -> int:
    with local_engine() as engine:
        for name in args.models:
            engine.rm(name)  # unloaded first, in this engine; others keep the blob until theirs end
            out(f"deleted {name}")
    return 0


def cp(args: argparse.Namespace) -> int:
    with local_engine() as engine:
        m = engine.cp(args.source, args.destination)
    out(f"copied {args.source} to {m.name}")
    return 0


def ps(args: argparse.Namespace) -> int:
    """What every engine on this home has loaded (each publishes it in ``run/``)."""
    rows = []
    for r in read_all(load_settings().home):
        left = None if r.get("expires_at") is None else r["expires_at"] - time.time()
        rows.append(
            (
                r["name"],
                r["backend"],
                r["device"],
                size(r["memory"]),
                str(r["context_length"]),
                str(r["pid"]),
                slots(r.get("in_use", 0), r.get("slots", 1)),
                kv_cells(r.get("kv_used", 0), r.get("kv_cached", 0), r.get("kv_total", 0)),
                until(left, r.get("in_use", 0)),
            )
        )
    headers = (
        "NAME",
        "BACKEND",
        "DEVICE",
        "MEMORY",
        "CONTEXT",
        "PID",
        "SLOTS",
        "KV CELLS",
        "UNTIL",
    )
    out(table(headers, rows))
    return 0


def devices(args: argparse.Namespace) -> int:
    with local_engine() as engine:
        found = engine.devices()
    if args.json:
        out(
            json.dumps(
                [
                    {
                        "id": d.id,
                        "name": d.name,
                        "memory_total": d.memory_total,
                        "memory_free": d.memory_free,
                        "backends": list(d.backends),
                    }
                    for d in found
                ],
                indent=2,
            )
        )
        return 0
    # the backends first, the (long) device name last: a narrow terminal wraps only that
    rows = [
        (d.id, ", ".join(d.backends), size(d.memory_total), size(d.memory_free), d.name)
        for d in found
    ]
    out(table(("DEVICE", "BACKENDS", "MEMORY", "FREE", "NAME"), rows))
    for backend in engine.backends:  # what is not here, and why
        if not backend.available():
            why = MissingExtra(backend.name, extra_for(backend.name))
            out(f"{backend.name}: unavailable: {why}")
            continue
        for name, reason in getattr(backend, "accelerators", dict)().items():
            if reason is not None:
                out(f"{name} ({backend.name}): unavailable: {reason}")
    return 0
