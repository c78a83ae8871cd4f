"""The Distilled BiLSTM student (Tang et al. 2019) as a Flax module, with its own save format.

    BiLSTM(config).apply({"params": p}, input_ids [B, L], attention_mask [B, L]) -> BertOutput(logits [B, C])

word embeddings [V, E] -> one bidirectional LSTM layer (H units per direction; padding ignored through the
sequence lengths) -> the forward state after the last real token and the backward state after the first,
concatenated [B, 2H] -> ReLU dense layer [B, D] -> classifier [B, C]. It reads the teacher's tokenizer
([CLS] and [SEP] are ordinary tokens to it). The call takes the same arguments as `Bert` (token types, masks,
dropout and intermediates are accepted and unused) so the distillation step drives either student.

Embeddings: "teacher" initialises them from the teacher's word embeddings [V, d_t] through a projection onto
their top-E principal directions (E <= d_t; extra columns, when E > d_t, are small random values), "random"
from N(0, 0.1^2) (assumed scale). Saved as a directory: `model.safetensors` (the flattened params, keys joined
by "/"), `config.json` (`model_type` "jaxdistill_bilstm", the `BiLSTMConfig` fields, `id2label`) and the
teacher's tokenizer files; `load` reads it back and `jaxdistill evaluate --model DIR` scores it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.errors import CheckpointError, ConfigError
from jaxdistill.models.bert import BertOutput

MODEL_TYPE = "jaxdistill_bilstm"
EMBEDDING_INITS = ("teacher", "random")


@dataclasses.dataclass(frozen=True)
class BiLSTMConfig:
    """Sizes of the BiLSTM student. vocab_size: the teacher tokenizer's rows; embedding_size E; hidden_size H
    (per direction); dense_size D (the ReLU layer); num_labels C; embeddings: "teacher" or "random"."""

    vocab_size: int
    num_labels: int
    embedding_size: int = 300
    hidden_size: int = 150
    dense_size: int = 200
    embeddings: str = "teacher"
    dtype: str = "float32"

    def __post_init__(self):
        if self.embeddings not in EMBEDDING_INITS:
            raise ConfigError(f"student.bilstm.embeddings={self.embeddings!r} is not one of {EMBEDDING_INITS}")
        for name in ("vocab_size", "num_labels", "embedding_size", "hidden_size", "dense_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"student.bilstm.{name}={getattr(self, name)} must be positive")

    def replace(self, **changes) -> "BiLSTMConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class BiLSTM(nn.Module):
    """See the module docstring."""

    config: BiLSTMConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, masks=None, deterministic: bool = True,
                 output_intermediates: bool = False, mlm_logits: bool = True) -> BertOutput:
        # masks and mlm_logits are accepted for Bert's call signature (the engine calls both alike); no MLM head here
        c = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        lengths = jnp.sum(attention_mask, axis=-1).astype(jnp.int32)
        x = nn.Embed(c.vocab_size, c.embedding_size, embedding_init=nn.initializers.normal(0.1),
                     name="embeddings")(input_ids)
        forward = nn.RNN(nn.OptimizedLSTMCell(c.hidden_size, name="forward_lstm"), return_carry=True)
        backward = nn.RNN(nn.OptimizedLSTMCell(c.hidden_size, name="backward_lstm"), return_carry=True, reverse=True,
                          keep_order=True)
        (_, h_forward), _ = forward(x, seq_lengths=lengths)
        (_, h_backward), _ = backward(x, seq_lengths=lengths)
        features = jnp.concatenate([h_forward, h_backward], axis=-1)  # [B, 2H]
        hidden = nn.relu(nn.Dense(c.dense_size, name="dense")(features))  # [B, D]
        logits = nn.Dense(c.num_labels, name="classifier")(hidden)  # [B, C]
        return BertOutput(last_hidden_state=hidden, logits=logits)


def config_from_params(params, embeddings: str = "teacher") -> BiLSTMConfig:
    """The `BiLSTMConfig` whose sizes are those of a BiLSTM student's `params` (a checkpoint's)."""
    vocab_size, embedding_size = np.shape(params["embeddings"]["embedding"])
    two_h, dense_size = np.shape(params["dense"]["kernel"])
    return BiLSTMConfig(vocab_size=int(vocab_size), num_labels=int(np.shape(params["classifier"]["kernel"])[1]),
                        embedding_size=int(embedding_size), hidden_size=int(two_h) // 2,
                        dense_size=int(dense_size), embeddings=str(embeddings))


def forward_flops(config: BiLSTMConfig, seq_len: int) -> float:
    """Approximate FLOPs of one example's forward: 2 directions x 4 gates x 2(E + H)H per token, + the head."""
    lstm = 2 * 4 * 2 * (config.embedding_size + config.hidden_size) * config.hidden_size * seq_len
    head = 2 * (2 * config.hidden_size * config.dense_size + config.dense_size * config.num_labels)
    return float(lstm + head)


def projected_embeddings(teacher_embeddings: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """[V, size] float32: the teacher's word embeddings [V, d_t] projected onto their top-`size` principal
    directions (centred), padded with N(0, 0.01^2) columns when size > d_t."""
    e = np.asarray(teacher_embeddings, np.float64)
    centred = e - e.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt [d_t, d_t], rows by decreasing variance
    k = min(size, vt.shape[0])
    out = centred @ vt[:k].T
    if size > k:
        extra = np.random.default_rng(seed).normal(0.0, 0.01, (e.shape[0], size - k))
        out = np.concatenate([out, extra], axis=1)
    return out.astype(np.float32)


def init_params(config: BiLSTMConfig, rng, teacher_embeddings: Optional[np.ndarray] = None,
                seq_len: int = 8) -> Dict[str, Any]:
    """Fresh host float32 params; the embedding table from `teacher_embeddings` when config.embeddings is
    "teacher" (then they are required and must have config.vocab_size rows)."""
    ids = jnp.ones((1, seq_len), jnp.int32)
    params = jax.tree.map(np.asarray, BiLSTM(config).init(rng, ids, jnp.ones_like(ids))["params"])
    if config.embeddings == "teacher":
        if teacher_embeddings is None or np.shape(teacher_embeddings)[0] != config.vocab_size:
            raise ConfigError("student.bilstm.embeddings='teacher' needs the teacher's word embeddings with "
                              f"{config.vocab_size} rows")
        params["embeddings"]["embedding"] = projected_embeddings(teacher_embeddings, config.embedding_size)
    return params


def flatten(params: Dict[str, Any], prefix: str = "") -> Dict[str, np.ndarray]:
    """{"a/b/c": array} of a nested params dict."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = np.ascontiguousarray(np.asarray(value, np.float32))
    return flat


def unflatten(flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
    tree: Dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save(config: BiLSTMConfig, params: Dict[str, Any], out_dir: str, tokenizer_from: Optional[str],
         label_names: Sequence[str] = (), metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Writes the student to `out_dir` (see the module docstring; published whole, as `hf.write_files`).
    Returns {"format": "bilstm", "params": parameter count}."""
    from jaxdistill.models import hf
    names = list(label_names) or [f"LABEL_{i}" for i in range(config.num_labels)]
    cfg = dict(config.to_dict(), model_type=MODEL_TYPE, id2label={str(i): str(n) for i, n in enumerate(names)},
               jaxdistill=dict(metadata or {}))
    tensors = flatten(params)
    hf.write_files(out_dir, cfg, tensors, tokenizer_from)
    return {"format": "bilstm", "params": int(sum(v.size for v in tensors.values()))}


def is_bilstm_dir(directory: str) -> bool:
    """Whether `directory` holds a saved BiLSTM student."""
    path = os.path.join(str(directory), "config.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return json.load(f).get("model_type") == MODEL_TYPE


def load(directory: str) -> Tuple[BiLSTMConfig, Dict[str, Any], list]:
    """(config, params, label names) of a saved BiLSTM student."""
    from safetensors.numpy import load_file
    if not is_bilstm_dir(directory):
        raise CheckpointError(f"{directory!r} is not a saved BiLSTM student (config.json model_type "
                              f"{MODEL_TYPE!r})")
    with open(os.path.join(directory, "config.json")) as f:
        raw = json.load(f)
    fields = {f.name for f in dataclasses.fields(BiLSTMConfig)}
    config = BiLSTMConfig(**{k: v for k, v in raw.items() if k in fields})
    labels = [raw.get("id2label", {}).get(str(i), f"LABEL_{i}") for i in range(config.num_labels)]
    return config, unflatten(load_file(os.path.join(directory, "model.safetensors"))), labels


def predict_logits(config: BiLSTMConfig, params, arrays: Dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """float32 [N, C] logits of the BiLSTM on `arrays` (input_ids, attention_mask [N, L]), in batches."""
    model = BiLSTM(config)
    forward = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, mask).logits.astype(jnp.float32))
    n = int(arrays["input_ids"].shape[0])
    out = []
    for start in range(0, n, batch_size):
        ids, mask = (np.asarray(arrays[k][start:start + batch_size]) for k in ("input_ids", "attention_mask"))
        pad = batch_size - ids.shape[0]  # one compiled shape: pad the last batch
        if pad:
            ids, mask = np.pad(ids, ((0, pad), (0, 0))), np.pad(mask, ((0, pad), (0, 0)), constant_values=1)
        out.append(np.asarray(forward(params, ids, mask))[:batch_size - pad])
    return np.concatenate(out) if out else np.zeros((0, config.num_labels), np.float32)
