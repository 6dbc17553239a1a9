"""The BERT dispatch plan both WGSL runtimes follow (the server's wgpu backend and the Pyodide
Mold), without a GPU: config checks, the bind groups against the buffers, and the per-forward
params and workgroups against the plan as it was written out by hand before it was shared."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import pytest

from ferrousforge.backends import bert_plan
from ferrousforge.backends.bert_plan import BertConfig, ConfigError, Unsupported

MINILM = {
    "model_type": "bert",
    "hidden_size": 384,
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
}
TINY = BertConfig(48, 3, 2, 96, 1e-12, 16)


def test_the_plan_needs_only_the_standard_library() -> None:
    """The wheel carries the file alone: it may import nothing of ours, nor numpy, nor js."""
    tree = ast.parse(Path(bert_plan.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import: the wheel has no ferrousforge"
            imported.add(str(node.module).split(".")[0])
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
    assert imported <= sys.stdlib_module_names | {"__future__"}, imported


def test_config_parses_from_text_or_dict() -> None:
    config = BertConfig.parse(json.dumps(MINILM))
    assert config == BertConfig.from_dict(MINILM) == BertConfig(384, 12, 6, 1536, 1e-12, 512)
    assert (config.head, config.max_tokens) == (32, 512)
    assert (
        BertConfig.parse(json.dumps(MINILM | {"max_position_embeddings": 2048})).max_tokens == 512
    )
    defaults = {k: v for k, v in MINILM.items() if k not in ("layer_norm_eps", "model_type")}
    assert BertConfig.from_dict(defaults).eps == 1e-12


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "Expecting property name"),
        ("[]", "list indices"),
        (json.dumps({"model_type": "bert"}), "'hidden_size'"),
        (json.dumps(MINILM | {"hidden_size": "wide"}), "invalid literal"),
    ],
)
def test_unreadable_configs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BertConfig.parse(text)


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        ({"hidden_act": "gelu_new"}, ["hidden_act='gelu_new'"]),
        (
            {"model_type": "roberta", "position_embedding_type": "relative_key"},
            ["model_type='roberta'", "position_embedding_type='relative_key'"],
        ),
        ({"num_attention_heads": 5}, ["head size 384/5"]),
        ({"num_attention_heads": 1}, ["head size 384/1"]),  # a head past MAX_HEAD_DIM
        ({"num_attention_heads": 0}, ["head size 384/0"]),
    ],
)
def test_unsupported_configs(changes: dict[str, object], reasons: list[str]) -> None:
    with pytest.raises(Unsupported) as caught:
        BertConfig.from_dict(MINILM | changes)
    assert caught.value.reasons == reasons and str(caught.value) == ", ".join(reasons)


def test_max_rows_fits_the_widest_activation_in_one_binding() -> None:
    config = BertConfig.from_dict(MINILM)  # widest: the intermediate, 1536 f32 a row
    assert config.max_rows(128 << 20) == (128 << 20) // (4 * 1536)
    assert config.max_rows(1 << 40) == 65535  # the workgroup limit of the embed dispatch
    assert TINY.max_rows(4 * 3 * 48 * 10) == 10  # here the qkv activation is the widest


def test_weights_name_every_tensor_once() -> None:
    weights = bert_plan.weights(TINY)
    assert len({w.buffer for w in weights}) == len(weights) == 5 + 12 * TINY.layers
    tensors = [t for w in weights for t in w.tensors]
    assert len(set(tensors)) == len(tensors) == 5 + 16 * TINY.layers
    by_buffer = {w.buffer: w for w in weights}
    assert by_buffer["1.qkv"].tensors == tuple(
        f"encoder.layer.1.attention.self.{n}.weight" for n in ("query", "key", "value")
    )
    assert by_buffer["1.qkv"].shape == (48, 48) and by_buffer["0.up"].shape == (96, 48)
    assert by_buffer["word_embeddings"].shape == (None, 48)
    assert bert_plan.prefix({"bert." + bert_plan.WORDS}) == "bert."
    assert bert_plan.prefix({bert_plan.WORDS}) == ""


def test_bind_groups_use_every_buffer_the_plan_makes() -> None:
    groups = bert_plan.bind_groups(TINY)
    assert len(groups) == 2 + 8 * TINY.layers
    made = set(bert_plan.activations(TINY, 5)) | {w.buffer for w in bert_plan.weights(TINY)}
    bound = {n for g in groups for n in g.buffers}
    assert bound == made
    assert {g.pipeline for g in groups} == set(bert_plan.PIPELINES)
    assert {g.params for g in groups} == set(bert_plan.PARAMS)
    pipes, uniforms = {"linear": "LIN"}, {"up": "UP"}
    buffers = {"h1": 1, "0.up": 2, "0.up_b": 3, "inter": 4}
    assert groups[6].resolve(pipes, uniforms, buffers) == ["LIN", "UP", 1, 2, 3, 4]


def test_activation_sizes() -> None:
    sizes = bert_plan.activations(TINY, 5)
    assert sizes == {
        **dict.fromkeys(("ids", "types", "mask"), 20),
        **dict.fromkeys(("h", "h1", "a", "ctx"), 20 * 48),
        "qkv": 20 * 3 * 48,
        "inter": 20 * 96,
    }
    assert set(bert_plan.INPUTS) < sizes.keys() and bert_plan.OUTPUT in sizes


Plan = list[tuple[str, tuple[int, int, int]]]


def handwritten(
    c: BertConfig, batch: int, tokens: int
) -> tuple[dict[str, tuple[float, ...]], Plan]:
    """The params and dispatches as both runtimes wrote them out before the plan was shared."""
    rows = batch * tokens
    head = c.hidden // c.heads
    params = {
        "embed": (rows, tokens, c.hidden),
        "norm": (rows, c.hidden, c.eps),
        "attention": (tokens, c.heads, head, 1 / math.sqrt(head)),
        "gelu": (rows * c.intermediate,),
        "qkv": (rows, 3 * c.hidden, c.hidden),
        "out": (rows, c.hidden, c.hidden),
        "up": (rows, c.intermediate, c.hidden),
        "down": (rows, c.hidden, c.intermediate),
    }

    def linear(n: int) -> tuple[int, int, int]:
        return math.ceil(n / 64), math.ceil(rows / 32), 1

    norm = (rows, 1, 1)
    groups = math.ceil(rows * c.intermediate / 256)
    x = min(groups, 65535)
    layer = [
        ("linear", linear(3 * c.hidden)),
        ("attention", (tokens, c.heads, batch)),
        ("linear", linear(c.hidden)),
        ("residual_norm", norm),
        ("linear", linear(c.intermediate)),
        ("gelu", (x, math.ceil(groups / x), 1)),
        ("linear", linear(c.hidden)),
        ("residual_norm", norm),
    ]
    plan = [("embed", (math.ceil(c.hidden / 64), rows, 1)), ("norm", norm)]
    return params, plan + layer * c.layers


@pytest.mark.parametrize("config", [TINY, BertConfig.from_dict(MINILM)])
@pytest.mark.parametrize(("batch", "tokens"), [(1, 1), (3, 9), (32, 256), (170, 512)])
def test_params_and_dispatches_are_the_handwritten_ones(
    config: BertConfig, batch: int, tokens: int
) -> None:
    params, plan = handwritten(config, batch, tokens)
    got = bert_plan.params(config, batch, tokens)
    assert got == params
    assert [type(v) for p in got.values() for v in p] == [
        type(v) for p in params.values() for v in p
    ]
    assert bert_plan.dispatches(config, batch, tokens) == plan


def test_gelu_groups_stay_within_the_limit() -> None:
    assert bert_plan.gelu_groups(1) == (1, 1, 1)
    assert bert_plan.gelu_groups(65535 * 256) == (65535, 1, 1)
    assert bert_plan.gelu_groups(65535 * 256 + 1) == (65535, 2, 1)


def test_passes_and_growth() -> None:
    assert bert_plan.passes(4, 3, 7) == [slice(0, 2), slice(2, 4)]
    assert bert_plan.passes(3, 100, 7) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # one at least
    assert bert_plan.passes(5, 0, 7) == bert_plan.passes(0, 3, 7) == []
    assert bert_plan.passes(5, 2, 1000) == [slice(0, 500)]
    assert bert_plan.grown(10, 0, 100) == 10
    assert bert_plan.grown(12, 10, 100) == 20
    assert bert_plan.grown(90, 60, 100) == 100
