"""Bounds on what one request may ask for, checked before any work starts.

Every check raises ``LimitExceeded`` (a 400) naming the setting that holds the limit, so an
operator knows what to raise. The body size is bounded by ``max_body_bytes`` before this;
these bound what a small body can still make expensive: many embedding inputs, a schema
whose grammar is written out repetition by repetition, a context or keep-alive no machine
has.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidFormat, LimitExceeded, RequestError
from .schema import Format, InferenceOptions

# JSON-schema keywords whose value the grammar converter writes out that many times.
_REPEATS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_PATTERN_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


@dataclass(frozen=True, slots=True)
class Limits:
    """The request limits of one engine (``Settings`` fields of the same names)."""

    max_embed_inputs: int = 2048
    max_embed_tokens: int = 300_000
    max_rerank_documents: int = 1000
    max_tensor_elements: int = 16 << 20
    max_stops: int = 16
    max_stop_length: int = 256
    max_template_length: int = 32_768
    max_schema_depth: int = 32
    max_schema_nodes: int = 2_000
    max_schema_repeat: int = 1_000
    max_grammar_bytes: int = 256 << 10
    max_num_ctx: int = 131_072
    max_num_predict: int = 131_072
    max_keep_alive: float = 10 * 365 * 86_400.0

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The limits named in ``settings`` (an object with attributes of the same names)."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    # -- checks ----------------------------------------------------------------------

    def options(self, o: InferenceOptions) -> None:
        stops = o.stop or []
        if len(stops) > self.max_stops:
            raise LimitExceeded(
                "stop: the number of sequences", len(stops), self.max_stops, "max_stops"
            )
        if (longest := max(map(len, stops), default=0)) > self.max_stop_length:
            raise LimitExceeded(
                "stop: a sequence's length", longest, self.max_stop_length, "max_stop_length"
            )
        if o.num_ctx is not None and o.num_ctx > self.max_num_ctx:
            raise LimitExceeded("num_ctx", o.num_ctx, self.max_num_ctx, "max_num_ctx")
        if o.max_tokens is not None and o.max_tokens > self.max_num_predict:
            raise LimitExceeded(
                "num_predict (max_tokens)", o.max_tokens, self.max_num_predict, "max_num_predict"
            )

    def template(self, template: str | None) -> None:
        if template is not None and len(template) > self.max_template_length:
            raise LimitExceeded(
                "template length", len(template), self.max_template_length, "max_template_length"
            )

    def embed_inputs(self, texts: Sequence[str]) -> None:
        if len(texts) > self.max_embed_inputs:
            raise LimitExceeded(
                "the number of inputs", len(texts), self.max_embed_inputs, "max_embed_inputs"
            )

    def rerank_documents(self, documents: Sequence[str], top_n: int | None) -> None:
        if not documents:
            raise RequestError("documents is empty: send at least one document to rerank")
        if len(documents) > self.max_rerank_documents:
            raise LimitExceeded(
                "the number of documents",
                len(documents),
                self.max_rerank_documents,
                "max_rerank_documents",
            )
        if top_n is not None and top_n < 1:
            raise RequestError(f"top_n is {top_n}; ask for at least 1 document, or leave it out")

    def keep_alive(self, seconds: float | None) -> None:
        if seconds is None or seconds < 0:  # unset, or forever
            return
        if not math.isfinite(seconds) or seconds > self.max_keep_alive:
            shown = "not a finite number" if not math.isfinite(seconds) else f"{seconds:.0f} s"
            raise LimitExceeded(
                "keep_alive", shown, f"{self.max_keep_alive:.0f} s", "max_keep_alive"
            )

    def format(self, fmt: Format) -> None:
        """Bound a JSON schema's depth, size and repetitions before a grammar is built."""
        if fmt is None or isinstance(fmt, str):
            return
        nodes = 0
        todo: list[tuple[Any, int]] = [(fmt, 1)]
        while todo:
            node, depth = todo.pop()
            nodes += 1
            if nodes > self.max_schema_nodes:
                raise LimitExceeded(
                    "format: the schema's size in nodes",
                    f"over {self.max_schema_nodes}",
                    self.max_schema_nodes,
                    "max_schema_nodes",
                )
            if depth > self.max_schema_depth:
                raise LimitExceeded(
                    "format: the schema's depth",
                    f"over {self.max_schema_depth}",
                    self.max_schema_depth,
                    "max_schema_depth",
                )
            if isinstance(node, dict):
                self._schema_keywords(node)
                todo += [(v, depth + 1) for v in node.values()]
            elif isinstance(node, list):
                todo += [(v, depth + 1) for v in node]

    def _schema_keywords(self, node: dict[str, Any]) -> None:
        for key in _REPEATS:
            value = node.get(key)
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and (value > self.max_schema_repeat)
            ):
                raise LimitExceeded(
                    f"format: {key}", value, self.max_schema_repeat, "max_schema_repeat"
                )
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            for low, high in _PATTERN_REPEAT.findall(pattern):
                biggest = max(int(low), int(high or 0))
                if biggest > self.max_schema_repeat:
                    raise LimitExceeded(
                        "format: a repetition in pattern",
                        biggest,
                        self.max_schema_repeat,
                        "max_schema_repeat",
                    )
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise InvalidFormat(f"format: only local $ref ('#/...') is allowed, not {ref!r}")
        if node.get("enum") == [] or node.get("anyOf") == [] or node.get("oneOf") == []:
            raise InvalidFormat("format: an empty enum/anyOf/oneOf matches nothing")


# The two limits a backend checks itself, once it has tokenized or built a grammar: the
# engine hands the numbers down (EmbedRequest.max_tokens and RerankRequest.max_tokens,
# LoadOptions.extra).


def check_embed_tokens(count: int, limit: int | None) -> None:
    if limit is not None and count > limit:
        raise LimitExceeded("the inputs' total tokens", count, limit, "max_embed_tokens")


def check_grammar_size(grammar: str, limit: int | None) -> None:
    if limit is not None and (size := len(grammar.encode())) > limit:
        raise LimitExceeded("format: the grammar's size in bytes", size, limit, "max_grammar_bytes")
