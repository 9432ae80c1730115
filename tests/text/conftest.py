"""A tiny randomly initialised BERT with the packaged MiniLM tokenizer (fast text-encoder tests)."""

import pytest
import torch


def tiny_bert(seed: int = 0, hidden: int = 16):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from medssl.text import default_model_path

    tok = AutoTokenizer.from_pretrained(str(default_model_path()), local_files_only=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    return BertModel(cfg), tok


@pytest.fixture
def tiny_text_encoder():
    from medssl.text import TextEncoder

    model, tok = tiny_bert()
    return TextEncoder("tiny-bert", model=model, tokenizer=tok, max_length=32)
