"""Distillation losses as pure, jit-safe functions of arrays and explicit masks.

Conventions (see /METHODS.md):
- Every function returns a float32 scalar and computes in float32 whatever the input dtype.
- The teacher argument is a constant: `stop_gradient` is applied inside.
- KL is always KL(teacher || student) = sum p_t (log p_t - log p_s), from log-softmax of both sides in
  float32, so identical inputs give exactly 0.
- `mask` is a 0/1 (or boolean) array over the *leading* (position) dims: [B, L] for token-level losses,
  1 = a position the loss averages over (a real token by default; MLM targets when a recipe restricts it).
  `mask=None` selects every position. An empty selection gives 0, never NaN.
- The default reduction is the standard one of the method. Where an official code base reduces differently,
  `reduction="official"` reproduces it so that its published hyperparameters transfer.

Shapes: B batch, L length, C classes/vocab, D hidden, H heads, d_h head dim, K layers.
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp

Array = jax.Array

_REDUCTIONS = ("mean", "official")


def _f32(x) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def _teacher(x) -> Array:
    return jax.lax.stop_gradient(_f32(x))


def _check_reduction(fn: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction {reduction!r} is not one of {_REDUCTIONS}")


def _check_same_shape(fn: str, s: Array, t: Array, what: str = "student and teacher") -> None:
    if s.shape != t.shape:
        raise ValueError(f"{fn}: {what} shapes differ, {s.shape} vs {t.shape}; project the student first "
                         "(a learnable projection in the recipe) or pick matching layers")


def _masked_mean(values: Array, mask: Optional[Array]) -> Array:
    """Mean of `values` over positions where `mask` is set (all when None); 0 when nothing is selected."""
    values = _f32(values)
    if mask is None:
        return jnp.mean(values) if values.size else jnp.float32(0.0)
    m = jnp.broadcast_to(_f32(mask), values.shape)
    total = jnp.sum(jnp.where(m > 0, values * m, 0.0))
    return total / jnp.maximum(jnp.sum(m), 1.0)


def _zero_where_equal(values: Array, student: Array, teacher: Array, num_reduced_axes: int) -> Array:
    """`values` (one per row) set to exactly 0 where the student row equals the teacher row bitwise.

    A row is the trailing `num_reduced_axes` axes of the inputs. Every loss here is minimal, with a zero
    gradient, where student == teacher, so this changes no gradient; it removes the last-ulp noise that
    jit-compiled reductions can leave (XLA may round the two sides' reductions differently), so that a
    student that is an exact copy of its teacher has exactly zero loss.
    """
    if student.shape != teacher.shape:
        return values
    axes = tuple(range(student.ndim - num_reduced_axes, student.ndim))
    equal = jnp.all(jnp.asarray(student) == jnp.asarray(teacher), axis=axes)
    return jnp.where(equal, 0.0, values)


def _kl_from_logp(lt: Array, ls: Array, axis: int = -1, valid: Optional[Array] = None) -> Array:
    """sum over `axis` of p_t (log p_t - log p_s); entries with p_t == 0 (or not `valid`) contribute 0."""
    pt = jnp.exp(lt)
    keep = pt > 0 if valid is None else (pt > 0) & valid
    diff = jnp.where(keep, lt, 0.0) - jnp.where(keep, ls, 0.0)
    return jnp.sum(jnp.where(keep, pt * diff, 0.0), axis=axis)


# ------------------------------------------------------------------------------------- prediction layer
# Per-position values (no reduction over positions), shared by the losses below and by the chunked
# prediction-layer losses of `jaxdistill.vocab_chunks`. logits [..., C] -> [...] float32.
def kl_per_position(student_logits, teacher_logits, temperature=1.0) -> Array:
    """KL(softmax(z_t/T) || softmax(z_s/T)) summed over classes, per position; exactly 0 where the rows
    are bitwise equal. No T^2 factor."""
    T = _f32(temperature)
    ls = jax.nn.log_softmax(_f32(student_logits) / T, axis=-1)
    lt = jax.nn.log_softmax(_teacher(teacher_logits) / T, axis=-1)
    return _zero_where_equal(_kl_from_logp(lt, ls), student_logits, teacher_logits, 1)


def soft_cross_entropy_per_position(student_logits, teacher_logits, temperature=1.0) -> Array:
    """-sum_c softmax(z_t/T) log softmax(z_s/T), per position. No T^2 factor."""
    T = _f32(temperature)
    ls = jax.nn.log_softmax(_f32(student_logits) / T, axis=-1)
    pt = jax.nn.softmax(_teacher(teacher_logits) / T, axis=-1)
    return -jnp.sum(pt * ls, axis=-1)


def squared_error_per_position(student_logits, teacher_logits) -> Array:
    """sum_c (z_s - z_t)^2, per position."""
    return jnp.sum(jnp.square(_f32(student_logits) - _teacher(teacher_logits)), axis=-1)


def nll_per_position(logits, labels, ignore_index: int = -100) -> Array:
    """-log softmax(logits)[label], per position; 0 where the label is `ignore_index`. labels [...] int."""
    labels = jnp.asarray(labels)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    logp = jax.nn.log_softmax(_f32(logits), axis=-1)
    return jnp.where(valid, -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0], 0.0)


def soft_kl(student_logits, teacher_logits, temperature=1.0, mask=None) -> Array:
    """Hinton KD: `T^2 * mean_sel KL(softmax(z_t/T) || softmax(z_s/T))`.

    logits: [..., C] both; mask: [...] (leading dims); temperature: python or traced scalar.
    Reduction: sum over classes, mean over selected positions (= PyTorch KLDivLoss 'batchmean' over the
    selected rows), times T^2 so the gradient scale does not depend on T.
    """
    T = _f32(temperature)
    _check_same_shape("soft_kl", student_logits, teacher_logits)
    return T * T * _masked_mean(kl_per_position(student_logits, teacher_logits, T), mask)


def soft_cross_entropy(student_logits, teacher_logits, temperature=1.0, mask=None, reduction="mean") -> Array:
    """Soft cross-entropy `T^2 * mean_sel (-sum_c p_t log p_s)` (TinyBERT's prediction loss at T = 1).

    Same arguments, shapes and reduction as `soft_kl`; it differs from it by the teacher entropy, a constant,
    so the student gradient is the same. reduction="official" (TinyBERT's code: `(-p_t * log p_s).mean()`):
    mean over selected positions *and* classes, i.e. the default divided by C.
    """
    _check_reduction("soft_cross_entropy", reduction)
    T = _f32(temperature)
    _check_same_shape("soft_cross_entropy", student_logits, teacher_logits)
    out = T * T * _masked_mean(soft_cross_entropy_per_position(student_logits, teacher_logits, T), mask)
    return out / student_logits.shape[-1] if reduction == "official" else out


def logit_mse(student_logits, teacher_logits, mask=None, reduction="mean") -> Array:
    """Logit regression (Ba & Caruana; Tang et al.): `mean_sel sum_c (z_s - z_t)^2`. logits [..., C].

    reduction="official" (d-bert, PyTorch MSELoss): mean over selected positions *and* classes, i.e. the
    default divided by C.
    """
    _check_reduction("logit_mse", reduction)
    _check_same_shape("logit_mse", student_logits, teacher_logits)
    out = _masked_mean(squared_error_per_position(student_logits, teacher_logits), mask)
    return out / student_logits.shape[-1] if reduction == "official" else out


def cross_entropy(logits, labels, ignore_index: int = -100) -> Array:
    """Hard-label cross-entropy: mean over positions whose label != ignore_index. logits [..., C], labels [...]."""
    logits, labels = _f32(logits), jnp.asarray(labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: labels shape {labels.shape} must be logits shape without the class "
                         f"axis, {logits.shape[:-1]}")
    valid = labels != ignore_index
    return _masked_mean(nll_per_position(logits, labels, ignore_index), valid)


def mlm_cross_entropy(logits, labels) -> Array:
    """MLM loss: mean cross-entropy over target positions (labels != -100). logits [B, L, V], labels [B, L]."""
    return cross_entropy(logits, labels, ignore_index=-100)


# ----------------------------------------------------------------------------------- intermediate layers
def hidden_mse(student_hidden, teacher_hidden, mask=None, reduction="mean") -> Array:
    """TinyBERT hidden/embedding MSE: `mean_valid mean_D (h_s - h_t)^2`. [B, L, D] both (project first).

    reduction="official" (TinyBERT code, MSELoss): mean over all B*L*D entries, padding included (mask ignored).
    """
    _check_reduction("hidden_mse", reduction)
    _check_same_shape("hidden_mse", student_hidden, teacher_hidden)
    sq = jnp.square(_f32(student_hidden) - _teacher(teacher_hidden))
    if reduction == "official":
        return jnp.mean(sq)
    return _masked_mean(jnp.mean(sq, axis=-1), mask)


def cosine_embedding(student_hidden, teacher_hidden, mask=None, eps: float = 1e-8) -> Array:
    """DistilBERT cosine loss: `mean_valid (1 - cos(h_s, h_t))`. [B, L, D] both; mask [B, L].

    Computed as `1 - cos = (|s - t|^2 - (|s| - |t|)^2) / (2 max(|s| |t|, eps))`, which equals
    `1 - <s, t> / (|s| |t|)`, is well conditioned for nearly equal vectors and is exactly 0 for equal ones.
    """
    _check_same_shape("cosine_embedding", student_hidden, teacher_hidden)
    s, t = _f32(student_hidden), _teacher(teacher_hidden)
    norm_s, norm_t = (jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1), 1e-30)) for x in (s, t))
    nd = jnp.sum(jnp.square(s - t), axis=-1)
    one_minus_cos = (nd - jnp.square(norm_s - norm_t)) / (2.0 * jnp.maximum(norm_s * norm_t, eps))
    return _masked_mean(_zero_where_equal(one_minus_cos, s, t, 1), mask)


def _unit(x: Array, eps: float = 1e-12) -> Array:
    # x / max(|x|, eps) as in torch.nn.functional.normalize, with a gradient that stays finite at x = 0.
    return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def pkd_patience(student_cls, teacher_cls, normalize=True, reduction="mean") -> Array:
    """BERT-PKD patience loss: `sum_k mean_b ||u_s - u_t||^2` over [CLS] vectors [B, K, D] of K layer pairs.

    u = x / |x| when `normalize` (default), else x. reduction="official" (PKD code): mean over B*K*D entries.
    """
    _check_reduction("pkd_patience", reduction)
    _check_same_shape("pkd_patience", student_cls, teacher_cls)
    if student_cls.ndim != 3:
        raise ValueError(f"pkd_patience expects [B, K, D] arrays, got shape {student_cls.shape}")
    s, t = _f32(student_cls), _teacher(teacher_cls)
    us, ut = (_unit(s), _unit(t)) if normalize else (s, t)
    equal = jnp.all(s == t, axis=-1, keepdims=True)  # exactly 0 for equal rows (see _zero_where_equal)
    sq = jnp.where(equal, 0.0, jnp.square(us - ut))
    if reduction == "official":
        return jnp.mean(sq)
    return jnp.sum(jnp.mean(jnp.sum(sq, axis=-1), axis=0))


# --------------------------------------------------------------------------------------------- attention
def _query_key_masks(mask, shape):
    """(query mask [B, 1, L, 1], key mask [B, 1, 1, L]) as booleans for [B, H, L, L] arrays."""
    B, _, Lq, Lk = shape
    if mask is None:
        m = jnp.ones((B, Lk), bool)
    else:
        m = jnp.asarray(mask) > 0
        if m.shape != (B, Lk):
            raise ValueError(f"attention mask must be [B, L] = {(B, Lk)}, got {m.shape}")
    return m[:, None, :Lq, None], m[:, None, None, :]


def _check_heads(fn: str, s: Array, t: Array) -> None:
    if s.ndim != 4 or t.ndim != 4:
        raise ValueError(f"{fn} expects [B, H, L, *] arrays, got {s.shape} and {t.shape}")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"{fn} needs equal head counts, got student {s.shape[1]} vs teacher {t.shape[1]}; "
                         "use minilmv2_relation_kl (multi-head relations), which works across head counts")


def attention_score_mse(student_scores, teacher_scores, mask=None, reduction="mean") -> Array:
    """TinyBERT attention loss: MSE of pre-softmax scaled scores QK^T/sqrt(d_h). [B, H, L, L] both; mask [B, L].

    Default: mean over heads, valid queries and valid keys (masked entries are never read, so scores that
    already carry an additive key mask are fine). reduction="official" (TinyBERT code): padded keys and entries
    <= -100 are set to 0 on both sides, then the mean over all B*H*L*L entries (padded queries count).
    """
    _check_reduction("attention_score_mse", reduction)
    _check_heads("attention_score_mse", student_scores, teacher_scores)
    _check_same_shape("attention_score_mse", student_scores, teacher_scores)
    s, t = _f32(student_scores), _teacher(teacher_scores)
    q, k = _query_key_masks(mask, s.shape)
    if reduction == "official":
        s = jnp.where(k & (s > -100.0), s, 0.0)
        t = jnp.where(k & (t > -100.0), t, 0.0)
        return jnp.mean(jnp.square(s - t))
    sel = jnp.broadcast_to(q & k, s.shape)
    sq = jnp.square(jnp.where(sel, s, 0.0) - jnp.where(sel, t, 0.0))
    return jnp.sum(sq) / jnp.maximum(jnp.sum(sel.astype(jnp.float32)), 1.0)


def _row_kl_mean(lt: Array, ls: Array, mask) -> Array:
    """KL over keys of [B, H, L, L] log-probabilities, averaged over heads and valid query rows."""
    q, k = _query_key_masks(mask, lt.shape)
    kl = _kl_from_logp(lt, ls, axis=-1, valid=jnp.broadcast_to(k, lt.shape))  # [B, H, L]
    return _masked_mean(kl, jnp.broadcast_to(q[..., 0], kl.shape))


def attention_kl(student_probs, teacher_probs, mask=None) -> Array:
    """MobileBERT/MiniLM attention transfer: `mean_{heads, valid queries} KL(A_t || A_s)` over keys.

    [B, H, L, L] attention probabilities (rows sum to 1 over valid keys); mask [B, L]. Keys where the teacher
    probability is 0 (padding) contribute 0; student probabilities are floored at the float32 tiny value.
    """
    _check_heads("attention_kl", student_probs, teacher_probs)
    _check_same_shape("attention_kl", student_probs, teacher_probs)
    ps, pt = _f32(student_probs), _teacher(teacher_probs)
    pos = pt > 0
    tiny = jnp.finfo(jnp.float32).tiny
    lt = jnp.log(jnp.where(pos, pt, 1.0))
    ls = jnp.log(jnp.where(pos, jnp.maximum(ps, tiny), 1.0))
    lt = jnp.where(pos, lt, -jnp.inf)  # exp(lt) = 0 marks the entry as ignored in _kl_from_logp
    return _row_kl_mean(lt, ls, mask)


def _relation_logp(x: Array, mask, scale_dim: int) -> Array:
    """log softmax over keys of x x^T / sqrt(scale_dim) with padded keys masked. x [B, R, L, d] -> [B, R, L, L]."""
    rel = jnp.einsum("...qd,...kd->...qk", x, x, precision=jax.lax.Precision.HIGHEST)
    rel = rel / jnp.sqrt(jnp.float32(scale_dim))
    _, k = _query_key_masks(mask, rel.shape[-4:])  # broadcasts over a leading stacking axis
    rel = jnp.where(k, rel, jnp.finfo(jnp.float32).min)
    return jax.nn.log_softmax(rel, axis=-1)


def _relation_kl(s: Array, t: Array, mask) -> Array:
    """Relation KL of [B, R, L, d_s] and [B, R, L, d_t]; exactly 0 for a (b, r) whose inputs are equal."""
    ls = _relation_logp(s, mask, s.shape[-1])
    lt = _relation_logp(t, mask, t.shape[-1])
    q, k = _query_key_masks(mask, lt.shape)
    kl = _kl_from_logp(lt, ls, axis=-1, valid=jnp.broadcast_to(k, lt.shape))  # [B, R, L]
    if s.shape == t.shape:
        kl = kl * jnp.logical_not(jnp.all(s == t, axis=(-2, -1)))[..., None].astype(jnp.float32)
    return _masked_mean(kl, jnp.broadcast_to(q[..., 0], kl.shape))


def value_relation_kl(student_values, teacher_values, mask=None) -> Array:
    """MiniLM value relation: KL between softmax(V V^T / sqrt(d_h)) of teacher and student, as attention_kl.

    [B, H, L, d_h] each (head dims may differ, head counts must match); mask [B, L].
    """
    _check_heads("value_relation_kl", student_values, teacher_values)
    s, t = _f32(student_values), _teacher(teacher_values)
    return _relation_kl(s, t, mask)


def _relation_heads(x: Array, num_relation_heads: int, who: str) -> Array:
    """[B, H, L, d_h] -> concatenate heads to [B, L, H*d_h] -> split into R heads -> [B, R, L, H*d_h/R]."""
    if x.ndim != 4:
        raise ValueError(f"minilmv2_relation_kl expects [B, H, L, d_h] arrays, got {who} shape {x.shape}")
    B, H, L, dh = x.shape
    d = H * dh
    if d % num_relation_heads:
        raise ValueError(f"minilmv2_relation_kl: the {who} width {d} (= {H} heads x {dh}) is not divisible by "
                         f"num_relation_heads={num_relation_heads}; pick R dividing both widths")
    x = jnp.transpose(x, (0, 2, 1, 3)).reshape(B, L, num_relation_heads, d // num_relation_heads)
    return jnp.transpose(x, (0, 2, 1, 3))


def minilmv2_relation_kl(student_x, teacher_x, num_relation_heads: int, mask=None) -> Array:
    """MiniLMv2 self-attention relation: KL between relation softmax(x x^T / sqrt(d/R)) of teacher and student.

    student_x [B, H_s, L, d_h_s], teacher_x [B, H_t, L, d_h_t] (queries, keys or values of one layer); the
    heads are concatenated back to width d and split into R = num_relation_heads relation heads of d/R (each
    side its own d). KL over keys averaged over relation heads and valid queries, as attention_kl.
    """
    R = int(num_relation_heads)
    s = _relation_heads(_f32(student_x), R, "student")
    t = _relation_heads(_teacher(teacher_x), R, "teacher")
    return _relation_kl(s, t, mask)


def _standardize(x: Array, eps: float) -> Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def feature_map_mse(student_hidden, teacher_hidden, mask=None, eps: float = 1e-5) -> Array:
    """MobileBERT feature-map transfer: hidden_mse of LayerNorm-standardized (no affine) hidden states.

    [B, L, D] both; each token vector is standardized over D (eps assumed 1e-5, PyTorch's LayerNorm default);
    mean over valid tokens and features.
    """
    _check_same_shape("feature_map_mse", student_hidden, teacher_hidden)
    s, t = _f32(student_hidden), _teacher(teacher_hidden)
    per_token = jnp.mean(jnp.square(_standardize(s, eps) - _standardize(t, eps)), axis=-1)
    return _masked_mean(_zero_where_equal(per_token, s, t, 1), mask)


# ---------------------------------------------------------------------------------------------- registry
LOSSES: Dict[str, Callable] = {
    "soft_kl": soft_kl,
    "soft_cross_entropy": soft_cross_entropy,
    "logit_mse": logit_mse,
    "cross_entropy": cross_entropy,
    "mlm_cross_entropy": mlm_cross_entropy,
    "hidden_mse": hidden_mse,
    "cosine_embedding": cosine_embedding,
    "pkd_patience": pkd_patience,
    "attention_score_mse": attention_score_mse,
    "attention_kl": attention_kl,
    "value_relation_kl": value_relation_kl,
    "minilmv2_relation_kl": minilmv2_relation_kl,
    "feature_map_mse": feature_map_mse,
}


def register(name: str, fn: Callable, overwrite: bool = False) -> Callable:
    """Adds `fn(student, teacher, ..., mask=None, ...) -> float32 scalar` to LOSSES under `name`."""
    if not callable(fn):
        raise TypeError(f"register({name!r}, ...): the loss must be callable, got {type(fn).__name__}")
    if name in LOSSES and not overwrite and LOSSES[name] is not fn:
        raise ValueError(f"a loss named {name!r} is already registered; pass overwrite=True to replace it")
    LOSSES[name] = fn
    return fn


def get(name: str) -> Callable:
    """The loss registered as `name`; a ValueError lists the known names otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {sorted(LOSSES)} (add one with losses.register)")
    return LOSSES[name]


def accepts(fn: Callable, arg: str) -> bool:
    """Whether `fn` takes a keyword argument named `arg` (used by recipes to pass `mask`)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
