"""The ``forge`` subcommands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ..config import load_settings
from ..errors import ModelNotFound, UsageError
from ..humanize import size, table
from ..interface import EngineClient
from ..schema import Chunk, Message
from ..store.catalog import lookup
from ..sync_engine import Engine
from .render import ProgressBars, err, out

Command = Callable[[argparse.Namespace], int]


def local_engine() -> Engine:
    """The in-process engine on the configured home, with every setting applied."""
    return Engine(load_settings())


def loaded(engine: EngineClient, model: str, args: argparse.Namespace) -> str:
    """Load ``model`` as the flags ask (--backend, --device, --gpu-layers, --num-ctx) and
    return the name it is served under: a backend that cannot read the model's format gets
    its converted form, made now (with progress) when missing."""
    if not any((args.backend, args.device, args.gpu_layers is not None, args.num_ctx)):
        return model
    bars = ProgressBars()
    try:
        row = engine.load(
            model,
            backend=args.backend,
            device=args.device,
            gpu_layers=args.gpu_layers,
            num_ctx=args.num_ctx,
            keep_alive=args.keep_alive,
            progress=bars,
        )
    finally:
        bars.close()
    return row.name


def ensure_pulled(engine: EngineClient, model: str) -> str:
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
    with local_engine() as engine:
        model = loaded(engine, ensure_pulled(engine, args.model), args)
        manifest = engine.show(model)
        raw = args.raw or not manifest.metadata.chat_template
        kw: dict[str, Any] = {
            "options": options,
            "keep_alive": args.keep_alive,
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


def convert(args: argparse.Namespace) -> int:
    bars = ProgressBars()
    extra = {"shapes": args.shapes} if args.shapes else {}
    try:
        with local_engine() as engine:
            m = engine.convert(
                args.model, args.to, progress=bars, target=args.target, tune=args.tune, **extra
            )
    finally:
        bars.close()
    out(f"converted {m.parent} to {m.name} ({m.format}, {size(m.size)})")
    return 0


def parity(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..parity import Row, passed
    from ..parity import run as run_parity

    def split(v: str | None) -> list[str] | None:
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    inputs = read_inputs(args.inputs) if args.inputs else None
    with local_engine() as engine:
        ensure_pulled(engine, args.model)
        rows = run_parity(
            engine,
            args.model,
            split(args.backends),
            split(args.devices),
            args.tolerance,
            inputs=inputs,
        )
    if args.json:
        out(json.dumps([asdict(r) for r in rows], indent=2))
        return 0 if passed(rows) else 1

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    def result(r: Row) -> str:
        if r.skipped:
            return f"skipped: {r.skipped}"
        return "ok" if r.ok else f"FAIL{': ' + r.error if r.error else ''}"

    head = ("BACKEND", "DEVICE", "MODEL", "MAX ABS DIFF", "MIN COSINE", "LOAD MS", "MS/BATCH")
    out(
        table(
            (*head, "RESULT"),
            [
                (
                    r.backend,
                    r.device,
                    r.model,
                    num(r.max_abs_diff, ".2e"),
                    num(r.min_cosine, ".6f"),
                    num(r.load_ms, ".0f"),
                    num(r.ms_per_batch, ".1f"),
                    result(r),
                )
                for r in rows
            ],
        )
    )
    return 0 if passed(rows) else 1


def read_inputs(path: str) -> dict[str, Any]:
    """A tensor model's inputs from an ``.npz`` file (numpy arrays by input name)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as found:
            return {name: found[name] for name in found.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read inputs from {path}: {e}") from None


def hash_key(args: argparse.Namespace) -> int:
    from ..api.auth import KeyStore

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    out(KeyStore.hash(key))
    return 0


def embed(args: argparse.Namespace) -> int:
    with local_engine() as engine:
        model = ensure_pulled(engine, args.model)
        served = loaded(engine, model, args)
        result = engine.embed(served, args.texts, keep_alive=args.keep_alive)
    if args.json:
        out(json.dumps({"model": model, "embeddings": result.embeddings}))
        return 0
    for text, vec in zip(args.texts, result.embeddings, strict=True):
        head = ", ".join(f"{x:.4f}" for x in vec[:4])
        out(f"{len(vec)}-d [{head}, ...]  {text}")
    return 0
