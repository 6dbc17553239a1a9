"""The ``forge`` subcommands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ..config import load_settings
from ..errors import ConfigError, ModelNotFound
from ..mold import LoadOptions
from ..runstate import read_all
from ..schema import Chunk, Message
from ..store.catalog import lookup
from ..sync_engine import Engine
from .render import ProgressBars, ago, clip, err, out, size, table, until

Command = Callable[[argparse.Namespace], int]


def _engine() -> Engine:
    return Engine(load_settings())


def _load(args: argparse.Namespace) -> LoadOptions | None:
    if not any((args.backend, args.device, args.gpu_layers is not None, args.num_ctx)):
        return None
    s = load_settings()
    return LoadOptions(
        backend=args.backend or s.backend,
        device=args.device or s.device,
        gpu_layers=args.gpu_layers,
        num_ctx=args.num_ctx or s.num_ctx,
        threads=s.threads,
    )


def _ensure_pulled(engine: Engine, model: str) -> str:
    """The stored name of ``model``, pulling it first when it is a catalog name."""
    try:
        return engine.show(model).name
    except ModelNotFound:
        if lookup(model) is None:
            raise
    bars = ProgressBars()
    try:
        return engine.pull(model, progress=bars).name
    finally:
        bars.close()


def run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        k: v
        for k in ("temperature", "top_p", "top_k", "seed", "max_tokens", "stop")
        if (v := getattr(args, k)) is not None
    }
    prompt = " ".join(args.prompt)
    if prompt == "-" or (not prompt and not sys.stdin.isatty()):
        prompt = sys.stdin.read()
    with _engine() as engine:
        model = _ensure_pulled(engine, args.model)
        manifest = engine.show(model)
        raw = args.raw or not manifest.metadata.chat_template
        kw: dict[str, Any] = {
            "options": options,
            "keep_alive": args.keep_alive,
            "load": _load(args),
        }
        history: list[Message] = (
            [Message(role="system", content=args.system)] if args.system and not raw else []
        )

        def answer(text: str) -> str:
            if raw:
                stream = engine.generate(
                    model, text, stream=True, raw=True, system=args.system, **kw
                )
            else:
                history.append(Message(role="user", content=text))
                stream = engine.chat(model, history, stream=True, **kw)
            reply = _print_stream(stream, args.verbose)
            if not raw:
                history.append(Message(role="assistant", content=reply))
            return reply

        if prompt:
            answer(prompt)
            return 0
        return _repl(answer, history)


def _print_stream(stream: Iterator[Chunk], verbose: bool) -> str:
    parts: list[str] = []
    last = Chunk()
    try:
        for last in stream:
            parts.append(last.text)
            out(last.text, end="")
    except KeyboardInterrupt:  # stop this answer, keep the session
        if hasattr(stream, "close"):
            stream.close()
        last = Chunk(done_reason="cancel")
    out()
    if verbose and last.stats is not None:
        s = last.stats
        err(
            f"load {s.load_duration / 1e6:.0f} ms · prompt {s.prompt_eval_count} tokens in "
            f"{s.prompt_eval_duration / 1e6:.0f} ms · {s.eval_count} tokens at "
            f"{s.tokens_per_second:.1f} tok/s · {last.done_reason}"
        )
    return "".join(parts)


HELP = "\n".join(
    [
        "/clear  forget the conversation",
        "/bye    exit (Ctrl-D too)",
        '"""     start and end a message of several lines',
        "Ctrl-C  stop the answer being written",
    ]
)


def _repl(answer: Callable[[str], str], history: list[Message]) -> int:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    err('Type a message; """ starts several lines, /help lists commands, /bye exits.')
    while True:
        try:
            text = _read_message()
        except EOFError:
            out()
            return 0
        except KeyboardInterrupt:
            out()
            continue
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            return 0
        if text == "/clear":
            del history[sum(1 for m in history if m.role == "system") :]
            err("(conversation cleared)")
        elif text in ("/help", "/?"):
            err(HELP)
        elif text.startswith("/"):
            err(f"unknown command {text.split()[0]}; /help lists them")
        else:
            answer(text)


def _read_message() -> str:
    """One message: a line, or the lines between two triple quotes."""
    line = input(">>> ").strip()
    if not line.startswith('"""'):
        return line
    lines = [line[3:]]
    while not lines[-1].endswith('"""'):
        lines.append(input("... "))
    lines[-1] = lines[-1][:-3]
    return "\n".join(lines).strip()


def serve(args: argparse.Namespace) -> int:
    from ..api.logs import configure
    from ..api.server import serve as run_server

    settings = load_settings(
        host=args.host,
        port=args.port,
        preload=args.preload,
        log_format=args.log_format,
        pull_paths=args.pull_paths,
        **_server_flags(args),
    )
    configure(args.log_level or "INFO", settings.log_format)
    for name in settings.preload:  # catalog models are pulled first, with progress
        with _engine() as engine:
            _ensure_pulled(engine, name)
    run_server(settings)
    return 0


def web(args: argparse.Namespace) -> int:
    from .. import webapp
    from ..api.logs import configure
    from ..api.server import serve as run_server
    from ..store.store import Store

    if args.export:
        bars = ProgressBars()
        try:
            store = Store(load_settings().home)
            models = webapp.export(store, args.export, args.models or [], bars)
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
    out(f"the browser demo: http://{settings.host}:{settings.port}/web/")
    run_server(settings)
    return 0


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


def convert(args: argparse.Namespace) -> int:
    from ..convert import convert as run_convert
    from ..store.store import Store

    bars = ProgressBars()
    try:
        extra = {"shapes": args.shapes} if args.shapes else {}
        m = run_convert(
            Store(load_settings().home),
            args.model,
            args.to,
            progress=bars,
            target=args.target,
            tune=args.tune,
            **extra,
        )
    finally:
        bars.close()
    out(f"converted {m.parent} to {m.name} ({m.format}, {size(m.size)})")
    return 0


def parity(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..parity import run as run_parity

    def split(v: str | None) -> list[str] | None:
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    with _engine() as engine:
        _ensure_pulled(engine, args.model)
        rows = run_parity(
            engine, args.model, split(args.backends), split(args.devices), args.tolerance
        )
    if args.json:
        out(json.dumps([asdict(r) for r in rows], indent=2))
    else:

        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        out(
            table(
                (
                    "BACKEND",
                    "DEVICE",
                    "MODEL",
                    "MAX ABS DIFF",
                    "MIN COSINE",
                    "LOAD MS",
                    "MS/BATCH",
                    "RESULT",
                ),
                [
                    (
                        r.backend,
                        r.device,
                        r.model,
                        num(r.max_abs_diff, ".2e"),
                        num(r.min_cosine, ".6f"),
                        num(r.load_ms, ".0f"),
                        num(r.ms_per_batch, ".1f"),
                        "ok" if r.ok else f"FAIL{': ' + r.error if r.error else ''}",
                    )
                    for r in rows
                ],
            )
        )
    return 0 if rows and all(r.ok for r in rows) else 1


def hash_key(args: argparse.Namespace) -> int:
    from ..api.auth import KeyStore

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    out(KeyStore.hash(key))
    return 0


def pull(args: argparse.Namespace) -> int:
    bars = ProgressBars()
    with _engine() as engine:
        try:
            m = engine.pull(
                args.spec, name=args.name, sha256=args.sha256, progress=bars, force=args.force
            )
        finally:
            bars.close()
    out(f"pulled {m.name} ({m.format}, {size(m.size)}, sha256 {m.sha256[:12]})")
    return 0


def check(args: argparse.Namespace) -> int:
    from ..store.store import Store

    s = load_settings()
    store = Store(s.home, partial_max_age=s.partial_max_age)
    for path in store.sweep():
        out(f"removed {path} (left by a crash)")
    bars = ProgressBars()
    try:
        problems = store.check(bars)
    finally:
        bars.close()
    for name, problem in problems.items():
        err(f"{name}: {problem}; pull it again")
    count = len(store.list())
    out(f"checked {count} model{'s' * (count != 1)}: {count - len(problems)} ok")
    return 1 if problems else 0


def list_models(args: argparse.Namespace) -> int:
    from ..store.store import Store

    s = load_settings()
    rows = [
        (m.name, m.sha256[:12], size(m.size), m.format, clip(m.source, 48), ago(m.created_at))
        for m in Store(s.home).list()
    ]
    out(table(("NAME", "ID", "SIZE", "FORMAT", "SOURCE", "MODIFIED"), rows))
    return 0


def show(args: argparse.Namespace) -> int:
    from ..store.store import Store

    m = Store(load_settings().home).get(args.model)
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
    from ..store.store import Store

    store = Store(load_settings().home)
    for name in args.models:
        store.rm(name)
        out(f"deleted {name}")
    return 0


def cp(args: argparse.Namespace) -> int:
    from ..store.store import Store

    m = Store(load_settings().home).cp(args.source, args.destination)
    out(f"copied {args.source} to {m.name}")
    return 0


def ps(args: argparse.Namespace) -> int:
    import time

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
                until(left, r.get("in_use", 0)),
            )
        )
    out(table(("NAME", "BACKEND", "DEVICE", "MEMORY", "CONTEXT", "PID", "UNTIL"), rows))
    return 0


def devices(args: argparse.Namespace) -> int:
    from ..backends import Backends

    found = Backends.discover().devices()
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
    rows = [
        (d.id, d.name, size(d.memory_total), size(d.memory_free), ", ".join(d.backends))
        for d in found
    ]
    out(table(("DEVICE", "NAME", "MEMORY", "FREE", "BACKENDS"), rows))
    return 0


def embed(args: argparse.Namespace) -> int:
    with _engine() as engine:
        model = _ensure_pulled(engine, args.model)
        result = engine.embed(model, args.texts, keep_alive=args.keep_alive, load=_load(args))
    if args.json:
        out(json.dumps({"model": model, "embeddings": result.embeddings}))
        return 0
    for text, vec in zip(args.texts, result.embeddings, strict=True):
        head = ", ".join(f"{x:.4f}" for x in vec[:4])
        out(f"{len(vec)}-d [{head}, ...]  {text}")
    return 0
