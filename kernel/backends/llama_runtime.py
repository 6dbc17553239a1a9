"""The blocking half of the llama.cpp backend. Every method runs on the Mold's Worker thread.

One ``Llama`` context generates; a second one, created on first use, embeds (llama.cpp
needs ``embeddings=True`` and a pooling type for that). Both mmap the same file, so the
weights are in memory once.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import llama_cpp

from ..chat_template import render_chat
from ..errors import (
    ContextOverflow,
    InvalidFormat,
    InvalidModelFile,
    ModelError,
    UnsupportedTask,
)
from ..limits import check_embed_tokens, check_grammar_size
from ..schema import Chunk, Format, InferenceOptions, Message, Stats
from .stops import StopMatcher

if TYPE_CHECKING:
    from ..worker import Worker
    from .embed_batch import Ask, Vectors
    from .llama_batch import Batcher

log = logging.getLogger("ferrousforge.llama_cpp")


# ggml's levels (ggml.h): 1 debug, 2 info, 3 warn, 4 error, 5 continuation. llama.cpp's
# warnings are tuning notices (SWA cache size, pooling defaults): info here, not the user's
# terminal. Errors stay errors.
_LEVELS = {3: logging.INFO, 4: logging.ERROR}


# "CPU KV buffer size = 45.00 MiB", "CUDA0 compute buffer size = ...": what a context
# allocates, as llama.cpp reports it while creating one. CPU_Mapped buffers are the model
# file's pages (its size counts them once); every other buffer is memory held.
_BUFFER = re.compile(r"(\w+)\s+(?:\w+ )?buffer size =\s*([0-9.]+) MiB")
_measuring = threading.local()


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward_log(level: int, text: bytes, _: ctypes.c_void_p) -> None:
    """llama.cpp's own log lines go to logging, not straight to stderr."""
    line = text.decode(errors="replace").rstrip()
    sizes = getattr(_measuring, "sizes", None)
    if sizes is not None and (m := _BUFFER.search(line)) and "Mapped" not in m.group(1):
        sizes.append(int(float(m.group(2)) * 2**20))
    lvl = _LEVELS.get(level, logging.DEBUG)
    if log.isEnabledFor(lvl):
        log.log(lvl, "%s", line)


@contextlib.contextmanager
def _buffers() -> Iterator[list[int]]:
    """The sizes of the buffers llama.cpp allocates in this block, on this thread."""
    sizes: list[int] = []
    _measuring.sizes = sizes
    try:
        yield sizes
    finally:
        _measuring.sizes = None


# ctypes must keep the callback alive for as long as llama.cpp may call it: module lifetime.
llama_cpp.llama_log_set(_forward_log, ctypes.c_void_p(0))


# llama-cpp-python 0.3.36's converter lets a string hold raw control characters (a newline),
# which no JSON parser accepts: a model that wrote one broke structured output and forced
# tool calls. llama.cpp's own converter, and JSON_GBNF, leave them out; so does this.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def json_schema_to_gbnf(schema: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf as convert

    return str(convert(schema)).replace(_LOOSE_CHAR, _JSON_CHAR)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


# Ollama's sampling defaults, so answers look the same as there.
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}
RANDOM_SEED = 0xFFFFFFFF


def sampling(options: InferenceOptions, room: int) -> tuple[dict[str, Any], int]:
    """A request's sampling settings over the defaults, and how many tokens it may make in
    ``room`` (the context left after its prompt), ``max_tokens`` counted."""
    o = {**DEFAULTS, **options.model_dump(exclude_none=True)}
    most = o.get("max_tokens")
    return o, room if most is None or most < 0 else min(room, most)


class LlamaRuntime:
    def __init__(
        self,
        path: str,
        *,
        n_ctx: int,
        threads: int,
        gpu_layers: int,
        main_gpu: int = 0,
        max_grammar_bytes: int | None = None,
        batched: bool = False,
    ) -> None:
        self._kw: dict[str, Any] = dict(
            model_path=path,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=gpu_layers,
            # one device only: llama.cpp's default split spreads layers (and, at 0 layers,
            # buffers) over every GPU, ignoring main_gpu; -1 keeps a cpu load off all GPUs
            split_mode=llama_cpp.LLAMA_SPLIT_MODE_NONE,
            main_gpu=main_gpu,
            verbose=False,
        )
        try:
            with _buffers() as sizes:
                # batched: a Batcher's context generates; this one only needs the model
                self.llm = llama_cpp.Llama(n_ctx=min(n_ctx, 256) if batched else n_ctx, **self._kw)
        except (ValueError, RuntimeError, OSError) as e:
            raise InvalidModelFile(f"llama.cpp cannot load {path}: {e}") from e
        self._held = [sum(sizes)]  # bytes each context allocated beyond the mapped file
        self._embedder: llama_cpp.Llama | None = None
        self.max_grammar_bytes = max_grammar_bytes
        self.n_ctx = n_ctx if batched else self.llm.n_ctx()
        self._vocab = self.llm._model.vocab
        self._pieces: dict[int, bytes] = {}
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template")
        self._special = {
            "bos": self._text(self.llm.token_bos()),
            "eos": self._text(self.llm.token_eos()),
        }
        arch = meta.get("general.architecture", "")
        self.embed_only = f"{arch}.pooling_type" in meta or "bert" in arch

    def _text(self, token: int) -> str:
        return "" if token < 0 else self.llm._model.token_get_text(token)

    # -- text ------------------------------------------------------------------------

    def render(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        think: bool | None = None,
    ) -> str:
        """The prompt for ``messages`` through the model's own chat template; ``think`` goes
        to it as ``enable_thinking``, the switch reasoning templates read."""
        if not self.template:
            raise UnsupportedTask(
                "this model has no chat template; use generate with raw=True instead"
            )
        return render_chat(self.template, messages, tools, think, **self._special)

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return list(self.llm.tokenize(text.encode(), add_bos=add_special, special=True))

    def detokenize(self, ids: Sequence[int]) -> str:
        vocab = self.llm.n_vocab()
        if (bad := next((i for i in ids if not 0 <= i < vocab), None)) is not None:
            # llama.cpp looks ids up unchecked: one outside the vocabulary would abort
            raise ModelError(f"token {bad} is not in the model's vocabulary (0..{vocab - 1})")
        arr = (llama_cpp.llama_token * len(ids))(*ids)
        size = 8 * len(ids) + 16
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(self._vocab, arr, len(ids), buf, size, False, True)
        return buf.raw[: max(n, 0)].decode(errors="replace")

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(128)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 128, 0, False)
            piece = self._pieces[token] = buf.raw[: max(n, 0)]
        return piece

    # -- generation ------------------------------------------------------------------

    def prompt_tokens(
        self, prompt: str, prefix: Sequence[int] = (), n_ctx: int | None = None
    ) -> list[int]:
        bos = self._text(self.llm.token_bos())
        first = not prefix and not (bos and prompt.startswith(bos))
        tokens = [*prefix, *self.tokenize(prompt, add_special=first)]
        limit = n_ctx or self.n_ctx
        if len(tokens) >= limit:
            raise ContextOverflow(len(tokens), limit)
        return tokens

    def grammar_text(self, fmt: Format) -> str | None:
        """The GBNF that forces JSON, or JSON matching a schema; a 400 for one too large or
        one llama.cpp refuses (its NULL sampler would crash the process)."""
        if fmt is None:
            return None
        from llama_cpp.llama_grammar import JSON_GBNF

        try:
            text = JSON_GBNF if fmt == "json" else json_schema_to_gbnf(json.dumps(fmt))
        except Exception as e:  # a schema the converter cannot express
            raise InvalidFormat(f"cannot use this format: {_one_line(e)}") from e
        check_grammar_size(text, self.max_grammar_bytes)
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, text.encode(), b"root")
        if not sampler:
            raise InvalidFormat("cannot use this format: llama.cpp refuses its grammar")
        llama_cpp.llama_sampler_free(sampler)
        return str(text)

    def grammar(self, fmt: Format) -> Any:
        """``grammar_text`` as the high-level API's grammar object."""
        from llama_cpp.llama_grammar import LlamaGrammar

        text = self.grammar_text(fmt)
        return None if text is None else LlamaGrammar.from_string(text, verbose=False)

    def batcher(self, worker: Worker, n_seq: int) -> Batcher:
        """A context for ``n_seq`` sequences at once over the whole ``n_ctx`` (on the worker
        thread, which its loop will use)."""
        from .llama_batch import Batcher

        with _buffers() as sizes:
            made = Batcher(self.llm, self._piece, worker, n_seq, self.n_ctx)
        self._held.append(sum(sizes))
        self.n_ctx = made.n_ctx
        return made

    def generate(
        self,
        prompt: str,
        options: InferenceOptions,
        cancel: threading.Event,
        *,
        prefix: Sequence[int] = (),
        fmt: Format = None,
    ) -> Iterator[Chunk]:
        """Stream the completion of ``prefix`` tokens + ``prompt``; stops at end-of-generation,
        a stop string, ``max_tokens``, the end of the context, or ``cancel``."""
        start = time.perf_counter_ns()
        n_ctx = min(self.n_ctx, options.num_ctx or self.n_ctx)  # a request may ask for less
        tokens = self.prompt_tokens(prompt, prefix, n_ctx)
        grammar = self.grammar(fmt)
        yield Chunk(stats=Stats(prompt_eval_count=len(tokens)))  # counted even if cut short
        answer: list[int] = []
        o, budget = sampling(options, n_ctx - len(tokens))
        self.llm.set_seed(RANDOM_SEED if options.seed is None else options.seed & 0xFFFFFFFF)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(options.stop)
        count, reason, first = 0, "length", 0
        steps = self.llm.generate(
            tokens,
            top_k=o["top_k"],
            top_p=o["top_p"],
            min_p=0.0,
            temp=o["temperature"],
            repeat_penalty=o["repetition_penalty"],
            grammar=grammar,
        )
        try:
            while count < budget:
                token = next(steps)
                if not first:
                    first = time.perf_counter_ns()
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    reason = "stop"
                    break
                count += 1
                answer.append(token)
                text = matcher.feed(decoder.decode(self._piece(token)))
                if text:
                    yield Chunk(text)
                if matcher.stopped:
                    reason = "stop"
                    break
                if cancel.is_set():
                    reason = "cancel"
                    break
        finally:
            steps.close()
        if tail := matcher.feed(decoder.decode(b"", final=True)) + matcher.flush():
            yield Chunk(tail)
        end = time.perf_counter_ns()
        first = first or end
        stats = Stats(len(tokens), first - start, count, end - first)
        context = tokens + answer
        last = Chunk(done=True, done_reason=reason, stats=stats, context=context)  # type: ignore[arg-type]
        last.stop_sequence = matcher.hit
        yield last

    # -- embeddings ------------------------------------------------------------------

    def embed_many(self, asks: list[Ask]) -> list[Vectors | Exception]:
        """Several requests' L2-normalized, pooled embeddings (mean pooling unless the model
        says otherwise), in one pass; a request that breaks a limit fails alone."""
        llm = self._embedding_context()
        results: list[Vectors | Exception] = []
        texts: list[str] = []
        for ask in asks:
            try:
                count = 0
                for t in ask.texts:
                    n = len(llm.tokenize(t.encode(), add_bos=True, special=True))
                    if n > llm.n_ctx() and not ask.truncate:
                        raise ContextOverflow(n, llm.n_ctx())
                    count += min(n, llm.n_ctx())
                check_embed_tokens(count, ask.max_tokens)
            except Exception as e:
                results.append(e)
                continue
            results.append(([], count))
            texts.extend(ask.texts)
        vectors = iter(llm.embed(texts, normalize=True, truncate=True) if texts else [])
        for ask, result in zip(asks, results, strict=True):
            if not isinstance(result, Exception):
                result[0].extend(list(map(float, next(vectors))) for _ in ask.texts)
        return results

    def _embedding_context(self) -> llama_cpp.Llama:
        if self._embedder is None:
            meta = self.llm.metadata
            arch = meta.get("general.architecture", "")
            pooling = int(meta.get(f"{arch}.pooling_type", llama_cpp.LLAMA_POOLING_TYPE_MEAN))
            with _buffers() as sizes:
                self._embedder = llama_cpp.Llama(
                    n_ctx=self.n_ctx,
                    n_batch=self.n_ctx,
                    n_ubatch=self.n_ctx,
                    embedding=True,
                    pooling_type=pooling,
                    **self._kw,
                )
            self._held.append(sum(sizes))
        return self._embedder

    @property
    def held_bytes(self) -> int:
        """What the contexts allocated beyond the mapped model file, as llama.cpp reported
        it: KV caches, compute and output buffers, and weights copied to a GPU. The
        embedding context (made on the first embed) logits every token of its batch: about
        n_ctx × n_vocab × 4 bytes, 400 MiB for smollm2 at 2048 tokens."""
        return sum(self._held)

    def close(self) -> None:
        for llm in (self._embedder, self.llm):
            if llm is not None:
                llm.close()
        self._embedder = None
