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


def tiny_clip():
    """A CLIPModel with 2-layer towers of width 32 (32x32 images, joint width 16) and the word-level
    tokenizer of :func:`tiny_bert` (eval mode)."""
    from transformers import CLIPConfig, CLIPModel

    _, tokenizer = tiny_bert()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "vocab_size": 20,
            "max_position_embeddings": 16,
            "eos_token_id": 2,
            "bos_token_id": 2,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    return CLIPModel(config).eval(), tokenizer
