"""``%load_ext ferrousforge``: the ``%forge`` line magic and the ``%%forge`` cell magic.

Answers stream into the cell's output as tokens arrive and are re-rendered in the chosen
format at the end. The cell runs until the answer ends (an interrupt stops the generation);
``--background`` streams from a thread instead and frees the kernel at once. The engine is
``notebook.shared()`` (in-process, or remote). Errors are one line, never a traceback.
``%forge help`` lists the subcommands.
"""

from __future__ import annotations

import argparse
import json
import shlex
import string
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import JSON, Code, Markdown, display

from .. import notebook
from ..errors import ForgeError, MissingExtra, ModelNotFound, UsageError
from ..humanize import kv_cells, slots, table, until
from ..humanize import size as _size
from ..interface import EngineClient
from ..progress import Progress
from . import infer
from .answer import Answer, stream_answer

HELP = """\
%forge load MODEL [--backend B] [--device D] [--keep-alive T] [--parallel N]
                             pull if needed, then load
%forge unload MODEL | list | ps | devices | show MODEL | pull MODEL
%forge use MODEL             the default model of %%forge
%forge browser MODEL [--target auto|wasm|webgpu] [--runtime R] [--web-url URL] [-o VAR]
                             a BrowserMold widget: MODEL runs in this browser tab
%forge clear                 forget the --history conversation
%forge infer MODEL NAME=EXPR... [--outputs A,B] [-o VAR] [--keep-alive T]
                             a tensor model's outputs (a dict of arrays, shown as a
                             table) for inputs from your names: infer cls images=x
%%forge infer MODEL [...]    the same; the cell is a dict of inputs: {"images": x}
%forge MODEL PROMPT...       a one-line answer
%%forge [MODEL] [--system S] [--format markdown|text|code|json] [--temperature T]
        [--max-tokens N] [-o VAR] [--history] [--background]
                             the cell is the prompt, {var} taken from your names;
                             --background returns at once (-o VAR: a Future)"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see %forge help)")


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%forge", add_help=False)
    p.add_argument("model", nargs="?")
    p.add_argument("--system")
    p.add_argument("--format", choices=["markdown", "text", "code", "json"], default="markdown")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("-o", dest="output")
    p.add_argument("--history", action="store_true")
    p.add_argument("--background", action="store_true")
    return p


class Names(Mapping[str, Any]):
    """The user's namespace for ``{var}``; an unknown name is a one-line error."""

    def __init__(self, ns: Mapping[str, Any]) -> None:
        self.ns = ns

    def __getitem__(self, key: str) -> Any:
        if key not in self.ns:
            raise UsageError(f"unknown variable {key!r} in the prompt (write {{{{ for a brace)")
        return self.ns[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ns)

    def __len__(self) -> int:
        return len(self.ns)


@magics_class
class ForgeMagics(Magics):
    def __init__(self, shell: Any, engine: Callable[[], EngineClient] = notebook.shared) -> None:
        super().__init__(shell)
        self.engine = engine
        self.default: str | None = None
        self.history: list[dict[str, str]] = []

    @line_cell_magic
    def forge(self, line: str, cell: str | None = None) -> Any:
        try:
            return self._cell(line, cell) if cell is not None else self._line(line)
        except ForgeError as e:
            sys.stderr.write(f"forge: {e}\n")
        except KeyboardInterrupt:
            sys.stderr.write("forge: stopped\n")
        return None

    def _names(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    # -- %forge ---------------------------------------------------------------------

    def _line(self, line: str) -> Any:
        if line.split(None, 1)[:1] == ["infer"]:  # its EXPRs are Python, not shell words
            return self._infer(infer.split(line)[1:], None)
        args = shlex.split(line)
        if not args or args[0] in ("help", "-h", "--help"):
            sys.stdout.write(HELP + "\n")
            return None
        command, rest = args[0], args[1:]
        if command == "browser":  # the browser tab runs it: no engine needed here
            return self._browser(rest)
        engine = self.engine()
        if command == "load":
            return self._load(rest)
        if command in ("unload", "show", "pull", "use") and len(rest) != 1:
            raise UsageError(f"%forge {command} takes one MODEL")
        if command == "unload":
            found = engine.unload(rest[0])
            sys.stdout.write(f"{rest[0]}: {'unloaded' if found else 'was not loaded'}\n")
        elif command == "list":
            stored = [(m.name, m.format, _size(m.size), m.parent or "") for m in engine.list()]
            _table(("NAME", "FORMAT", "SIZE", "FROM"), stored)
        elif command == "ps":
            loaded = [
                (
                    m.name,
                    m.backend,
                    m.device,
                    _size(m.memory),
                    slots(m.in_use, m.slots),
                    kv_cells(m.kv_used, m.kv_cached, m.kv_total),
                    until(m.expires_in, m.in_use),
                )
                for m in engine.ps()
            ]
            _table(("NAME", "BACKEND", "DEVICE", "MEMORY", "SLOTS", "KV CELLS", "UNTIL"), loaded)
        elif command == "devices":  # the device's (long) name last
            usable = [(d.id, ", ".join(d.backends), d.name) for d in engine.devices()]
            _table(("DEVICE", "BACKENDS", "NAME"), usable)
        elif command == "show":
            return engine.show(rest[0])
        elif command == "pull":
            m = self._pull(rest[0])
            sys.stdout.write(f"{m.name}: {m.format}, {_size(m.size)}\n")
        elif command == "use":
            self.default = engine.show(rest[0]).name
            sys.stdout.write(f"%%forge now asks {self.default}\n")
        elif command == "clear":
            self.history = []
        else:  # %forge MODEL PROMPT...
            if not rest:
                raise UsageError(f"unknown subcommand {command!r} (see %forge help)")
            answer = self._ask(command, [{"role": "user", "content": " ".join(rest)}], {}, None)
            return answer.text.strip()
        return None

    def _pull(self, model: str) -> Any:
        bar = _Bar(f"pulling {model}")
        try:
            return self.engine().pull(model, progress=bar)
        finally:
            bar.done()

    def _load(self, rest: list[str]) -> None:
        p = _Parser(prog="%forge load", add_help=False)
        p.add_argument("model")
        p.add_argument("--backend")
        p.add_argument("--device")
        p.add_argument("--keep-alive")
        p.add_argument("--parallel", type=int)
        a = p.parse_args(rest)
        engine = self.engine()
        try:
            engine.show(a.model)  # the store's own name resolution, as load will use it
        except ModelNotFound:
            self._pull(a.model)
        start = time.perf_counter()
        bar = _Bar(f"loading {a.model}")  # a conversion for --backend shows its progress
        try:
            row = engine.load(
                a.model,
                backend=a.backend,
                device=a.device,
                keep_alive=a.keep_alive,
                progress=bar,
                parallel=a.parallel,
            )
        except BaseException:
            bar.done()
            raise
        line = (
            f"{row.name}: {row.backend} on {row.device}, {_size(row.memory)}, "
            f"loaded in {time.perf_counter() - start:.2f} s"
        )
        if bar.handle is not None:
            bar.handle.update(Markdown(line))
        else:
            sys.stdout.write(line + "\n")

    def _browser(self, rest: list[str]) -> Any:
        """A ``BrowserMold`` widget: displayed and kept in ``-o VAR``, else returned (so it
        shows as the cell's result, or ``w = %forge browser MODEL`` keeps it)."""
        p = _Parser(prog="%forge browser", add_help=False)
        p.add_argument("model")
        p.add_argument("--target", choices=["auto", "wasm", "webgpu"], default="auto")
        p.add_argument("--runtime", choices=["ort", "wllama", "pyodide"])
        p.add_argument("--web-url", default="")
        p.add_argument("-o", dest="output")
        a = p.parse_args(rest)
        try:
            from ferrousforge.widgets import BrowserMold
        except ImportError as e:
            raise MissingExtra(e.name or "anywidget", "jupyter") from None
        widget = BrowserMold(a.model, target=a.target, runtime=a.runtime, web_url=a.web_url)
        if not a.output:
            return widget
        self._names()[a.output] = widget
        display(widget)
        return None

    def _infer(self, rest: list[str], cell: str | None) -> Any:
        """``infer.Tensors``, shown and kept in ``-o VAR``, else returned (``r = %forge
        infer ...`` keeps it; as the cell's result it shows itself)."""
        p = _Parser(prog="%forge infer", add_help=False)
        p.add_argument("model")
        p.add_argument("inputs", nargs="*", metavar="NAME=EXPR")
        p.add_argument("--outputs", action="append", default=[])
        p.add_argument("--keep-alive")
        p.add_argument("-o", dest="output")
        a = p.parse_intermixed_args(rest)
        inputs = infer.inputs_from(self._names(), a.inputs, cell)
        wanted = [n.strip() for v in a.outputs for n in v.split(",") if n.strip()] or None
        start = time.perf_counter()
        result = self.engine().infer(a.model, inputs, outputs=wanted, keep_alive=a.keep_alive)
        ms = (time.perf_counter() - start) * 1e3
        tensors = infer.Tensors(result.tensors, model=a.model, ms=ms)
        if not a.output:
            return tensors
        self._names()[a.output] = tensors
        display(tensors)
        return None

    # -- %%forge --------------------------------------------------------------------

    def _cell(self, line: str, cell: str) -> Any:
        if line.split(None, 1)[:1] == ["infer"]:  # %%forge infer MODEL: the cell is the inputs
            return self._infer(infer.split(line)[1:], cell)
        a = _cell_parser().parse_args(shlex.split(line))
        model = a.model or self.default
        if not model:
            raise UsageError("no model: %%forge MODEL, or %forge use MODEL first")
        try:
            prompt = string.Formatter().vformat(cell.strip(), (), Names(self._names()))
        except (ValueError, IndexError, AttributeError) as e:
            raise UsageError(f"bad {{...}} in the prompt: {e}") from None
        messages = [*self.history] if a.history else []
        if a.system and not (messages and messages[0]["role"] == "system"):
            messages.insert(0, {"role": "system", "content": a.system})
        messages.append({"role": "user", "content": prompt})
        options = {"temperature": a.temperature, "num_predict": a.max_tokens}
        chosen = {k: v for k, v in options.items() if v is not None}
        if a.background:
            self._in_background(model, messages, chosen, a)
            return None
        self._keep(a, messages, self._ask(model, messages, chosen, a.format))
        return None

    def _keep(self, a: argparse.Namespace, messages: list[dict[str, str]], answer: Any) -> None:
        if a.history:
            self.history = [*messages, {"role": "assistant", "content": answer.text}]
        if a.output:
            self._names()[a.output] = answer

    def _in_background(
        self, model: str, messages: list[dict[str, str]], options: dict[str, Any], a: Any
    ) -> None:
        """Stream on a thread and return at once: ``-o VAR`` holds a Future of the Answer."""
        handle = display(Markdown(""), display_id=True)  # made here: the thread updates it
        future: Future[Answer] = Future()
        if a.output:
            self._names()[a.output] = future

        def work() -> None:
            try:
                answer = self._ask(model, messages, options, a.format, handle)
            except BaseException as e:  # shown where the answer would have been
                if handle is not None:
                    handle.update(Markdown(f"forge: {e}"))
                future.set_exception(e)
                return
            if a.history:
                self.history = [*messages, {"role": "assistant", "content": answer.text}]
            future.set_result(answer)

        threading.Thread(target=work, name="forge-cell", daemon=True).start()

    def _ask(
        self,
        model: str,
        messages: list[dict[str, str]],
        options: dict[str, Any],
        fmt: str | None,
        handle: Any = None,
    ) -> Answer:
        if handle is None and fmt:
            handle = display(Markdown(""), display_id=True)
        shown = [0.0]

        def on_token(answer: Answer, text: str) -> None:
            if handle is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            elif time.perf_counter() - shown[0] > 0.1:  # ≤ 10 redraws a second
                handle.update(Markdown(_plain(answer.text)))
                shown[0] = time.perf_counter()

        answer = stream_answer(self.engine(), model, messages, options=options, on_token=on_token)
        if answer.error:
            raise ForgeError(answer.error)
        if handle is not None:
            handle.update(_rendered(answer.text, fmt or "text"))
        else:
            sys.stdout.write("\n")
        return answer


def _rendered(text: str, fmt: str) -> Any:
    if fmt == "markdown":
        return Markdown(text)
    if fmt == "code":
        body = text.strip()
        if body.startswith("```"):  # the model fenced it already: keep only the code
            body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
        return Code(body)
    if fmt == "json":
        try:
            return JSON(json.loads(text))
        except ValueError:
            sys.stderr.write("forge: the answer is not valid JSON; shown as text\n")
    return Markdown(_plain(text))


def _plain(text: str) -> str:
    """Text shown as is while it streams (half-written markdown would flicker)."""
    return "```text\n" + text.replace("```", "``\u200b`") + "\n```"


class _Bar:
    """A one-line progress bar in the cell's output, like ``ollama pull``'s."""

    def __init__(self, label: str) -> None:
        self.handle = display(Markdown(f"{label}…"), display_id=True)
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        if time.perf_counter() - self.last < 0.1 and p.status != "success":
            return
        self.last = time.perf_counter()
        text = p.status
        if p.total:
            done = p.completed or 0
            filled = int(30 * done / p.total)
            text += f"  `{'█' * filled}{'░' * (30 - filled)}` {100 * done / p.total:3.0f}%"
            text += f" ({_size(done)} / {_size(p.total)})" if p.unit == "B" else ""
        if self.handle is not None:
            self.handle.update(Markdown(text))

    def done(self) -> None:
        if self.handle is not None:
            self.handle.update(Markdown(""))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    sys.stdout.write(table(head, rows) + "\n")


def load_ipython_extension(shell: Any) -> None:
    shell.register_magics(ForgeMagics(shell))
