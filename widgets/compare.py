"""``Compare``: one prompt, several models streaming side by side.

Each pane shows its model's answer as it streams, with time to first token, tokens/s,
token count, backend/device and memory. After a run: a similarity score between the
answers (``similarity.py``) and a winner vote, both recorded in ``.results``.

    c = Compare(["smollm2:135m", "gemma3:270m"])
    c                      # the widget: pick models, type a prompt, click Run
    c.run("Why is the sky blue?")   # or from Python: blocks, returns a CompareResult
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import traitlets as t

from ..interface import EngineClient
from ._common import (
    Answer,
    Busy,
    ForgeWidget,
    module,
    one_line,
    resolve_engine,
    start_thread,
    stream_answer,
    style,
)
from .similarity import similarity


@dataclass
class CompareResult:
    """One run: the prompt, an Answer per pane, their similarity and the user's vote."""

    prompt: str
    answers: list[Answer]
    similarity: float | None
    winner: str | None = None  # the model voted for (the Vote button, or ``vote()``)
    run: int = 0


class Compare(ForgeWidget):
    """Run one prompt on several models at once, each streaming into its own pane."""

    _esm = module("compare.js")
    _css = style("compare.css")

    models = t.List(t.Unicode()).tag(sync=True)  # one pane per entry
    choices = t.List(t.Unicode()).tag(sync=True)  # what the pickers offer
    prompt = t.Unicode("").tag(sync=True)
    running = t.Bool(False).tag(sync=True)
    run_id = t.Int(0).tag(sync=True)
    answers = t.List(t.Dict()).tag(sync=True)  # the last finished run, for new views
    similarity = t.Float(None, allow_none=True).tag(sync=True)
    winner = t.Int(-1).tag(sync=True)  # the pane voted for; -1: none yet

    def __init__(
        self,
        models: Sequence[str] = (),
        prompt: str | None = None,
        *,
        engine: EngineClient | None = None,
        options: Mapping[str, Any] | None = None,
        system: str | None = None,
        embed_model: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``options`` go to every request (e.g. ``{"num_predict": 128, "seed": 1}``);
        ``embed_model`` scores similarity by embeddings instead of word counts."""
        self.engine = resolve_engine(engine)
        self.options = dict(options or {})
        self.system = system
        self.embed_model = embed_model
        self.results: CompareResult | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        error, names = "", []
        try:
            names = [m.name for m in self.engine.list()]
        except Exception as e:
            error = one_line(e)
        chosen = list(models) or names[:2]
        super().__init__(
            models=chosen,
            choices=sorted(set(names) | set(chosen)),
            prompt=prompt or "",
            error=error,
            **kwargs,
        )

    # -- the Python API ------------------------------------------------------------------

    def run(
        self, prompt: str | None = None, *, models: Sequence[str] | None = None, wait: bool = True
    ) -> CompareResult | None:
        """Stream ``prompt`` through every pane's model; with ``wait``, return the result."""
        self._start(self.prompt if prompt is None else prompt, list(models or self.models))
        return self.wait() if wait else None

    def wait(self, timeout: float | None = None) -> CompareResult | None:
        """Block until the current run ends; return ``results``."""
        if not self._idle.wait(timeout):
            raise TimeoutError(f"the run did not end within {timeout} s")
        return self.results

    def vote(self, pane: int | str) -> None:
        """Record the winner of the last run, by pane index or model name."""
        result = self.results
        if result is None:
            raise ValueError("nothing to vote on yet: run a prompt first")
        names = [a.model for a in result.answers]
        index = pane if isinstance(pane, int) else names.index(pane)
        result.winner = names[index]
        self.update(winner=index)

    # -- the front end --------------------------------------------------------------------

    def on_message(self, content: dict[str, Any]) -> None:
        """Run and vote clicks; each message carries all it needs (DESIGN.md §6)."""
        kind = content.get("type")
        if kind == "run":
            self._start(str(content.get("prompt", "")), list(content.get("models", [])))
        elif kind == "vote" and self.results and content.get("run") == self.results.run:
            self.vote(int(content["pane"]))

    # -- a run ----------------------------------------------------------------------------

    def _start(self, prompt: str, models: list[str]) -> None:
        """Start a run on background threads and return at once."""
        if not prompt.strip():
            raise ValueError("type a prompt first")
        if not models or not all(models):
            raise ValueError("pick a model for every pane")
        with self._lock:
            if not self._idle.is_set():
                raise Busy("a run is still streaming; wait() for it")
            self._idle.clear()
        try:
            run = self.run_id + 1
            self.update(
                prompt=prompt,
                models=models,
                run_id=run,
                running=True,
                answers=[],
                similarity=None,
                winner=-1,
                error="",
            )
            self.send({"type": "start", "run": run, "prompt": prompt, "models": models})
            messages = [{"role": "user", "content": prompt}]
            if self.system:
                messages.insert(0, {"role": "system", "content": self.system})
            slots: list[Answer | None] = [None] * len(models)
            threads = [
                start_thread(self._pane, run, i, m, messages, slots, name=f"forge-compare-{i}")
                for i, m in enumerate(models)
            ]
            start_thread(self._finish, run, prompt, threads, slots, name="forge-compare")
        except BaseException:
            self.update(running=False)
            self._idle.set()
            raise

    def _pane(
        self,
        run: int,
        pane: int,
        model: str,
        messages: list[dict[str, str]],
        slots: list[Answer | None],
    ) -> None:
        def on_token(answer: Answer, text: str) -> None:
            msg: dict[str, Any] = {
                "type": "token",
                "run": run,
                "pane": pane,
                "text": text,
                "tokens": answer.tokens,
                "tps": answer.tokens_per_s,
            }
            if answer.tokens == 1:  # the first token: when, and where the model runs
                msg |= {k: getattr(answer, k) for k in ("ttft_ms", "backend", "device", "memory")}
            self.send(msg)

        answer = stream_answer(
            self.engine, model, messages, options=self.options, on_token=on_token
        )
        slots[pane] = answer
        self.send({"type": "done", "run": run, "pane": pane, "answer": asdict(answer)})

    def _finish(
        self, run: int, prompt: str, threads: list[threading.Thread], slots: list[Answer | None]
    ) -> None:
        error = ""
        try:
            for thread in threads:
                thread.join()
            answers = [a or Answer("", error="no answer") for a in slots]
            texts = [a.text for a in answers if a.error is None]
            try:
                score = similarity(texts, engine=self.engine, embed_model=self.embed_model)
            except Exception as e:
                score, error = None, one_line(e)
            self.results = CompareResult(prompt, answers, score, run=run)
            self.update(answers=[asdict(a) for a in answers], similarity=score, error=error)
            self.send({"type": "end", "run": run, "similarity": score})
        finally:
            self.update(running=False)
            self._idle.set()
