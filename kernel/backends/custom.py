"""Custom models: a user's Python object served as a Mold, from a notebook cell
(``ff.register``) or from a plugin package (a ``ferrousforge.backends`` entry point), with
no change to the engine::

    class HashVectors(ff.CustomModel):
        models = ("hashvec",)  # the names it serves (default: its backend name)

        def embed(self, texts: list[str]) -> list[list[float]]: ...

    ff.register(HashVectors)  # a notebook's in-process engine; or, in a plugin's pyproject:
    # [project.entry-points."ferrousforge.backends"]
    # hashvec = "my_plugin:HashVectors.as_backend"

The methods an object has are its tasks: ``embed(texts) -> vectors``, ``generate(prompt,
options) -> str | Iterable[str]``, ``chat(messages, options) -> str | Iterable[str]``
(messages and options as dicts), ``rerank(query, documents) -> scores``, ``tokenize(text) ->
ids``, ``detokenize(ids) -> text`` and ``infer(inputs) -> outputs`` (numpy arrays by name;
the specs in its ``inputs``/``outputs`` attributes are checked first). ``load()`` and
``unload()`` run when it has them. Subclassing ``CustomModel`` is optional: any class,
factory or object with those methods works. Each loaded model gets its own object and its
own worker thread (calls run one at a time, off the event loop). What a method raises
becomes an ``InferenceError`` (``InvalidModelFile`` from creating or loading it) with the
original as its cause; stop sequences and ``max_tokens`` (counting pieces) are applied to
what it yields. The backend provides its models' store entries (``provides``): the engine
stores them when it starts or registers the backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, cast

from ..devices import cpu_device
from ..errors import (
    ConfigError,
    ForgeError,
    InferenceError,
    InvalidModelFile,
    ModelNotLoaded,
    UnsupportedTask,
)
from ..limits import check_embed_tokens
from ..mold import Backend, Device, LoadOptions, Mold, Occupancy
from ..schema import (
    ChatRequest,
    Chunk,
    DoneReason,
    EmbedRequest,
    GenerateRequest,
    ModelMetadata,
    Request,
    RerankRequest,
    Result,
    Stats,
    result_of,
)
from ..store.manifest import Manifest
from ..store.names import parse_name
from ..tensors import TensorRequest, TensorSpec, pick_outputs
from ..worker import Worker
from .stops import StopMatcher

log = logging.getLogger(__name__)

TASKS = ("embed", "generate", "chat", "rerank", "tokenize", "infer")
_IO = ("inputs", "outputs")  # a model's optional specs of its infer tensors
SOURCE = "backend:"  # a provided entry's source: "backend:<name>"


class CustomModel:
    """A base for custom models (optional): the class attributes configure its backend;
    define the task methods it serves (see the module docstring)."""

    backend_name: ClassVar[str] = ""  # default: the class name, lower-case
    models: ClassVar[Sequence[str]] = ()  # names it serves; default: backend_name (no formats)
    formats: ClassVar[Sequence[str]] = ()  # store formats it reads (files: see ``manifest``)
    context_length: ClassVar[int] = 2048
    memory: ClassVar[int] = 0  # bytes a loaded one holds, for the scheduler's budget
    # infer's tensors, each {"name", "datatype", "shape"} (a TensorSpec); () when unchecked
    inputs: ClassVar[Sequence[Any]] = ()
    outputs: ClassVar[Sequence[Any]] = ()
    manifest: Manifest | None = None  # the store entry being served, set before load()

    def load(self) -> None:
        """Get ready to serve (on the model's worker thread, before its first request)."""

    def unload(self) -> None:
        """Let go of what ``load`` took."""

    @classmethod
    def as_backend(cls) -> CustomBackend:
        """The Backend serving this class: what a plugin's entry point names."""
        return CustomBackend(cls)


def tasks_of(obj: object) -> frozenset[str]:
    """The tasks an object (or its class) serves: the task methods it has."""
    return frozenset(t for t in TASKS if callable(getattr(obj, t, None)))


class CustomBackend:
    """A Backend that makes a Mold of a fresh object from ``factory`` for each model."""

    def __init__(
        self,
        factory: Callable[[], object],
        *,
        name: str | None = None,
        models: Sequence[str] | None = None,
        formats: Sequence[str] | None = None,
    ) -> None:
        self.factory = factory
        default = getattr(factory, "__name__", type(factory).__name__).lower()
        self.name = name or getattr(factory, "backend_name", "") or default
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"a backend name is letters, digits, - and _; not {self.name!r}")
        if isinstance(factory, type) and not tasks_of(factory):
            raise ConfigError(f"{factory.__name__} has none of the task methods {', '.join(TASKS)}")
        reads: frozenset[str] = frozenset(formats or getattr(factory, "formats", None) or ())
        wanted = models if models is not None else getattr(factory, "models", ())
        if not wanted and not reads:  # the code is the model: one named after the backend
            wanted = (self.name,)
        self.models = [str(parse_name(m)) for m in wanted]
        # its own format (the models it provides), and the store's formats it reads
        self.formats = reads | {self.name} if self.models else reads
        self.context_length = int(getattr(factory, "context_length", 2048))
        self.memory = int(getattr(factory, "memory", 0))

    def available(self) -> bool:
        return True

    def devices(self) -> list[Device]:
        return [cpu_device(self.name)]

    def estimate_memory(self, manifest: Manifest, opts: LoadOptions) -> int:
        return self.memory

    def open(self, manifest: Manifest, device: Device, opts: LoadOptions) -> Mold:
        try:
            obj = self.factory()
        except ForgeError:
            raise
        except Exception as e:
            raise InvalidModelFile(_failed(manifest.name, "creating it", e)) from e
        if isinstance(obj, CustomModel):
            obj.manifest = manifest
        return CustomMold(obj, self.name, manifest, device, self.memory, self.context_length)

    def provides(self) -> list[Manifest]:
        """The store entries of the models it serves (no files: the code is the model)."""
        tasks = tasks_of(self.factory)
        kind = "embedding" if tasks and tasks <= {"embed", "rerank"} else "other"
        kind = "llm" if tasks & {"generate", "chat"} else kind
        doc = (getattr(self.factory, "__doc__", None) or "").strip().split("\n")[0] or None
        fmt = self.name
        io = [
            [TensorSpec.model_validate(s) for s in getattr(self.factory, k, ()) or ()] for k in _IO
        ]
        return [
            Manifest(
                name=name,
                source=SOURCE + self.name,
                format=fmt,
                path="",
                managed=False,
                sha256="0" * 64,
                size=0,
                metadata=ModelMetadata(
                    name=name,
                    format=fmt,
                    model_type=kind,
                    context_size=self.context_length,
                    description=doc,
                    input_shapes=io[0],
                    output_shapes=io[1],
                ),
            )
            for name in self.models
        ]


def as_backend(
    model: object, *, name: str | None = None, models: Sequence[str] | None = None
) -> Backend:
    """``model`` as a Backend: a Backend as it is, a class or factory as a CustomBackend,
    and an object with task methods as a CustomBackend that serves that one object."""
    if not isinstance(model, type) and hasattr(model, "open") and hasattr(model, "formats"):
        if name is not None or models is not None:
            raise ConfigError("name and models configure a custom model, not a Backend")
        return cast(Backend, model)
    if isinstance(model, type) or (callable(model) and not tasks_of(model)):
        return CustomBackend(model, name=name, models=models)
    if not tasks_of(model):
        raise ConfigError(f"{model!r} has none of the task methods {', '.join(TASKS)}")
    name = name or getattr(model, "backend_name", "") or type(model).__name__.lower()
    return CustomBackend(lambda: model, name=name, models=models)


def elsewhere(url: str | None) -> str:
    """Why a custom model cannot be registered with the engine at ``url``: one line."""
    engine = f"the engine at {url}" if url else "this engine"
    return (
        f"{engine} runs in another process, so a model defined here cannot serve there: "
        "install it as a plugin package (a `ferrousforge.backends` entry point, as in "
        "examples/forge-plugin-example) where that engine runs and restart it, or serve it "
        "in process: ferrousforge.notebook.use(ferrousforge.Engine())"
    )


class CustomMold:
    """One custom object, loaded: its calls run on a worker thread of its own."""

    def __init__(
        self,
        obj: object,
        backend: str,
        manifest: Manifest,
        device: Device,
        memory: int,
        context_length: int,
    ) -> None:
        self.name, self.backend, self.device = manifest.name, backend, device.id
        self.metadata = manifest.metadata.model_copy(deep=True)
        io = [[TensorSpec.model_validate(s) for s in getattr(obj, k, None) or ()] for k in _IO]
        self.metadata.input_shapes, self.metadata.output_shapes = io
        self.memory = memory
        self.context_length = manifest.metadata.context_size or context_length
        self.tasks = tasks_of(obj)
        self._obj = obj
        self._worker: Worker | None = None

    async def load(self) -> None:
        worker = self._worker = Worker(f"forge-{self.backend}")
        if callable(load := getattr(self._obj, "load", None)):
            try:
                await self._run("load", load, InvalidModelFile)
            except Exception:  # the scheduler drops the Mold: its thread ends here
                self._worker = None
                await worker.stop()
                raise

    async def unload(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            if callable(unload := getattr(self._obj, "unload", None)):
                await worker.call(unload)
        except Exception as e:  # unloading goes on: the object is dropped either way
            log.warning("%s: unload failed: %s", self.name, e)
        finally:
            await worker.stop()

    def _live(self) -> Worker:
        if self._worker is None:
            raise ModelNotLoaded(f"{self.name} is not loaded")
        return self._worker

    async def _run(
        self, what: str, fn: Callable[[], Any], error: type[ForgeError] = InferenceError
    ) -> Any:
        """``fn()`` on the worker, what it raises translated into the error tree."""

        def guarded() -> Any:
            try:
                return fn()
            except ForgeError:
                raise
            except Exception as e:
                raise error(_failed(self.name, what, e)) from e

        return await self._live().call(guarded)

    def _require(self, task: str) -> Any:
        if task not in self.tasks:
            raise UnsupportedTask(
                f"{self.name} cannot {task}; it supports: {', '.join(sorted(self.tasks))}"
            )
        return getattr(self._obj, task)

    async def infer(self, req: Request) -> Result:
        if isinstance(req, EmbedRequest):
            embed, texts = self._require("embed"), list(req.input)
            count = sum(len(t.split()) for t in texts)  # words, for the limit and the usage
            check_embed_tokens(count, req.max_tokens)
            vectors = await self._run("embed", lambda: _rows(embed(texts), len(texts), "vectors"))
            return Result(embeddings=vectors, stats=Stats(prompt_eval_count=count))
        if isinstance(req, TensorRequest):
            run, inputs, specs = self._require("infer"), req.inputs, self.metadata.output_shapes
            found = await self._run("infer", lambda: pick_outputs(run(inputs), req.outputs, specs))
            return Result(tensors=found)
        if isinstance(req, RerankRequest):
            rerank, query, docs = self._require("rerank"), req.query, list(req.documents)
            count = sum(len(t.split()) for t in (query, *docs))
            check_embed_tokens(count, req.max_tokens)
            scores = await self._run("rerank", lambda: _rows(rerank(query, docs), len(docs)))
            return Result(scores=scores, stats=Stats(prompt_eval_count=count))
        return result_of(await self._live().collect(self._pieces(req)))

    async def infer_stream(self, req: GenerateRequest | ChatRequest) -> AsyncIterator[Chunk]:
        async for chunk in self._live().stream(self._pieces(req)):
            yield chunk

    def _pieces(
        self, req: GenerateRequest | ChatRequest
    ) -> Callable[[threading.Event], Iterator[Chunk]]:
        """What runs on the worker: the object's answer as Chunks, stops and limit applied."""
        options = req.options.model_dump(exclude_none=True)
        task = "generate" if isinstance(req, GenerateRequest) else "chat"
        answer = self._require(task)
        if isinstance(req, GenerateRequest):
            question: Any = req.prompt
            words = len(req.prompt.split())
        else:
            question = [m.model_dump(exclude_none=True) for m in req.messages]
            words = sum(len(m.content.split()) for m in req.messages)
        if req.format is not None:
            raise UnsupportedTask(f"{self.name} cannot constrain its output to a format")

        def run(cancel: threading.Event) -> Iterator[Chunk]:
            start, count = time.perf_counter_ns(), 0
            reason: DoneReason = "stop"
            matcher, limit = StopMatcher(req.options.stop), req.options.max_tokens
            out: Any = None
            try:
                out = answer(question, options)
                for piece in [out] if isinstance(out, str) else out:
                    if not isinstance(piece, str):
                        raise TypeError(f"it yielded a {type(piece).__name__}, not a str")
                    if limit is not None and 0 <= limit <= count:
                        reason = "length"
                        break
                    count += 1
                    if text := matcher.feed(piece):
                        yield Chunk(text)
                    if matcher.stopped or cancel.is_set():
                        break
            except ForgeError:
                raise
            except Exception as e:
                raise InferenceError(_failed(self.name, task, e)) from e
            finally:
                if callable(close := getattr(out, "close", None)):  # a generator cut short
                    close()
            if tail := matcher.flush():
                yield Chunk(tail)
            took = time.perf_counter_ns() - start
            last = Chunk(done=True, done_reason=reason, stats=Stats(words, 0, count, took))
            last.stop_sequence = matcher.hit
            yield last

        return run

    async def tokenize(self, text: str, *, prompt: bool = False) -> list[int]:
        tokenize = self._require("tokenize")
        ids = await self._run("tokenize", lambda: tokenize(text))
        return [int(i) for i in ids]

    async def detokenize(self, ids: Sequence[int]) -> str:
        self._require("tokenize")
        detokenize = getattr(self._obj, "detokenize", None)
        if not callable(detokenize):
            raise UnsupportedTask(f"{self.name} cannot detokenize")
        return str(await self._run("detokenize", lambda: detokenize(list(ids))))

    def occupancy(self) -> Occupancy:
        return Occupancy(1)


def _rows(found: Any, n: int, what: str = "scores") -> Any:
    """``found`` as ``n`` vectors (``what="vectors"``) or ``n`` scores, as plain floats."""
    rows = list(found)
    if len(rows) != n:
        raise ValueError(f"it returned {len(rows)} {what} for {n} inputs")
    if what == "vectors":
        return [[float(x) for x in row] for row in rows]
    return [float(x) for x in rows]


def _failed(model: str, what: str, e: BaseException) -> str:
    """One line: which model, doing what, and the user's error."""
    first = (str(e).strip().splitlines() or [""])[0]
    why = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return f"{model}: {what} failed: {why}"
