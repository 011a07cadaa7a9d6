"""A tiny BERT and a word-level tokenizer built from configs (nothing downloads)."""

from __future__ import annotations

import torch

WORDS = ["a", "red", "apple", "two", "cats", "on", "the", "mat"]


def tiny_bert():
    """A 2-layer BertModel of width 24 (eval mode) and a fast tokenizer over :data:`WORDS` (limit 6 tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]")
    tokenizer.model_max_length = 6
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=20, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    return BertModel(config).eval(), tokenizer
