"""What every BERT-style encoder backend shares: the tokenizer, the pooling, the scoring.

A model folder carries ``tokenizer.json`` (HF ``tokenizers``) and ``config.json``; the
embedding of a text is its tokens' last hidden states, mean-pooled over the attention mask
and L2-normalized, as sentence-transformers does for all-MiniLM-L6-v2. A folder whose
config names a ``...ForSequenceClassification`` with one label is a cross-encoder: it
reranks instead, scoring each (query, document) pair by its logit, as sentence-transformers'
CrossEncoder does.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    ContextOverflow,
    InvalidModelFile,
    MissingExtra,
    ModelNotLoaded,
    UnsupportedTask,
)
from ..limits import check_embed_tokens
from ..mold import Device, LoadOptions, Occupancy
from ..schema import (
    ChatRequest,
    Chunk,
    EmbedRequest,
    GenerateRequest,
    Request,
    RerankRequest,
    Result,
    Stats,
)
from ..store.formats import is_cross_encoder, max_text_tokens, num_labels
from ..store.manifest import Manifest
from ..tensors import TensorRequest, pick_outputs
from ..worker import Worker
from .embed_batch import Ask, EmbedBatcher, Vectors

PARALLEL = 16  # requests at once unless set: they are gathered into shared batches
Row = tuple[Any, Any]  # one text's (or pair's) token ids and token types, unpadded


@dataclass
class Batch:
    """Token ids, attention mask and token types, padded to one length (numpy int64)."""

    input_ids: Any
    attention_mask: Any
    token_type_ids: Any
    count: int  # real tokens in the batch


class TextTokenizer:
    def __init__(self, folder: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingExtra("tokenizers", "onnx") from e
        path = folder / "tokenizer.json"
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise InvalidModelFile(f"cannot read {path}: {e}") from e
        self.max_length = max_text_tokens(folder)
        self._tok.no_truncation()
        self._tok.no_padding()
        self._pairs: Any = None  # a copy that truncates pairs, made on the first

    def encode(self, texts: Sequence[str], truncate: bool = True) -> Batch:
        import numpy as np

        encodings = self._tok.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        if not truncate and max(lengths, default=0) > self.max_length:
            raise ContextOverflow(max(lengths), self.max_length)
        width = min(max(lengths, default=1), self.max_length)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = min(len(e.ids), width)
            ids[row, :n] = e.ids[:n]
            mask[row, :n] = 1
            types[row, :n] = e.type_ids[:n]
        if width < max(lengths, default=0):  # cut texts keep their final [SEP]
            sep = self._tok.token_to_id("[SEP]")
            for row, length in enumerate(lengths):
                if length > width and sep is not None:
                    ids[row, width - 1] = sep
        return Batch(ids, mask, types, int(mask.sum()))

    def encode_pairs(self, query: str, documents: Sequence[str]) -> list[Row]:
        """``[CLS] query [SEP] document [SEP]`` rows, the longer side cut first to fit
        (transformers' ``truncation=True``)."""
        import numpy as np

        if self._pairs is None:
            from tokenizers import Tokenizer

            pairs = Tokenizer.from_str(self._tok.to_str())
            pairs.enable_truncation(self.max_length, strategy="longest_first")
            self._pairs = pairs
        encodings = self._pairs.encode_batch([(query, d) for d in documents])
        return [
            (np.array(e.ids, dtype=np.int64), np.array(e.type_ids, np.int64)) for e in encodings
        ]

    def tokenize(self, text: str, prompt: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=prompt).ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids)))


def padded(rows: Sequence[Row]) -> Batch:
    """Rows padded to the longest of them, with their attention mask."""
    import numpy as np

    ids = np.zeros((len(rows), max(max((len(r[0]) for r in rows), default=1), 1)), np.int64)
    mask, types = np.zeros_like(ids), np.zeros_like(ids)
    for k, (row_ids, row_types) in enumerate(rows):
        ids[k, : len(row_ids)], types[k, : len(row_ids)] = row_ids, row_types
        mask[k, : len(row_ids)] = 1
    return Batch(ids, mask, types, int(mask.sum()))


def mean_pool(hidden: Any, mask: Any) -> list[list[float]]:
    """Masked mean over tokens, then L2 norm (numpy arrays in, lists out)."""
    import numpy as np

    m = mask[..., None].astype(hidden.dtype)
    summed = (hidden * m).sum(axis=1)
    pooled = summed / np.clip(m.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(float).tolist()  # type: ignore[no-any-return]


class EncoderMold(abc.ABC):
    """A sentence-embedding or cross-encoder Mold: the runtime part is ``_load_runtime`` and
    ``_hidden``; everything else (its worker thread, tokenizer, pooling, protocol) is here."""

    backend = ""
    tasks = frozenset({"embed", "tokenize", "batch"})  # concurrent requests share batches
    slice_rows = 8  # texts per forward pass, sorted by length (bench/embed.py measures it)
    reranks = False  # whether ``_hidden`` gives a cross-encoder's logits (onnx, torch)

    def __init__(self, manifest: Manifest, device: Device, opts: LoadOptions, memory: int):
        self.name, self.device, self.metadata = manifest.name, device.id, manifest.metadata
        self.memory, self.path, self.opts = memory, manifest.file, opts
        self.context_length = 512
        folder = self.path if self.path.is_dir() else self.path.parent
        self.cross_encoder = is_cross_encoder(folder)
        if self.cross_encoder:
            if not self.reranks:
                raise UnsupportedTask(
                    f"{self.name} is a cross-encoder (a reranker); the {self.backend} backend "
                    "runs embedding models only: run it on onnx or torch"
                )
            if (labels := num_labels(folder)) != 1:
                raise UnsupportedTask(
                    f"{self.name} is a classifier with {labels} labels; rerank needs a "
                    "cross-encoder with one (a relevance logit)"
                )
            self.tasks = frozenset({"rerank", "tokenize"})
        self._tok: TextTokenizer | None = None
        self._worker: Worker | None = None
        self._gather: EmbedBatcher | None = None
        self._slots = opts.parallel or PARALLEL

    @abc.abstractmethod
    def _load_runtime(self) -> None:
        """Load the runtime's model from ``self.path`` (on the worker thread)."""

    @abc.abstractmethod
    def _hidden(self, batch: Batch) -> Any:
        """Last hidden states, shape (batch, tokens, dims), as a numpy array; for a
        cross-encoder, its logits, shape (batch, 1)."""

    def _pooled(self, batch: Batch) -> list[list[float]]:
        """Each row's embedding: ``_hidden`` mean-pooled and L2-normalized here, in numpy. A
        runtime that can pool where it computed overrides this (jax)."""
        return mean_pool(self._hidden(batch), batch.attention_mask)

    def _load(self) -> None:
        self._load_runtime()
        self._tok = TextTokenizer(self.path if self.path.is_dir() else self.path.parent)
        self.context_length = self._tok.max_length

    async def load(self) -> None:
        self._worker = Worker(f"{self.backend}:{self.name}")
        try:
            await self._worker.call(self._load)
            wait = self.opts.settings.embed_batch_wait
            self._gather = EmbedBatcher(self._worker, self._embed_many, wait)
        except BaseException:
            self._worker.close()
            self._worker = None
            raise

    async def unload(self) -> None:
        worker, gather = self._worker, self._gather
        self._worker = self._tok = self._gather = None
        if gather is not None:
            await gather.close()
        if worker is not None:
            await worker.call(self._release)
            # Let the thread finish: a runtime's native thread pool must not outlive it at exit.
            await worker.stop()

    def _release(self) -> None:
        """Drop the runtime's objects on the thread that made them."""
        self.__dict__.pop("_model", None)
        self.__dict__.pop("_session", None)

    def _live(self) -> tuple[TextTokenizer, Worker]:
        if self._tok is None or self._worker is None:
            raise ModelNotLoaded(f"{self.name} is not loaded")
        return self._tok, self._worker

    def _embed_many(self, asks: list[Ask]) -> list[Vectors | Exception]:
        """Several requests' texts as one batch: sorted by length and run in slices, so
        short texts are not padded to the longest; each request's vectors come back apart."""
        tok, _ = self._live()
        results: list[Vectors | Exception] = []
        rows: list[tuple[list[list[float]], int, Row]] = []  # (its vectors, index, tokens)
        for ask in asks:
            try:
                batch = tok.encode(ask.texts, ask.truncate)
                check_embed_tokens(batch.count, ask.max_tokens)
            except Exception as e:  # this request's own fault: the others go on
                results.append(e)
                continue
            vectors: list[list[float]] = [[] for _ in ask.texts]
            results.append((vectors, batch.count))
            for i, n in enumerate(batch.attention_mask.sum(axis=1)):
                rows.append((vectors, i, (batch.input_ids[i, :n], batch.token_type_ids[i, :n])))
        rows.sort(key=lambda row: len(row[2][0]))
        for start in range(0, len(rows), self.slice_rows):
            part = rows[start : start + self.slice_rows]
            slab = padded([tokens for _, _, tokens in part])
            pooled = self._pooled(slab)
            for (vectors, i, _), vector in zip(part, pooled, strict=True):
                vectors[i] = vector
        return results

    def _score(self, req: RerankRequest) -> Result:
        """A cross-encoder's logit for each (query, document) pair; the pairs are sorted by
        length and run in slices, as texts to embed are."""
        tok, _ = self._live()
        rows = tok.encode_pairs(req.query, req.documents)
        count = sum(len(ids) for ids, _ in rows)
        check_embed_tokens(count, req.max_tokens)
        scores = [0.0] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        for start in range(0, len(order), self.slice_rows):
            part = order[start : start + self.slice_rows]
            logits = self._hidden(padded([rows[i] for i in part]))
            for i, row in zip(part, logits, strict=True):
                scores[i] = float(row[0])
        return Result(scores=scores, stats=Stats(prompt_eval_count=count))

    def _tensors(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The graph run on named tensors (``infer``), for a runtime that has one (onnx)."""
        raise UnsupportedTask(f"{self.name} on {self.backend} does not answer infer")

    def _infer_tensors(self, req: TensorRequest) -> Result:
        found = self._tensors(req.inputs)
        return Result(tensors=pick_outputs(found, req.outputs, self.metadata.output_shapes))

    async def infer(self, req: Request) -> Result:
        if isinstance(req, TensorRequest):
            return await self._live()[1].call(self._infer_tensors, req)
        if self.cross_encoder:
            if isinstance(req, RerankRequest):
                return await self._live()[1].call(self._score, req)
            raise UnsupportedTask(f"{self.name} is a cross-encoder; it only reranks")
        if not isinstance(req, EmbedRequest):
            raise UnsupportedTask(f"{self.name} is an embedding model; it only embeds")
        if self._gather is None:
            raise ModelNotLoaded(f"{self.name} is not loaded")
        vectors, count = await self._gather.embed(req.input, req.truncate, req.max_tokens)
        return Result(embeddings=vectors, stats=Stats(prompt_eval_count=count))

    async def infer_stream(self, req: GenerateRequest | ChatRequest) -> AsyncIterator[Chunk]:
        raise UnsupportedTask(f"{self.name} is an embedding model; it cannot generate")
        yield Chunk()  # unreachable: makes this an async generator, as the protocol wants

    async def tokenize(self, text: str, *, prompt: bool = False) -> list[int]:
        return self._live()[0].tokenize(text, prompt)

    async def detokenize(self, ids: Sequence[int]) -> str:
        return self._live()[0].detokenize(ids)

    def occupancy(self) -> Occupancy:
        g = self._gather
        if g is None:
            return Occupancy(self._slots)
        return Occupancy(self._slots, g.running, batches=g.batches, widths=dict(g.widths))
