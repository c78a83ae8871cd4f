"""A Flax linen BERT with Hugging Face `BertModel` / `BertForMaskedLM` semantics.

Post-LayerNorm encoder, absolute position and token-type embeddings, exact (erf) GELU, an MLM head whose
decoder is tied to the word embeddings, a tanh pooler and an optional sequence-classification head.

HomoDistil masks (see `jaxdistill.pruning`) are an explicit argument of the forward pass:
`{"hidden": [d], "attn": [N, H, d_h], "ffn": [N, F]}` of 0/1 values. They gate the global hidden dimension
(embeddings, every residual write, every LayerNorm, the pooler and the MLM transform), each head dimension
of Q/K/V, and each FFN neuron. LayerNorm statistics are computed over kept hidden dimensions only, and the
attention scale stays `1/sqrt(attention_scale_dim)`, so a masked model and its compacted dense copy are the
same function.

Every parameter carries logical axis names (`vocab`, `embed`, `embed_out`, `heads`, `kv`, `mlp`, `pos`,
`types`, `classes`); `jaxdistill.sharding` maps them to mesh axes, and `jaxdistill.structures` derives from
them which parameter axes each mask removes (for importance scores, parameter multipliers, compaction,
counts and FLOPs). The gating in this module acts on activations (projection outputs, residual writes,
LayerNorm statistics), so it is written out here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jaxdistill.errors import ConfigError
from jaxdistill.models.layer_stack import REMAT_POLICIES, checkpoint_policy, remat_policy_name, scan_layers

Array = jax.Array
Masks = Mapping[str, Array]

# Keys of a Hugging Face config.json that BertConfig understands.
_HF_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
)
# jaxdistill-only fields, written to config.json under these names when a model is not standard BERT.
_EXTRA_FIELDS = ("head_dim", "attention_scale_dim")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters with Hugging Face field names, plus jaxdistill's model options.

    `head_dim` (default `hidden_size // num_attention_heads`) and `attention_scale_dim` (default
    `head_dim`) let a compacted HomoDistil student keep fewer dimensions per head than
    hidden/heads while its attention scale stays that of the teacher; such a model is not expressible as a
    standard HF `BertConfig` and is exported in jaxdistill's own format.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    head_dim: Optional[int] = None
    attention_scale_dim: Optional[int] = None
    # Heads and options that are not part of the HF config proper.
    with_mlm_head: bool = True
    with_pooler: bool = True
    num_labels: int = 0  # > 0 adds a classification head on the pooled output (1 = regression)
    dtype: str = "float32"  # compute dtype of activations (e.g. "bfloat16" on accelerators)
    param_dtype: str = "float32"
    # Remat policy of every encoder layer: False/"none", True/"full" (jax.checkpoint each layer) or
    # "dots_saveable" (keep matmul outputs, recompute the rest); see `models.layer_stack`.
    remat: Any = False
    scan_layers: bool = False  # run the layers under a scan (same `layer_{i}` parameters; faster compiles)

    def __post_init__(self):
        problems = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.head_dim is None and self.num_attention_heads > 0 and \
                self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; set head_dim explicitly or change one of them")
        if remat_policy_name(self.remat) not in REMAT_POLICIES:
            problems.append(f"remat {self.remat!r} is not a remat policy; use one of {REMAT_POLICIES} "
                            "(or True = 'full', False = 'none')")
        if self.hidden_act not in ACTIVATIONS:
            problems.append(f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        if problems:
            raise ConfigError("invalid BertConfig: " + "; ".join(problems))

    @property
    def attention_head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def scale_dim(self) -> int:
        return self.attention_scale_dim if self.attention_scale_dim is not None else self.attention_head_size

    @property
    def is_standard(self) -> bool:
        """True when a plain Hugging Face BertConfig describes this model exactly."""
        return (self.attention_head_size * self.num_attention_heads == self.hidden_size
                and self.scale_dim == self.hidden_size // self.num_attention_heads)

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], **overrides) -> "BertConfig":
        """Builds a config from a Hugging Face `config.json` dict (unknown keys are ignored)."""
        kwargs = {k: d[k] for k in _HF_FIELDS + _EXTRA_FIELDS if k in d and d[k] is not None}
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(
                f"position_embedding_type {d['position_embedding_type']!r} is not supported; "
                "jaxdistill's BERT uses absolute position embeddings")
        if "num_labels" not in overrides and "id2label" in d and d.get("architectures") and \
                any("SequenceClassification" in a for a in d["architectures"]):
            kwargs["num_labels"] = len(d["id2label"])
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_dict(self) -> dict:
        """The Hugging Face `config.json` fields (plus head_dim/attention_scale_dim when non-standard)."""
        d = {k: getattr(self, k) for k in _HF_FIELDS}
        d.update(model_type="bert", position_embedding_type="absolute")
        if not self.is_standard:
            d.update(head_dim=self.attention_head_size, attention_scale_dim=self.scale_dim)
        if self.num_labels:
            d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        return d

    @property
    def remat_policy(self) -> str:
        """The layers' remat policy: "none", "full" or "dots_saveable"."""
        return remat_policy_name(self.remat)

    def replace(self, **changes) -> "BertConfig":
        return dataclasses.replace(self, **changes)


def _gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS = {
    "gelu": _gelu_exact,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


@struct.dataclass
class BertOutput:
    """What `Bert.__call__` returns. Shapes: B batch, L length, d hidden, H heads, d_h head dim, V vocab.

    last_hidden_state: [B, L, d]. pooled: [B, d] or None. mlm_logits: [B, L, V] or None.
    logits: [B, num_labels] or None. With `output_intermediates=True`, tuples over layers:
    hidden_states (N+1 entries, embedding output first) [B, L, d]; attention_scores (pre-softmax,
    scaled, plus the additive key mask) and attention_probs (before dropout) [B, H, L, L];
    queries, keys, values [B, H, L, d_h]. They are None otherwise.
    mlm_predictor: with `mlm_logits=False`, the inputs of the MLM head (`MlmPredictor`) in place of the
    logits, for losses that compute them a block of tokens at a time (`jaxdistill.vocab_chunks`).
    """

    last_hidden_state: Array
    pooled: Optional[Array] = None
    mlm_logits: Optional[Array] = None
    logits: Optional[Array] = None
    hidden_states: Optional[tuple] = None
    attention_scores: Optional[tuple] = None
    attention_probs: Optional[tuple] = None
    queries: Optional[tuple] = None
    keys: Optional[tuple] = None
    values: Optional[tuple] = None
    mlm_predictor: Optional["MlmPredictor"] = None


def _dense_init(config: BertConfig, names):
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), names)


def _zeros(names):
    return nn.with_logical_partitioning(nn.initializers.zeros, names)


def _ones(names):
    return nn.with_logical_partitioning(nn.initializers.ones, names)


def _constrain(x: Array, names) -> Array:
    """Sharding hint on an activation by logical names; a no-op without logical axis rules."""
    return nn.with_logical_constraint(x, names)


class HeadsDense(nn.Module):
    """`nn.DenseGeneral`'s parameters ("kernel" of shape [contracted dims..., features...], "bias" [features...])
    and arithmetic (dtype promotion, one `lax.dot_general`, bias added), with the kernel initialised at its full
    rank.

    nn.DenseGeneral calls its initialiser with the kernel flattened to rank 2 and unboxes the result before
    reshaping it; when a mesh is in context (as it is while the step is traced, so the activation constraints
    apply), unboxing applies the kernel's rank-3 logical constraint to that rank-2 array and fails. Flax runs
    the initialiser under `eval_shape` on every apply to check parameter shapes, so this happens in the step,
    not only at init. The initialisers here draw the same numbers for the full shape as for the flattened one.
    """

    config: BertConfig
    features: Tuple[int, ...]
    axis: Tuple[int, ...]
    kernel_axes: Tuple[str, ...]
    bias_axes: Tuple[str, ...]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        axis = tuple(sorted(a % x.ndim for a in self.axis))
        features = tuple(self.features)
        kernel_shape = tuple(x.shape[a] for a in axis) + features
        kernel = self.param("kernel", _dense_init(cfg, self.kernel_axes), kernel_shape, jnp.dtype(cfg.param_dtype))
        bias = self.param("bias", _zeros(self.bias_axes), features, jnp.dtype(cfg.param_dtype))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=jnp.dtype(cfg.dtype))
        out = jax.lax.dot_general(x, kernel, ((axis, tuple(range(len(axis)))), ((), ())))
        return out + jnp.reshape(bias, (1,) * (x.ndim - len(axis)) + features)


class LayerNorm(nn.Module):
    """LayerNorm whose statistics run over kept dimensions only when `mask` ([d], 0/1) is given.

    Without a mask it is the ordinary LayerNorm (mean and biased variance over the last axis, in float32).
    Pruned dimensions of the output are zero, so residual streams stay zero where the hidden mask is zero.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
        cfg = self.config
        d = x.shape[-1]
        scale = self.param("scale", _ones(("embed",)), (d,), jnp.dtype(cfg.param_dtype))
        bias = self.param("bias", _zeros(("embed",)), (d,), jnp.dtype(cfg.param_dtype))
        xf = x.astype(jnp.float32)
        # Both paths multiply by a float32 reciprocal: XLA rewrites `x / constant` as `x * (1 / constant)`
        # under jit, so dividing by a traced count would make all-ones masks differ from no mask in the last bit.
        if mask is None:
            inv = 1.0 / jnp.float32(d)
            mean = jnp.sum(xf, axis=-1, keepdims=True) * inv
            centered = xf - mean
            var = jnp.sum(jnp.square(centered), axis=-1, keepdims=True) * inv
        else:
            m = mask.astype(jnp.float32)
            inv = 1.0 / jnp.maximum(jnp.sum(m), 1.0)
            mean = jnp.sum(xf * m, axis=-1, keepdims=True) * inv
            centered = (xf - mean) * m
            var = jnp.sum(jnp.square(centered), axis=-1, keepdims=True) * inv
        y = centered * jax.lax.rsqrt(var + cfg.layer_norm_eps) * scale + bias
        if mask is not None:
            y = y * m
        return y.astype(jnp.dtype(cfg.dtype))


def _gate(x: Array, mask: Optional[Array]) -> Array:
    return x if mask is None else x * mask.astype(x.dtype)


class Embeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, hidden_mask, deterministic):
        cfg = self.config
        pdt = jnp.dtype(cfg.param_dtype)
        emb = nn.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=pdt, dtype=jnp.dtype(cfg.dtype),
                       embedding_init=_dense_init(cfg, ("vocab", "embed")), name="word_embeddings")
        pos = self.param("position_embeddings", _dense_init(cfg, ("pos", "embed")),
                         (cfg.max_position_embeddings, cfg.hidden_size), pdt)
        types = self.param("token_type_embeddings", _dense_init(cfg, ("types", "embed")),
                           (cfg.type_vocab_size, cfg.hidden_size), pdt)
        length = input_ids.shape[1]
        x = emb(input_ids) + pos[None, :length].astype(cfg.dtype) + jnp.take(types, token_type_ids, axis=0).astype(cfg.dtype)
        x = LayerNorm(cfg, name="LayerNorm")(x, hidden_mask)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return x, emb


class SelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, key_bias, hidden_mask, head_mask, deterministic):
        """x: [B, L, d]; key_bias: [B, 1, 1, L] additive; head_mask: [H, d_h] or None."""
        cfg = self.config
        H, dh = cfg.num_attention_heads, cfg.attention_head_size
        dt = jnp.dtype(cfg.dtype)

        def proj(name):
            y = HeadsDense(cfg, (H, dh), (-1,), ("embed", "heads", "kv"), ("heads", "kv"), name=name)(x)
            return _gate(y, head_mask)  # [B, L, H, d_h]

        q, k, v = proj("query"), proj("key"), proj("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores / jnp.sqrt(jnp.float32(cfg.scale_dim)) + key_bias
        probs = jax.nn.softmax(scores, axis=-1)
        dropped = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(dt), v)
        out = HeadsDense(cfg, (cfg.hidden_size,), (-2, -1), ("heads", "kv", "embed"), ("embed",), name="output")(ctx)
        out = _gate(out, hidden_mask)
        out = nn.Dropout(cfg.hidden_dropout_prob)(out, deterministic=deterministic)
        out = LayerNorm(cfg, name="LayerNorm")(out + x, hidden_mask)
        t = lambda a: jnp.transpose(a, (0, 2, 1, 3))  # [B, L, H, d_h] -> [B, H, L, d_h]
        return out, dict(attention_scores=scores, attention_probs=probs, queries=t(q), keys=t(k), values=t(v))


class Layer(nn.Module):
    """One post-LN encoder layer. Returns (hidden [B, L, d], intermediates dict)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x, key_bias, hidden_mask, head_mask, ffn_mask, deterministic):
        cfg = self.config
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        x = _constrain(x, ("batch", "length", "embed"))
        h, inter = SelfAttention(cfg, name="attention")(x, key_bias, hidden_mask, head_mask, deterministic)
        f = nn.Dense(cfg.intermediate_size, dtype=dt, param_dtype=pdt, name="intermediate",
                     kernel_init=_dense_init(cfg, ("embed", "mlp")), bias_init=_zeros(("mlp",)))(h)
        f = _gate(ACTIVATIONS[cfg.hidden_act](f), ffn_mask)
        f = _constrain(f, ("batch", "length", "mlp"))
        f = nn.Dense(cfg.hidden_size, dtype=dt, param_dtype=pdt, name="output",
                     kernel_init=_dense_init(cfg, ("mlp", "embed")), bias_init=_zeros(("embed",)))(f)
        f = _gate(f, hidden_mask)
        f = nn.Dropout(cfg.hidden_dropout_prob)(f, deterministic=deterministic)
        out = LayerNorm(cfg, name="LayerNorm")(f + h, hidden_mask)
        return out, inter


class MlmHead(nn.Module):
    """The MLM head: dense d -> d, activation, LayerNorm (statistics over kept hidden dims), then the decoder
    tied to the word embeddings plus an output bias. Parameters: "mlm_transform" {"kernel" [d, d], "bias"
    [d]}, "mlm_LayerNorm" {"scale", "bias"} [d], "mlm_bias" [V] (inside `Bert` they sit at the top of its
    parameter tree).

    `__call__(hidden [..., d], word_embeddings [V, d], hidden_mask [d] or None) -> logits [..., V]`.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, hidden, word_embeddings, hidden_mask=None):
        cfg = self.config
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        t = nn.Dense(cfg.hidden_size, dtype=dt, param_dtype=pdt, name="mlm_transform",
                     kernel_init=_dense_init(cfg, ("embed", "embed_out")), bias_init=_zeros(("embed_out",)))(hidden)
        t = LayerNorm(cfg, name="mlm_LayerNorm")(ACTIVATIONS[cfg.hidden_act](t), hidden_mask)
        out_bias = self.param("mlm_bias", _zeros(("vocab",)), (cfg.vocab_size,), pdt)
        return jnp.dot(t.astype(dt), jnp.asarray(word_embeddings).astype(dt).T) + out_bias.astype(dt)


MLM_HEAD_KEYS = ("mlm_transform", "mlm_LayerNorm", "mlm_bias")


@struct.dataclass
class MlmPredictor:
    """What the MLM head needs to turn hidden states into logits, without computing them.

    hidden: [B, L, d] the last hidden state. head: {"mlm_transform", "mlm_LayerNorm", "mlm_bias"} (the
    `MlmHead` parameters). word_embeddings: [V, d] (the tied decoder). hidden_mask: [d] or None (HomoDistil).
    `logits(hidden)` applies the head to any [..., d] slice of hidden states -> [..., V].
    """

    hidden: Array
    head: Any
    word_embeddings: Array
    hidden_mask: Optional[Array]
    config: BertConfig = struct.field(pytree_node=False)

    def logits(self, hidden: Array) -> Array:
        head = MlmHead(self.config, parent=None)
        return head.apply({"params": self.head}, hidden, self.word_embeddings, self.hidden_mask)


class Bert(nn.Module):
    """BERT encoder with optional MLM, pooler and classification heads. See `BertOutput` for what it returns.

    Args of `__call__`:
      input_ids: [B, L] int. attention_mask: [B, L] 1 for real tokens, 0 for padding (default all ones).
      token_type_ids: [B, L] (default zeros). masks: HomoDistil masks (see module doc) or None.
      deterministic: disables dropout (needs a "dropout" rng when False).
      output_intermediates: also return per-layer hidden states, attention scores/probs and Q/K/V.
      mlm_logits: False returns the MLM head's inputs (`BertOutput.mlm_predictor`) instead of the [B, L, V]
        logits, for losses computed a block of tokens at a time (parameters are created either way).
    """

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, masks: Optional[Masks] = None,
                 deterministic: bool = True, output_intermediates: bool = False,
                 mlm_logits: bool = True) -> BertOutput:
        cfg = self.config
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        masks = masks or {}
        hidden_mask = masks.get("hidden")
        attn_masks, ffn_masks = masks.get("attn"), masks.get("ffn")

        x, word_embed = Embeddings(cfg, name="embeddings")(input_ids, token_type_ids, hidden_mask, deterministic)
        embedded = x
        key_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        key_bias = key_bias.astype(jnp.float32)

        layer_args = (key_bias, hidden_mask, attn_masks, ffn_masks, deterministic, output_intermediates)
        if cfg.scan_layers and not self.is_initializing():
            x, layer_outputs, per_layer = self.scanned_layers(x, *layer_args)
        else:
            x, layer_outputs, per_layer = self.unrolled_layers(x, *layer_args)
        hidden_states = [embedded] + layer_outputs if output_intermediates else None

        pooled = logits = None
        predictor = None
        if cfg.with_pooler:
            pooled = nn.Dense(cfg.hidden_size, dtype=dt, param_dtype=pdt, name="pooler",
                              kernel_init=_dense_init(cfg, ("embed", "embed_out")),
                              bias_init=_zeros(("embed_out",)))(x[:, 0])
            pooled = _gate(jnp.tanh(pooled), hidden_mask)
        if cfg.with_mlm_head:
            head = MlmHead(cfg, name="mlm_head")
            nn.share_scope(self, head)  # its parameters sit at the top of Bert's tree, as in Hugging Face's
            if mlm_logits or self.is_initializing():
                mlm_logits = _constrain(head(x, word_embed.embedding, hidden_mask), ("batch", "length", "vocab"))
            else:
                mlm_logits = None
                predictor = MlmPredictor(hidden=x, head={k: self.variables["params"][k] for k in MLM_HEAD_KEYS},
                                         word_embeddings=word_embed.embedding, hidden_mask=hidden_mask, config=cfg)
        else:
            mlm_logits = None
        if cfg.num_labels:
            if pooled is None:
                raise ConfigError("a classification head (num_labels > 0) needs with_pooler=True")
            h = nn.Dropout(cfg.hidden_dropout_prob)(pooled, deterministic=deterministic)
            logits = nn.Dense(cfg.num_labels, dtype=dt, param_dtype=pdt, name="classifier",
                              kernel_init=_dense_init(cfg, ("embed", "classes")),
                              bias_init=_zeros(("classes",)))(h)

        out = BertOutput(last_hidden_state=x, pooled=pooled, mlm_logits=mlm_logits, logits=logits,
                         mlm_predictor=predictor)
        if output_intermediates:
            gather = lambda key: tuple(d[key] for d in per_layer)
            out = out.replace(hidden_states=tuple(hidden_states),
                              attention_scores=gather("attention_scores"),
                              attention_probs=gather("attention_probs"),
                              queries=gather("queries"), keys=gather("keys"), values=gather("values"))
        return out

    def unrolled_layers(self, x, key_bias, hidden_mask, attn_masks, ffn_masks, deterministic, keep):
        """The layers as submodules `layer_{i}`, each under the config's remat policy.
        Returns (x [B, L, d], N layer outputs, N intermediates dicts)."""
        cfg = self.config
        policy = cfg.remat_policy
        layer_cls = Layer if policy == "none" else nn.remat(Layer, static_argnums=(6,),
                                                            policy=checkpoint_policy(policy))
        outputs, per_layer = [], []
        for i in range(cfg.num_hidden_layers):
            x, inter = layer_cls(cfg, name=f"layer_{i}")(
                x, key_bias, hidden_mask, None if attn_masks is None else attn_masks[i],
                None if ffn_masks is None else ffn_masks[i], deterministic)
            outputs.append(x)
            per_layer.append(inter)
        return x, outputs, per_layer

    def scanned_layers(self, x, key_bias, hidden_mask, attn_masks, ffn_masks, deterministic, keep):
        """The same layers under a scan over their stacked `layer_{i}` parameters (see `models.layer_stack`).
        Dropout draws differ from the unrolled path (one key per layer, folded from this module's)."""
        cfg = self.config
        params = self.variables["params"]
        layer_params = [params[f"layer_{i}"] for i in range(cfg.num_hidden_layers)]
        rng = None if deterministic else self.make_rng("dropout")

        def layer_fn(p, h, masks_i, rng_i):
            head_mask, ffn_mask = masks_i
            rngs = {} if rng_i is None else {"dropout": rng_i}
            return Layer(cfg, parent=None).apply({"params": p}, h, key_bias, hidden_mask, head_mask, ffn_mask,
                                                 deterministic, rngs=rngs)

        return scan_layers(layer_fn, layer_params, x, (attn_masks, ffn_masks), rng, cfg.remat_policy, keep)


def init_params(config: BertConfig, rng: Array, seq_len: int = 8, unbox: bool = True):
    """Random parameters for `config` (plain arrays; `unbox=False` keeps the logical-axis boxes)."""
    ids = jnp.zeros((1, min(seq_len, config.max_position_embeddings)), jnp.int32)
    variables = Bert(config).init({"params": rng}, ids)
    params = variables["params"]
    return nn.meta.unbox(params) if unbox else params


def logical_axes(config: BertConfig):
    """The pytree of logical axis names (PartitionSpecs) matching `init_params(config)`."""
    ids = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(lambda r: Bert(config).init({"params": r}, ids)["params"], jax.random.key(0))
    return nn.get_partition_spec(boxed)
