"""A tiny BERT cross-encoder (``BertForSequenceClassification``, one label), generated with
transformers in a second: two layers, hidden size 32, seeded random weights, and a WordPiece
``tokenizer.json`` built with ``tokenizers`` from a small vocab (every ASCII letter and digit
as a word start and a ``##`` piece, so any English text tokenizes without [UNK]).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

WORDS = (
    "the a of and to in is it that was for on are with as at be this from or by cat kitten "
    "sits sitting mat dog runs park stock market price shares rise fall weather rain sun"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return [*SPECIAL, *chars, *(f"##{c}" for c in chars), *WORDS]


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = vocab()
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = words.index("[CLS]"), words.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BERT's
    )
    fast.save_pretrained(str(folder))


def write_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """Save the model, its config (``architectures: ["BertForSequenceClassification"]``,
    one label) and its tokenizer to ``folder``, as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=len(vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
        initializer_range=0.3,  # spread the scores: the default 0.02 makes them all ~0
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(str(folder))
    write_tokenizer(folder)
    return folder


def reference_scores(folder: Path, query: str, documents: list[str]) -> list[float]:
    """The logits transformers computes itself for (query, document) pairs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    pairs = tok(
        [query] * len(documents), documents, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        logits = model(**pairs).logits
    return [float(x) for x in logits[:, 0]]
