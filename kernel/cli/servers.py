"""``forge serve`` and ``forge web``: the HTTP API, and the browser demo on it.

Both first convert what the browser page needs to embed each stored model on WASM and
WebGPU (``webapp.prepare``), with progress bars, so a page never waits on a conversion.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..config import load_settings
from ..errors import ConfigError
from .commands import ensure_pulled, local_engine
from .render import ProgressBars, err, out


def serve(args: argparse.Namespace) -> int:
    from ..api.logs import configure
    from ..api.server import serve as run_server

    settings = load_settings(
        host=args.host,
        port=args.port,
        preload=args.preload,
        log_format=args.log_format,
        pull_paths=args.pull_paths,
        num_parallel=args.parallel,
        **_server_flags(args),
    )
    if args.hub:
        settings = settings.model_copy(
            update={"hub": settings.hub.model_copy(update={"enabled": True})}
        )
    configure(args.log_level or "INFO", settings.log_format)
    for name in settings.preload:  # catalog models are pulled first, with progress
        with local_engine() as engine:
            ensure_pulled(engine, name)
    prepare_browser()
    run_server(settings)
    return 0


def web(args: argparse.Namespace) -> int:
    from ..api import webapp
    from ..api.logs import configure
    from ..api.server import serve as run_server

    if args.export:
        webapp.require_built()  # before any conversion for it
        prepare_browser(args.models or [])
        bars = ProgressBars()
        try:
            with local_engine() as engine:
                models = webapp.export(engine.store, args.export, args.models or [], bars)
        finally:
            bars.close()
        names = ", ".join(m.name for m in models) or "no models"
        out(f"exported the web app with {names} to {args.export}")
        out("serve it with the COOP/COEP headers listed in its _headers file (see the README)")
        return 0
    if not webapp.built():
        err("the browser runtimes are not built yet: run `npm ci && npm run build` (./dev.sh does)")
    settings = load_settings(host=args.host, port=args.port, **_server_flags(args))
    configure(args.log_level or "INFO", settings.log_format)
    prepare_browser()
    out(f"the browser demo: http://{settings.host}:{settings.port}/web/")
    run_server(settings)
    return 0


def prepare_browser(names: Sequence[str] = ()) -> None:
    """Make the forms the browser page needs (minilm:l6-onnx for WASM), with progress bars;
    a model that cannot get them is named on stderr, and the server starts anyway."""
    from ..api import webapp

    bars = ProgressBars()
    try:
        with local_engine() as engine:
            done = webapp.prepare(engine.store, bars, names)
    finally:
        bars.close()
    for name, e in done.failed.items():
        err(f"warning: the browser cannot embed {name} on every target: {e}")


def _server_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Keys and site settings from the flags (``--api-key @FILE`` names a keys file)."""
    keys = [k for k in args.api_keys or [] if not k.startswith("@")]
    files = [k[1:] for k in args.api_keys or [] if k.startswith("@")]
    if args.api_keys_file:
        files.append(args.api_keys_file)
    if len(files) > 1:
        raise ConfigError("name one keys file (--api-key @FILE or --api-keys-file), not several")
    return {
        "api_keys": keys or None,
        "api_keys_file": files[0] if files else None,
        "cors_origins": args.cors_origins,
        "allowed_hosts": args.allowed_hosts,
    }
