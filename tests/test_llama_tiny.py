"""The llama.cpp backend on the tiny generated GGUF: real llama.cpp, milliseconds per call."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import ferrousforge as ff
from ferrousforge.errors import (
    Conflict,
    ContextOverflow,
    InsufficientMemory,
    InvalidFormat,
    InvalidModelFile,
    LimitExceeded,
)

from .threads import generate_in_threads
from .tinymodel import write_tiny_gguf

GREEDY = {"temperature": 0, "max_tokens": 24}
CHATML_HI = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    gguf = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")
    with ff.Engine(ff.Settings(home=home, threads=1)) as engine:
        engine.pull(str(gguf), name="tiny")
        yield engine


def test_manifest_from_header(engine: ff.Engine) -> None:
    m = engine.show("tiny")
    assert (m.format, m.managed, m.metadata.architecture) == ("gguf", False, "llama")
    assert m.metadata.context_size == 512
    assert m.metadata.chat_template and "im_start" in m.metadata.chat_template


def test_load_picks_llama_cpp_on_cpu(engine: ff.Engine) -> None:
    row = engine.load("tiny", device="cpu")  # a CUDA machine's default is cuda:0
    assert (row.backend, row.device, row.context_length) == ("llama_cpp", "cpu", 512)
    assert row.memory > engine.show("tiny").size


def test_other_load_options_reload_the_model(engine: ff.Engine) -> None:
    assert engine.load("tiny", num_ctx=256).context_length == 256  # llama.cpp pads to 256
    engine.generate("tiny", "the", raw=True, options=GREEDY)  # keeps the loaded options
    assert [m.context_length for m in engine.ps() if m.name == "tiny:latest"] == [256]
    with pytest.raises(ContextOverflow):
        engine.generate("tiny", "word " * 80, raw=True)
    assert engine.load("tiny", num_ctx=512).context_length == 512
    assert engine.generate("tiny", "word " * 80, raw=True, options=GREEDY).text


def test_raw_completion_is_deterministic_when_greedy(engine: ff.Engine) -> None:
    a = engine.generate("tiny", "the hot word", raw=True, options=GREEDY)
    b = engine.generate("tiny", "the hot word", raw=True, options=GREEDY)
    assert a.text and a.text == b.text
    assert a.stats.eval_count == 24 and a.done_reason == "length"
    prompt = len(engine.tokenize("tiny", "the hot word")) + 1  # BOS
    assert a.stats.prompt_eval_count + a.stats.prompt_cached == prompt  # evaluated or reused


def test_chat_uses_the_models_template(engine: ff.Engine) -> None:
    chat = engine.chat("tiny", [{"role": "user", "content": "hi"}], options=GREEDY)
    by_hand = engine.generate("tiny", CHATML_HI, raw=True, options=GREEDY)
    assert chat.text == by_hand.text
    prompt = len(engine.tokenize("tiny", CHATML_HI)) + 1
    assert chat.stats.prompt_eval_count + chat.stats.prompt_cached == prompt
    templated = engine.generate("tiny", "hi", options=GREEDY)  # Ollama's generate semantics
    assert templated.text == chat.text


def test_manifest_options_are_defaults_under_the_request(engine: ff.Engine) -> None:
    m = engine.show("tiny")
    engine.store.save(m.model_copy(update={"name": "tiny:greedy", "options": GREEDY}))
    greedy = engine.generate("tiny", "the hot word", raw=True, options=GREEDY)
    by_default = engine.generate("tiny:greedy", "the hot word", raw=True)
    assert (by_default.text, by_default.stats.eval_count) == (greedy.text, 24)
    hot = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": 7}
    assert engine.generate("tiny:greedy", "the hot word", raw=True, options=hot).text != greedy.text
    engine.store.rm("tiny:greedy")


def test_stream_matches_whole(engine: ff.Engine) -> None:
    whole = engine.generate("tiny", "you said", raw=True, options=GREEDY)
    chunks = list(engine.generate("tiny", "you said", raw=True, options=GREEDY, stream=True))
    assert len(chunks) > 5 and chunks[-1].done
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].stats is not None and chunks[-1].stats.eval_count == 24


def test_stop_sequence_cuts_before_it(engine: ff.Engine) -> None:
    full = engine.generate("tiny", "a word", raw=True, options=GREEDY).text
    stop = full[8:12]
    cut = engine.generate("tiny", "a word", raw=True, options=GREEDY | {"stop": [stop]})
    assert cut.text == full[: full.find(stop)]
    assert cut.done_reason == "stop"
    assert stop not in cut.text


def test_seed_makes_sampling_reproducible(engine: ff.Engine) -> None:
    opts = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "max_tokens": 32}
    a = engine.generate("tiny", "the", raw=True, options=opts | {"seed": 42}).text
    b = engine.generate("tiny", "the", raw=True, options=opts | {"seed": 42}).text
    others = {
        engine.generate("tiny", "the", raw=True, options=opts | {"seed": s}).text for s in (1, 2, 3)
    }
    assert a == b
    assert len(others | {a}) > 1


def test_embeddings_are_pooled_and_normalized(engine: ff.Engine) -> None:
    r = engine.embed("tiny", ["the hot word", "what is your time", "the hot word"])
    a, b, c = r.embeddings
    assert len(a) == 64
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-5)
    assert max(abs(x - y) for x, y in zip(a, c, strict=True)) < 1e-5  # batching jitter only
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) > 1e-2
    assert r.stats.prompt_eval_count > 6


@pytest.mark.parametrize("text", ["Hello the world", "  two  spaces", "héllo 日本 🙂\nnew"])
def test_tokenize_round_trip(engine: ff.Engine, text: str) -> None:
    ids = engine.tokenize("tiny", text)
    assert ids and all(isinstance(i, int) for i in ids)
    assert engine.detokenize("tiny", ids) == text


def test_prompt_longer_than_context_is_refused(engine: ff.Engine) -> None:
    with pytest.raises(ContextOverflow) as e:
        engine.generate("tiny", "word " * 600, raw=True)
    assert e.value.limit == 512 and e.value.tokens > 512
    assert f"{e.value.tokens} tokens" in str(e.value)


def test_embedding_truncation_is_explicit(engine: ff.Engine) -> None:
    long = "word " * 600
    assert len(engine.embed("tiny", long).embeddings[0]) == 64  # truncate=True: cut to fit
    with pytest.raises(ContextOverflow):
        engine.embed("tiny", long, truncate=False)


def test_memory_budget_refuses_a_real_model(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    with ff.Engine(ff.Settings(home=tmp_path / "home", max_memory=1 << 20)) as small:
        small.pull(str(gguf), name="tiny")
        with pytest.raises(InsufficientMemory) as e:
            small.generate("tiny", "the", raw=True)
        assert e.value.available == 1 << 20 and e.value.required > gguf.stat().st_size
        assert small.ps() == []


def test_corrupt_files_are_refused_and_engine_keeps_serving(
    engine: ff.Engine, tmp_path: Path
) -> None:
    good = Path(engine.show("tiny").path).read_bytes()
    cases = {
        "truncated.gguf": good[: len(good) // 2],
        "header.gguf": good[:40],
        "magic.gguf": b"GGML" + good[4:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InvalidModelFile):
            engine.pull(str(tmp_path / name))
    assert all(not m.name.startswith(("truncated", "header", "magic")) for m in engine.list())
    assert engine.generate("tiny", "the", raw=True, options=GREEDY).text


def test_eight_threads_on_one_model(engine: ff.Engine) -> None:
    prompts = [f"the {w}" for w in ("hot", "word", "time", "way", "one", "she", "if", "them")]
    expected = {p: engine.generate("tiny", p, raw=True, options=GREEDY).text for p in prompts}
    assert generate_in_threads(engine, "tiny", prompts, GREEDY) == expected


def test_closing_a_stream_stops_generation(engine: ff.Engine) -> None:
    stream = engine.generate(
        "tiny", "the", raw=True, stream=True, options={"temperature": 0, "max_tokens": 400}
    )
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert all(not c.done for c in first)
    after = engine.generate("tiny", "the", raw=True, options=GREEDY)
    assert after.stats.eval_count == 24


def test_formats_llama_cpp_refuses_are_a_400_not_a_crash(engine: ff.Engine) -> None:
    """llama.cpp returns a NULL sampler for a grammar it cannot parse; used unchecked, that
    killed the process (SIGSEGV). These schemas pass the limits and reach llama.cpp."""
    refused: list[dict[str, Any]] = [{"type": []}, {"type": "array", "items": {"type": []}}]
    for fmt in refused:
        with pytest.raises(InvalidFormat, match="refuses its grammar") as e:
            engine.generate("tiny", "the", raw=True, format=fmt, options=GREEDY)
        assert e.value.status == 400
    with pytest.raises(InvalidFormat, match="matches nothing"):  # refused before llama.cpp
        engine.generate("tiny", "the", raw=True, format={"enum": []})
    answer = engine.generate("tiny", "the", raw=True, format={"enum": ["yes", "no"]})
    assert json.loads(answer.text) in ("yes", "no")


def test_schema_strings_hold_no_raw_control_characters() -> None:
    """llama-cpp-python's converter allowed a raw newline inside a string: smollm2 wrote one
    into a forced tool call (LangChain's unicode test), and the call did not parse."""
    from ferrousforge.backends.llama_runtime import json_schema_to_gbnf

    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}
    grammar = json_schema_to_gbnf(json.dumps(schema)).splitlines()
    char = next(rule for rule in grammar if rule.startswith("char ::= "))
    assert char.startswith(r'char ::= [^"\\\x7F\x00-\x1F] |')  # as in llama.cpp's JSON_GBNF


def test_a_grammar_over_its_size_limit_is_refused(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    settings = ff.Settings(home=tmp_path / "home", threads=1, max_grammar_bytes=300)
    with ff.Engine(settings) as small:
        small.pull(str(gguf), name="tiny")
        props = {f"field{i}": {"type": "string"} for i in range(20)}
        with pytest.raises(LimitExceeded, match="max_grammar_bytes"):
            small.generate("tiny", "the", raw=True, format={"type": "object", "properties": props})
        assert small.generate("tiny", "the", raw=True, format={"type": "boolean"}).text


def test_a_smaller_num_ctx_is_served_by_the_loaded_context(engine: ff.Engine) -> None:
    engine.load("tiny", num_ctx=512)
    with pytest.raises(ContextOverflow) as e:  # the request holds itself to what it asked
        engine.generate("tiny", "word " * 80, raw=True, options={"num_ctx": 64})
    assert e.value.limit == 64
    assert [m.context_length for m in engine.ps() if m.name == "tiny:latest"] == [512]


def test_a_larger_num_ctx_reloads_only_an_idle_model(engine: ff.Engine) -> None:
    engine.load("tiny", num_ctx=256)
    stream = engine.generate("tiny", "the", raw=True, stream=True, options={"max_tokens": 200})
    next(stream)  # in use now
    with pytest.raises(Conflict, match="in use"):
        engine.generate("tiny", "the", raw=True, options={"num_ctx": 512, **GREEDY})
    stream.close()
    engine.generate("tiny", "the", raw=True, options={"num_ctx": 512, **GREEDY})
    assert [m.context_length for m in engine.ps() if m.name == "tiny:latest"] == [512]
