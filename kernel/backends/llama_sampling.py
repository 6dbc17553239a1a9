"""Per-sequence helpers of the llama.cpp batcher: its sampler chain, and the prefix it
shares with a cached prompt."""

from __future__ import annotations

from typing import Any

import llama_cpp

from ..errors import InvalidFormat
from .llama_runtime import RANDOM_SEED

PENALTY_LAST_N = 64  # what the high-level API's last_n_tokens_size defaults to


def sampler_chain(
    vocab: Any, n_vocab: int, o: dict[str, Any], seed: int | None, grammar: str | None
) -> Any:
    """One sequence's llama_sampler chain, in the high-level API's order: penalties,
    grammar (a NULL one is refused), then greedy at temperature 0, else top_k, typical,
    top_p, min_p, temperature and a draw with ``seed``. The caller frees it."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    parts = [
        llama_cpp.llama_sampler_init_penalties(
            n_vocab, PENALTY_LAST_N, float(o["repetition_penalty"]), 0.0, 0.0
        )
    ]
    if grammar is not None:
        g = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not g:  # a NULL sampler in a chain would crash the process
            for p in parts:
                llama_cpp.llama_sampler_free(p)
            llama_cpp.llama_sampler_free(chain)
            raise InvalidFormat("cannot use this format: llama.cpp refuses its grammar")
        parts.append(g)
    temp = float(o["temperature"])
    if temp == 0:
        parts.append(llama_cpp.llama_sampler_init_greedy())
    else:
        parts += [
            llama_cpp.llama_sampler_init_top_k(int(o["top_k"])),
            llama_cpp.llama_sampler_init_typical(1.0, 1),
            llama_cpp.llama_sampler_init_top_p(float(o["top_p"]), 1),
            llama_cpp.llama_sampler_init_min_p(0.0, 1),
            llama_cpp.llama_sampler_init_temp(temp),
            llama_cpp.llama_sampler_init_dist(RANDOM_SEED if seed is None else seed & 0xFFFFFFFF),
        ]
    for p in parts:
        llama_cpp.llama_sampler_chain_add(chain, p)  # the chain owns them now
    return chain


def common_prefix(a: list[int], b: list[int]) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
