"""Teacher <-> student layer mappings, student initialisation from teacher layers, and projections.

Index conventions (tested against the official lists):
- A *layer map* is a list of `(student, teacher)` pairs of **hidden-state indices**: 0 is the embedding
  output, m (1-based) is the output of encoder layer m, so a BERT with N layers has indices 0..N. Attention
  features of a pair (scores, probabilities, Q/K/V) are those of encoder layer m, i.e. the layer that
  *produced* hidden state m (m >= 1).
- `init_student_from_teacher(..., layers=[...])` takes **0-based encoder layer indices** (the parameter
  names `layer_0 .. layer_{N-1}`), as DistilBERT's official list [0, 2, 4, 7, 9, 11] does.

Maps (M student layers, N teacher layers):
- `uniform` (TinyBERT): (0, 0) and (m, m*N//M) for m = 1..M.
- `skip` (PKD-Skip): (m, m*N//M) for m = 1..M-1; 12 -> 6 gives teacher {2, 4, 6, 8, 10}.
- `last` (PKD-Last): (m, N-M+m) for m = 1..M-1; 12 -> 6 gives teacher {7, 8, 9, 10, 11}.
- `last_only` (MiniLM, DistilBERT's cosine): [(M, N)].
- `explicit`: a list of pairs, validated.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.models.bert import BertConfig
from jaxdistill.errors import ConfigError

Pairs = List[Tuple[int, int]]

# DistilBERT's official student initialisation from bert-base (0-based teacher encoder layers).
DISTILBERT_LAYERS = (0, 2, 4, 7, 9, 11)


def _check_counts(num_student_layers: int, num_teacher_layers: int) -> None:
    if int(num_student_layers) < 1 or int(num_teacher_layers) < 1:
        raise ConfigError(f"layer counts must be positive, got student {num_student_layers}, "
                         f"teacher {num_teacher_layers}")


def uniform(num_student_layers: int, num_teacher_layers: int, include_embeddings: bool = True) -> Pairs:
    """TinyBERT's uniform map: student m <- teacher m*N//M (m = 1..M), plus embeddings (0, 0)."""
    M, N = int(num_student_layers), int(num_teacher_layers)
    _check_counts(M, N)
    if M > N:
        raise ConfigError(f"uniform map: the student has more layers ({M}) than the teacher ({N}); "
                         "give an explicit map")
    pairs = [(m, m * N // M) for m in range(1, M + 1)]
    return ([(0, 0)] if include_embeddings else []) + pairs


def skip(num_student_layers: int, num_teacher_layers: int) -> Pairs:
    """PKD-Skip: student layers 1..M-1 (not the last) <- every (N/M)-th teacher layer."""
    M, N = int(num_student_layers), int(num_teacher_layers)
    _check_counts(M, N)
    if M > N:
        raise ConfigError(f"skip map: the student has more layers ({M}) than the teacher ({N})")
    return [(m, m * N // M) for m in range(1, M)]


def last(num_student_layers: int, num_teacher_layers: int) -> Pairs:
    """PKD-Last: student layers 1..M-1 <- the teacher layers N-M+1..N-1 (just below its last)."""
    M, N = int(num_student_layers), int(num_teacher_layers)
    _check_counts(M, N)
    if M > N:
        raise ConfigError(f"last map: the student has more layers ({M}) than the teacher ({N})")
    return [(m, N - M + m) for m in range(1, M)]


def last_only(num_student_layers: int, num_teacher_layers: int) -> Pairs:
    """The last student layer <- the last teacher layer (MiniLM, DistilBERT's cosine loss)."""
    _check_counts(num_student_layers, num_teacher_layers)
    return [(int(num_student_layers), int(num_teacher_layers))]


def explicit(pairs: Sequence[Sequence[int]], num_student_layers: int, num_teacher_layers: int,
             min_index: int = 0) -> Pairs:
    """Validates a list of (student, teacher) hidden-state indices; negative indices count from the end."""
    M, N = int(num_student_layers), int(num_teacher_layers)
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(f"a layer map entry must be a (student, teacher) pair, got {pair!r}")
        s, t = resolve_index(pair[0], M, "student", min_index), resolve_index(pair[1], N, "teacher", min_index)
        out.append((s, t))
    return out


def resolve_index(index: int, num_layers: int, who: str, min_index: int = 0) -> int:
    """A hidden-state index in [min_index, num_layers]; -1 means the last layer. Out of range is a ValueError."""
    i = int(index)
    if i < 0:
        i = num_layers + 1 + i
    if not min_index <= i <= num_layers:
        raise ConfigError(f"{who} layer index {index} is out of range: the {who} has {num_layers} layers, so "
                         f"valid indices are {min_index}..{num_layers} (0 = embeddings, -1 = last)")
    return i


_MAPS = {"uniform": uniform, "skip": skip, "last": last, "last_only": last_only}


def make_layer_map(spec, num_student_layers: int, num_teacher_layers: int, min_index: int = 0) -> Pairs:
    """Pairs from a preset name (`uniform`, `uniform_no_embeddings`, `skip`, `last`, `last_only`) or a list."""
    if isinstance(spec, str):
        if spec == "uniform_no_embeddings":
            pairs = uniform(num_student_layers, num_teacher_layers, include_embeddings=False)
        elif spec in _MAPS:
            pairs = _MAPS[spec](num_student_layers, num_teacher_layers)
        else:
            raise ConfigError(f"unknown layer map {spec!r}; use one of {sorted(_MAPS) + ['uniform_no_embeddings']} "
                             "or a list of (student, teacher) hidden-state index pairs")
        return explicit(pairs, num_student_layers, num_teacher_layers, min_index)
    return explicit(spec, num_student_layers, num_teacher_layers, min_index)


# ------------------------------------------------------------------------------- student initialisation
def student_init_layers(preset, num_teacher_layers: int, num_student_layers: Optional[int] = None) -> List[int]:
    """0-based teacher encoder layers to copy: `distilbert` (evenly spaced, rounded: [0, 2, 4, 7, 9, 11] for
    12 -> 6), `first` (PKD: 0..M-1), `copy` (all N layers: HomoDistil) or an explicit list."""
    N = int(num_teacher_layers)
    if not isinstance(preset, str):
        return [int(i) for i in preset]
    if preset == "copy":
        return list(range(N))
    if num_student_layers is None:
        raise ConfigError(f"student init preset {preset!r} needs num_student_layers")
    M = int(num_student_layers)
    if not 1 <= M <= N:
        raise ConfigError(f"cannot initialise a {M}-layer student from {N} teacher layers (need 1 <= M <= N)")
    if preset == "first":
        return list(range(M))
    if preset == "distilbert":
        return [int(i) for i in np.floor(np.linspace(0, N - 1, M) + 0.5)]
    raise ConfigError(f"unknown student init preset {preset!r}; use 'distilbert', 'first', 'copy' or a list")


def _copy_tree(tree):
    # A real copy: the student is donated to the train step, so it must not share buffers with the teacher.
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def student_config_from_layers(teacher_config: BertConfig, layers: Sequence[int], hidden_size: Optional[int] = None,
                               **config_overrides) -> BertConfig:
    """The config of a student that copies the teacher layers `layers` (0-based); validates without weights.

    Raises ConfigError for an empty list, an index outside 0..N-1 (N = the teacher's real depth, named in the
    message), a `hidden_size` other than the teacher's, or overrides that change a copied parameter's shape.
    """
    N = teacher_config.num_hidden_layers
    layers = [int(i) for i in layers]
    if not layers:
        raise ConfigError("student.layers is empty: give the teacher layers to copy (0-based), e.g. 0,2,4")
    bad = [i for i in layers if not 0 <= i < N]
    if bad:
        raise ConfigError(f"student.layers: teacher layers {bad} are out of range: the teacher has {N} encoder "
                          f"layers, 0-based indices 0..{N - 1}")
    if hidden_size is not None and int(hidden_size) != teacher_config.hidden_size:
        raise ConfigError(f"cannot copy teacher weights into hidden_size={hidden_size} (teacher width "
                          f"{teacher_config.hidden_size}); initialise a narrower student randomly and use "
                          "projections, or use HomoDistil pruning to reach the width")
    shape_fields = {"hidden_size", "num_attention_heads", "intermediate_size", "vocab_size", "head_dim",
                    "max_position_embeddings", "type_vocab_size", "num_hidden_layers"}
    changed = sorted(k for k in shape_fields & set(config_overrides)
                     if config_overrides[k] != getattr(teacher_config, k))
    if changed:
        raise ConfigError(f"config overrides {changed} change copied parameter shapes; only non-shape fields "
                          "may be overridden")
    return teacher_config.replace(num_hidden_layers=len(layers), **config_overrides)


def init_student_from_teacher(teacher_config: BertConfig, teacher_params: Mapping[str, Any],
                              layers: Sequence[int], hidden_size: Optional[int] = None,
                              **config_overrides) -> Tuple[BertConfig, Dict[str, Any]]:
    """A student that copies the teacher's embeddings, heads and the encoder layers `layers` (0-based).

    Returns `(student_config, student_params)` with `num_hidden_layers = len(layers)`; student layer j is a
    copy of teacher layer `layers[j]`. DistilBERT: `layers=[0, 2, 4, 7, 9, 11]`; PKD: `range(k)`; HomoDistil:
    `range(N)` (an exact copy). The student keeps the teacher's width: `hidden_size` may only repeat it
    (a narrower student cannot be copied; initialise it randomly and distil through projections).
    `config_overrides` (e.g. `num_labels`, `dtype`) must not change parameter shapes of copied parts.
    """
    student_config = student_config_from_layers(teacher_config, layers, hidden_size, **config_overrides)
    layers = [int(i) for i in layers]
    params: Dict[str, Any] = {}
    for key, value in teacher_params.items():
        if key.startswith("layer_"):
            continue
        if key == "classifier" and not student_config.num_labels:
            continue
        params[key] = _copy_tree(value)
    for j, i in enumerate(layers):
        params[f"layer_{j}"] = _copy_tree(teacher_params[f"layer_{i}"])
    if student_config.num_labels and "classifier" not in params:
        raise ConfigError("the student has num_labels > 0 but the teacher has no classifier to copy; "
                         "initialise the classifier yourself (models.init_params) and merge it")
    return student_config, params


# ---------------------------------------------------------------------------------------------- projections
def init_projection(rng, in_dim: int, out_dim: int, std: float = 0.02, bias: bool = True) -> Dict[str, Any]:
    """A linear map `in_dim -> out_dim` as `{"kernel": [in, out], "bias": [out]}` (float32).

    Exactly the identity with a zero bias when `in_dim == out_dim` (a copy of the teacher then has zero
    distillation loss); otherwise kernel ~ N(0, std^2) (std assumed 0.02, BERT's initializer_range).
    """
    if in_dim == out_dim:
        kernel = jnp.eye(in_dim, dtype=jnp.float32)
    else:
        kernel = std * jax.random.normal(rng, (in_dim, out_dim), jnp.float32)
    out = {"kernel": kernel}
    if bias:
        out["bias"] = jnp.zeros((out_dim,), jnp.float32)
    return out


_PROJ_ACTIVATIONS = {None: lambda x: x, "none": lambda x: x, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
                     "relu": jax.nn.relu, "tanh": jnp.tanh}


def apply_projection(projection: Mapping[str, Any], x, activation: Optional[str] = None):
    """x [..., in] -> x @ kernel + bias [..., out] in float32 at full matmul precision (exact for identity)."""
    if activation not in _PROJ_ACTIVATIONS:
        raise ConfigError(f"projection activation {activation!r} is not one of {list(_PROJ_ACTIVATIONS)}")
    kernel = projection["kernel"]
    x = jnp.asarray(x).astype(jnp.float32)
    if x.shape[-1] != kernel.shape[0]:
        raise ConfigError(f"projection expects inputs of width {kernel.shape[0]}, got {x.shape[-1]}")
    y = jnp.einsum("...i,io->...o", x, kernel.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    if "bias" in projection:
        y = y + projection["bias"].astype(jnp.float32)
    return _PROJ_ACTIVATIONS[activation](y)
