"""Prediction-layer losses over the vocabulary, computed a block of tokens at a time.

At the paper's scale the MLM logits dominate memory: [B, L, V] per model, plus their softmaxes, in the forward
and again in the backward pass. `prediction_terms` never builds them whole. It takes the models' MLM-head
inputs (`models.bert.MlmPredictor`: the last hidden state [B, L, d], the head's parameters, the tied word
embeddings [V, d] and the HomoDistil hidden mask [d] of the model's LayerNorm), cuts the sequence axis into
chunks of `chunk_length` positions (every row of the batch in each chunk, so a batch sharded over devices
stays sharded), and for each chunk applies both heads, the softmaxes and the per-position losses under
`jax.checkpoint`, inside a `lax.scan` that adds up each term's numerator. The backward pass recomputes one
chunk's logits at a time: at most one chunk of student and teacher logits [B, Lc, V] is alive at once.

Recomputing costs a third vocabulary matmul per chunk (forward, recomputed forward, two for the gradient,
plus the teacher's recomputed forward). When the caller knows the weights the terms enter the loss with,
`gradient_weights` fuses instead: each chunk's weighted gradient is taken in the same pass as its values
(`jax.vjp` inside the scan), accumulated for the head's parameters and kept per position for the hidden
states, and handed to autodiff through `gradient_carrier`, a scalar that is 0 in value and whose gradient is
the accumulated one. Matmuls per chunk: one forward and two for the gradient, as without chunking.

Reductions are those of `jaxdistill.losses` (soft_kl, soft_cross_entropy, logit_mse, mlm_cross_entropy):
a term's per-chunk sums are added over chunks, then divided by the count over the whole batch, so the
values and gradients equal the unchunked losses up to float32 summation order (tests: within 1e-5).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxdistill import losses as L
from jaxdistill import sharding as shard_lib
from jaxdistill.errors import ConfigError

Array = jax.Array

# Terms `prediction_terms` computes. "teacher_student_kl" is the engine's metric: KL at T = 1 over real
# tokens, without gradient.
TERMS = ("soft", "soft_ce", "logit_mse", "mlm", "teacher_student_kl")
NEEDS_TEACHER = ("soft", "soft_ce", "logit_mse", "teacher_student_kl")
DIFFERENTIABLE = ("soft", "soft_ce", "logit_mse", "mlm")
# Key of the fused path's zero-valued scalar that carries the weighted gradient (see the module doc).
GRADIENT_CARRIER = "gradient_carrier"


def chunk_length(batch_size: int, seq_len: int, chunk_tokens: int) -> int:
    """Positions per chunk: `chunk_tokens // batch_size` (at least 1), at most `seq_len`; 0 = one chunk."""
    if chunk_tokens <= 0:
        return seq_len
    return max(1, min(seq_len, chunk_tokens // max(batch_size, 1)))


def check_chunk_tokens(value, field: str = "train.vocab_chunk_tokens") -> int:
    """`value` as an int >= 0, or ConfigError naming `field`."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or n != value:
        raise ConfigError(f"{field} must be an integer >= 0 (tokens per vocabulary chunk; 0 = the whole batch at "
                          f"once), got {value!r}; e.g. --config.{field}=4096")
    return n


def split_positions(x: Array, num_chunks: int, length: int, fill) -> Array:
    """[B, L, ...] -> [num_chunks, B, length, ...], padding the sequence axis with `fill` to num_chunks*length."""
    pad = num_chunks * length - x.shape[1]
    if pad:
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
    x = x.reshape((x.shape[0], num_chunks, length) + x.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def masked_sum(values: Array, mask: Array) -> Array:
    """sum of values * mask over positions where mask > 0 (the numerator of `losses`' masked means)."""
    m = mask.astype(jnp.float32)
    return jnp.sum(jnp.where(m > 0, values * m, 0.0))


def chunk_sums(student, teacher, xs, terms: Sequence[str], temperature) -> Dict[str, Array]:
    """Per-term numerators over one chunk.

    student / teacher: `MlmPredictor`s (their `hidden` unused); xs: (student hidden [B, Lc, d_s], teacher
    hidden [B, Lc, d_t] or None, position mask [B, Lc], real-token mask [B, Lc], MLM labels [B, Lc]).
    """
    hs, ht, positions, valid, labels = xs
    zs = student.logits(hs)
    zt = None if ht is None else jax.lax.stop_gradient(teacher.logits(ht))
    sums = {}
    if "soft" in terms:
        sums["soft"] = masked_sum(L.kl_per_position(zs, zt, temperature), positions)
    if "soft_ce" in terms:
        sums["soft_ce"] = masked_sum(L.soft_cross_entropy_per_position(zs, zt, temperature), positions)
    if "logit_mse" in terms:
        sums["logit_mse"] = masked_sum(L.squared_error_per_position(zs, zt), positions)
    if "mlm" in terms:
        sums["mlm"] = jnp.sum(L.nll_per_position(zs, labels))
    if "teacher_student_kl" in terms:
        sums["teacher_student_kl"] = masked_sum(L.kl_per_position(jax.lax.stop_gradient(zs), zt, 1.0), valid)
    return sums


def prediction_terms(student, teacher, terms: Sequence[str], *, chunk_tokens: int, temperature=1.0,
                     position_mask: Optional[Array] = None, attention_mask: Optional[Array] = None,
                     mlm_labels: Optional[Array] = None, logit_mse_reduction: str = "mean",
                     gradient_weights: Optional[Dict[str, Array]] = None) -> Dict[str, Array]:
    """Prediction-layer terms of a student and a teacher from their MLM-head inputs, chunk by chunk.

    student, teacher: `models.bert.MlmPredictor` (teacher may be None when only "mlm" is asked).
    terms: names in TERMS. chunk_tokens: tokens per chunk (0 = one chunk); the chunk is
    `chunk_length(B, L, chunk_tokens)` positions of every row. temperature: T of soft / soft_ce.
    position_mask [B, L]: the positions soft / soft_ce / logit_mse average over (None = all).
    attention_mask [B, L]: real tokens, for teacher_student_kl (None = all). mlm_labels [B, L] (-100 = not a
    target), for mlm. Returns float32 scalars: soft = T^2 * mean_sel KL(p_t || p_s) at T; soft_ce = T^2 *
    mean_sel -sum p_t log p_s; logit_mse = mean_sel sum_c (z_s - z_t)^2 (/ V when "official"); mlm = mean
    cross-entropy over targets; teacher_student_kl = mean over real tokens of KL at T = 1 (no gradient).

    gradient_weights: {term: float32 scalar} for some of the DIFFERENTIABLE terms, or None. When given, the
    returned terms carry no gradient and the result gains GRADIENT_CARRIER, a scalar equal to 0 whose
    gradient (w.r.t. the student's hidden states and head) is that of sum_k weight_k * term_k, computed in
    the forward pass without recomputing logits (module doc). Add it to the loss.
    """
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ConfigError(f"vocabulary-chunked terms {unknown} are not supported; chunked terms are {TERMS}")
    if teacher is None and set(terms) & set(NEEDS_TEACHER):
        raise ConfigError(f"terms {sorted(set(terms) & set(NEEDS_TEACHER))} need the teacher's MLM head")
    if "mlm" in terms and mlm_labels is None:
        raise ConfigError("the mlm term needs batch['mlm_labels']")
    if gradient_weights is not None and not set(gradient_weights) <= set(terms) & set(DIFFERENTIABLE):
        raise ConfigError(f"gradient_weights {sorted(gradient_weights)} must name differentiable terms among "
                          f"{sorted(set(terms) & set(DIFFERENTIABLE))}")
    B, seq = student.hidden.shape[:2]
    ones = jnp.ones((B, seq), jnp.float32)
    positions = ones if position_mask is None else jnp.asarray(position_mask).astype(jnp.float32)
    valid = ones if attention_mask is None else jnp.asarray(attention_mask).astype(jnp.float32)
    labels = jnp.full((B, seq), -100, jnp.int32) if mlm_labels is None else jnp.asarray(mlm_labels)

    length = chunk_length(B, seq, int(chunk_tokens))
    n = -(-seq // length)
    hidden = student.hidden if gradient_weights is None else jax.lax.stop_gradient(student.hidden)
    xs = (split_positions(hidden, n, length, 0),
          None if teacher is None else split_positions(jax.lax.stop_gradient(teacher.hidden), n, length, 0),
          split_positions(positions, n, length, 0), split_positions(valid, n, length, 0),
          split_positions(labels, n, length, -100))
    terms = tuple(t for t in TERMS if t in terms)
    s_head = gathered_head(student.replace(hidden=None))
    t_head = None if teacher is None else jax.lax.stop_gradient(gathered_head(teacher.replace(hidden=None)))
    reduce = lambda totals: reduce_sums(totals, temperature, positions, valid, labels, logit_mse_reduction,
                                        vocab_size=student.word_embeddings.shape[0])
    zeros = {k: jnp.float32(0.0) for k in terms}
    if gradient_weights is None:
        per_chunk = jax.checkpoint(lambda s, t, x: chunk_sums(s, t, x, terms, temperature), prevent_cse=False)

        def body(total, x):
            sums = per_chunk(s_head, t_head, x)
            return {k: total[k] + sums[k] for k in total}, None

        totals, _ = jax.lax.scan(body, zeros, xs)
        return reduce(totals)

    # Fused: d(sum_k w_k * term_k) = sum over chunks of d(sum_k w_k * scale_k * chunk numerator_k), where
    # scale_k is what `reduce_sums` divides a numerator by (it depends on the masks only).
    scales = reduce({k: jnp.float32(1.0) for k in gradient_weights})
    coef = {k: jnp.asarray(w, jnp.float32) * scales[k] for k, w in gradient_weights.items()}
    s_fixed = jax.lax.stop_gradient(s_head)

    def body(carry, x):
        total, head_grad = carry

        def weighted(head, h):
            sums = chunk_sums(head, t_head, (h,) + x[1:], terms, temperature)
            return sum(coef[k] * sums[k] for k in coef), sums

        _, vjp, sums = jax.vjp(weighted, s_fixed, x[0], has_aux=True)
        g_head, g_hidden = vjp(jnp.float32(1.0))
        return ({k: total[k] + sums[k] for k in total}, jax.tree.map(jnp.add, head_grad, g_head)), g_hidden

    (totals, head_grad), hidden_grad = jax.lax.scan(
        body, (zeros, jax.tree.map(jnp.zeros_like, s_fixed)), xs)
    hidden_grad = jnp.moveaxis(hidden_grad, 0, 1).reshape((B, n * length) + hidden_grad.shape[3:])[:, :seq]
    out = jax.lax.stop_gradient(reduce(totals))
    out[GRADIENT_CARRIER] = (linear_carrier(s_head, jax.lax.stop_gradient(head_grad))
                             + linear_carrier(student.hidden, jax.lax.stop_gradient(hidden_grad)))
    return out


# Logical axes of the MLM head's parameters (`models.bert.MlmHead`) and the tied word embeddings, with the
# hidden ("embed") axis left whole: see `gathered_head`.
GATHERED_HEAD_AXES = {"mlm_transform": {"kernel": P(None, "embed_out"), "bias": P("embed_out")},
                      "mlm_LayerNorm": {"scale": P(), "bias": P()}, "mlm_bias": P("vocab")}
GATHERED_WORD_EMBEDDING_AXES = P("vocab", None)


def gathered_head(predictor):
    """The predictor's head parameters and word embeddings constrained to a layout whose hidden ("embed") axis
    is whole, i.e. gathered over fsdp once, before the chunk loop (vocab / embed_out stay on tensor).

    With the parameters' own layout (the word embeddings' embed axis on fsdp, as the batch rows are) inside
    the `lax.scan`, the engine's jitted step on a data=2 x fsdp=2 x tensor=2 mesh (CPU, the Shardy
    partitioner; GSPMD got it right) had the right losses but wrong gradients of the head and, through the
    hidden states, of the encoder: off by up to the gradients' own size at step 0, ~1e-3 in parameters after
    three steps (tests/test_train.py::test_vocab_chunked_steps_equal_whole_logits on that mesh). Gathering
    the word embeddings alone was enough; the head's kernel and biases follow the same rule. A no-op without
    a mesh and logical-axis rules in context.
    """
    head = jax.tree.map(shard_lib.constrain_logical, predictor.head,
                        {k: GATHERED_HEAD_AXES[k] for k in predictor.head}, is_leaf=lambda z: isinstance(z, P))
    return predictor.replace(head=head, word_embeddings=shard_lib.constrain_logical(
        predictor.word_embeddings, GATHERED_WORD_EMBEDDING_AXES))


def linear_carrier(tree, grad) -> Array:
    """sum over leaves of <x - stop_gradient(x), g>: 0 in value, gradient `grad` w.r.t. `tree` (float32)."""
    total = jnp.float32(0.0)
    for x, g in zip(jax.tree.leaves(tree), jax.tree.leaves(grad)):
        total = total + jnp.sum((x - jax.lax.stop_gradient(x)).astype(jnp.float32) * g.astype(jnp.float32))
    return total


def reduce_sums(totals: Dict[str, Array], temperature, positions: Array, valid: Array, labels: Array,
                logit_mse_reduction: str, vocab_size: int) -> Dict[str, Array]:
    """Divides each term's summed numerator by its count (at least 1) and applies T^2 / the official /V."""
    T = jnp.asarray(temperature, jnp.float32)
    count = lambda m: jnp.maximum(jnp.sum(m), 1.0)
    out = {}
    for k, v in totals.items():
        if k in ("soft", "soft_ce"):
            out[k] = T * T * v / count(positions)
        elif k == "logit_mse":
            out[k] = v / count(positions) / (vocab_size if logit_mse_reduction == "official" else 1)
        elif k == "mlm":
            out[k] = v / count((labels != -100).astype(jnp.float32))
        else:
            out[k] = v / count(valid)
    return out
