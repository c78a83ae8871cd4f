"""Tiny model configs shared by tests (fast on 2 CPU cores)."""
from jaxdistill.models import BertConfig


def tiny_config(**overrides) -> BertConfig:
    kw = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12)
    kw.update(overrides)
    return BertConfig(**kw)
