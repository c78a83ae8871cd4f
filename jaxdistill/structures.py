"""HomoDistil's prunable structures: the one table of which parameter axes each mask removes.

The masks pytree (METHODS.md, HomoDistil item 4) is `{"hidden": [d], "attn": [N, H, d_h], "ffn": [N, F]}`
of 0/1 values. `STRUCTURES` below is the only place that says which parameters a pruned unit removes. Each
structure lists, for every axis of one unit's mask, the logical axis names (the names `models.bert` gives its
parameters with `nn.with_logical_partitioning`) that this mask axis indexes:

    structure  one mask            logical names per mask axis   removed per unit
    hidden     [d] (global)        ("embed" | "embed_out")       every [.., d, ..] slice of every parameter
    attn       [H, d_h] per layer  ("heads"), ("kv")             Q/K/V kernel columns + biases, output rows
    ffn        [F] per layer       ("mlp")                       intermediate column + bias, output row

Names in `UNPRUNED_AXES` (vocab, pos, types, classes) are never pruned; any other name is an error, so a new
logical axis must be classified here. A per-layer structure's mask for a parameter under the scope `layer_<i>`
is `masks[name][i]`. Everything else is derived from the model's own parameters (`layout`): for the
jaxdistill Bert the per-parameter table (`param_uses`) reads

    embeddings/{word,position,token_type}_embeddings [V|P|T, d]   hidden @ 1
    embeddings/LayerNorm, every LayerNorm, */output/bias [d]       hidden @ 0
    layer_i/attention/{query,key,value}/kernel [d, H, d_h]          hidden @ 0, attn @ (1, 2)
    layer_i/attention/{query,key,value}/bias [H, d_h]               attn @ (0, 1)
    layer_i/attention/output/kernel [H, d_h, d]                    attn @ (0, 1), hidden @ 2
    layer_i/intermediate/kernel [d, F], bias [F]                   hidden @ 0, ffn @ 1 / ffn @ 0
    layer_i/output/kernel [F, d]                                   ffn @ 0, hidden @ 1
    pooler/kernel, mlm_transform/kernel [d, d]; their biases [d]   hidden @ 0 and hidden @ 1; hidden @ 0
    classifier/kernel [d, C]                                       hidden @ 0
    mlm_bias [V], classifier/bias [C]                              nothing

A unit removes a parameter entry when the entry's index along any of that structure's uses equals the unit
(so hidden unit j removes row j and column j of a [d, d] kernel, the entry (j, j) once); an entry is kept
when every unit indexing it is kept, so its multiplier is the product of the masks of all its uses. From
this: `group_scores` (unit scores), `param_multipliers`, `init_masks` shapes (`mask_shapes`), compaction
slicing (`take_units`), parameter counts (`count_units`, `count_from_widths`) and kept sizes (`kept_sizes`,
for FLOPs). A new prunable structure is one more `Structure` entry (plus its masking in `models/bert.py`).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import string
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.errors import ConfigError
from jaxdistill.models.bert import Bert, BertConfig

Path = Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Structure:
    """One kind of prunable unit. `axes[k]`: the logical names that index axis k of one unit mask.
    `per_layer`: one mask per encoder layer (a leading [N] axis in the masks pytree)."""

    axes: Tuple[Tuple[str, ...], ...]
    per_layer: bool


STRUCTURES: Dict[str, Structure] = {
    "hidden": Structure(axes=(("embed", "embed_out"),), per_layer=False),
    "attn": Structure(axes=(("heads",), ("kv",)), per_layer=True),
    "ffn": Structure(axes=(("mlp",),), per_layer=True),
}
UNPRUNED_AXES = frozenset({"vocab", "pos", "types", "classes"})
AXIS_OF = {name: (s, k) for s, st in STRUCTURES.items() for k, names in enumerate(st.axes) for name in names}
LAYER_SCOPE = re.compile(r"layer_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Use:
    """Mask `structure` indexes the parameter's axes `axes` (one per mask axis, in mask-axis order)."""

    structure: str
    axes: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter: its path, shape, logical names, encoder layer (None outside layers) and uses."""

    path: Path
    shape: Tuple[int, ...]
    names: Tuple[Optional[str], ...]
    layer: Optional[int]
    uses: Tuple[Use, ...]


def layer_of(path: Path) -> Optional[int]:
    """The encoder layer index of a parameter path (`layer_<i>/...`), or None."""
    m = LAYER_SCOPE.match(path[0]) if path else None
    return int(m.group(1)) if m else None


def uses_of_names(names: Sequence[Optional[str]], path: Path = ()) -> Tuple[Use, ...]:
    """The uses of a parameter with logical axis `names`. Raises ConfigError for unclassified names or an
    incomplete unit (e.g. "heads" without "kv")."""
    per: Dict[str, List[List[int]]] = {}
    for axis, name in enumerate(names):
        if name in AXIS_OF:
            s, k = AXIS_OF[name]
            per.setdefault(s, [[] for _ in STRUCTURES[s].axes])[k].append(axis)
        elif name not in UNPRUNED_AXES:
            raise ConfigError(f"parameter {'/'.join(path)} has logical axis {name!r} that jaxdistill.structures "
                              "does not classify; add it to a Structure in STRUCTURES or to UNPRUNED_AXES")
    uses = []
    for s, lists in per.items():
        if len({len(x) for x in lists}) != 1:
            raise ConfigError(f"parameter {'/'.join(path)} (axes {tuple(names)}) holds an incomplete {s!r} unit; "
                              f"every use needs one axis named from each of {STRUCTURES[s].axes}")
        if STRUCTURES[s].per_layer and layer_of(path) is None:
            raise ConfigError(f"parameter {'/'.join(path)} is outside the encoder layers but is indexed by the "
                              f"per-layer structure {s!r}")
        uses.extend(Use(s, tuple(axes)) for axes in zip(*lists))
    return tuple(uses)


def _walk(tree: Any, prefix: Path = ()) -> Iterator[Tuple[Path, Any]]:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _walk(v, prefix + (str(k),))
    else:
        yield prefix, tree


def _nest(items: Sequence[Tuple[Path, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for path, value in items:
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return out


@functools.lru_cache(maxsize=None)
def layout(config: BertConfig) -> Tuple[Entry, ...]:
    """Every parameter of `Bert(config)` with its uses, read from the model's logical axis names (abstract
    init, no arrays allocated; cached per config)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    with nn.logical_axis_rules(()):  # shapes and names only: no activation sharding constraints
        boxed = jax.eval_shape(lambda r: Bert(config).init({"params": r}, ids)["params"], jax.random.key(0))
    entries = []
    for path, leaf in _walk(boxed):
        if isinstance(leaf, nn.LogicallyPartitioned):
            shape, names = tuple(leaf.value.shape), tuple(leaf.names)
        else:
            shape, names = tuple(leaf.shape), (None,) * len(leaf.shape)
        entries.append(Entry(path, shape, names, layer_of(path), uses_of_names(names, path)))
    return tuple(entries)


# Every optional part of the model on (MLM head, pooler, classifier), smallest sizes: the reference from which
# functions that get no config (group_scores, param_multipliers, take_units) read each parameter's uses.
REFERENCE_CONFIG = BertConfig(vocab_size=2, hidden_size=2, num_hidden_layers=1, num_attention_heads=1,
                              intermediate_size=2, max_position_embeddings=2, type_vocab_size=1, num_labels=1,
                              with_mlm_head=True, with_pooler=True)


def _key(path: Path) -> Path:
    return ("layer_<i>",) + path[1:] if layer_of(path) is not None else path


@functools.lru_cache(maxsize=None)
def param_uses() -> Dict[Path, Tuple[Use, ...]]:
    """The per-parameter table: path (layers as `layer_<i>`) -> uses, for every parameter Bert can have."""
    return {_key(e.path): e.uses for e in layout(REFERENCE_CONFIG)}


def lookup(path: Path) -> Optional[Tuple[Use, ...]]:
    """The uses of the parameter at `path` of a Bert params tree, or None when the model has no such one."""
    return param_uses().get(_key(path))


def mask_shapes(config: BertConfig) -> Dict[str, Tuple[int, ...]]:
    """Shape of every mask: per-layer structures get a leading [N]; e.g. {"hidden": (d,), "attn": (N, H, d_h),
    "ffn": (N, F)}. Raises ConfigError when two parameters disagree on a unit's shape."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for e in layout(config):
        for u in e.uses:
            unit = tuple(e.shape[a] for a in u.axes)
            if shapes.setdefault(u.structure, unit) != unit:
                raise ConfigError(f"parameter {'/'.join(e.path)} gives {u.structure!r} units the shape {unit}, "
                                  f"other parameters {shapes[u.structure]}")
    n = config.num_hidden_layers
    return {s: ((n,) if STRUCTURES[s].per_layer else ()) + shapes[s] for s in STRUCTURES if s in shapes}


def _unit(masks: Mapping[str, Any], structure: str, layer: Optional[int]):
    m = masks[structure]
    return m[layer] if STRUCTURES[structure].per_layer else m


# ------------------------------------------------------------------------------------ jittable, any params
def _place(unit, axes: Tuple[int, ...], ndim: int):
    """Reshapes a unit mask [U_0, .., U_k] to broadcast against a rank-`ndim` parameter along `axes`."""
    order = sorted(range(len(axes)), key=lambda k: axes[k])
    shape = [1] * ndim
    for k in order:
        shape[axes[k]] = unit.shape[k]
    if order != list(range(len(axes))):
        unit = jnp.transpose(unit, order)
    return jnp.reshape(unit, shape)


def param_multipliers(masks: Mapping[str, Any], student_params: Any) -> Dict[str, Any]:
    """0/1 multipliers (float32, broadcastable to each parameter) for a Bert params tree: for each parameter,
    the product over its uses of the unit masks placed along the used axes (e.g. query kernel [d, H, d_h] ->
    hidden[:, None, None] * attn[i][None]). Parameters no structure indexes (mlm_bias, classifier bias) and
    parameters the model does not have are absent. Jittable."""
    out = []
    for path, leaf in _walk(student_params):
        uses = lookup(path)
        if not uses:
            continue
        layer, mult = layer_of(path), None
        for u in uses:
            m = _place(jnp.asarray(_unit(masks, u.structure, layer), jnp.float32), u.axes, jnp.ndim(leaf))
            mult = m if mult is None else mult * m
        out.append((path, mult))
    return _nest(out)


def apply_multipliers(tree: Any, multipliers: Any) -> Any:
    """`tree` (params, or any tree shaped like them) times `multipliers` (from `param_multipliers`, possibly
    nested under more keys) leaf by leaf, in each leaf's dtype; leaves without a multiplier are returned
    unchanged. Jittable."""
    if multipliers is None:
        return tree
    if isinstance(multipliers, Mapping):
        return {k: apply_multipliers(v, multipliers.get(k)) for k, v in tree.items()}
    return tree * multipliers.astype(tree.dtype)


def _sum_onto_units(x, uses: Sequence[Use]):
    """Sum of `x` over the entries whose index along every use in `uses` (same structure) is the same unit u:
    an array of the unit shape. One use: a sum over the other axes; two: the diagonal."""
    letters = iter(string.ascii_letters)
    unit_letters = [next(letters) for _ in uses[0].axes]
    sub = [None] * jnp.ndim(x)
    for u in uses:
        for k, a in enumerate(u.axes):
            sub[a] = unit_letters[k]
    sub = [s or next(letters) for s in sub]
    return jnp.einsum("".join(sub) + "->" + "".join(unit_letters), x)


def group_scores(scores: Any, num_layers: int) -> Dict[str, Any]:
    """Unit scores from per-parameter `scores` (a tree like the student's Bert params): for every structure
    the sum of the scores of every entry one unit removes, {"hidden": [d], "attn": [N, H, d_h], "ffn": [N, F]}.
    An entry that a unit indexes along several uses (entry (j, j) of a [d, d] kernel) counts once
    (inclusion-exclusion over the uses). Jittable; `num_layers` N must match the tree's layers."""
    acc: Dict[Tuple[str, Optional[int]], Any] = {}
    for path, leaf in _walk(scores):
        uses = lookup(path)
        if not uses:
            continue
        layer = layer_of(path)
        for s in dict.fromkeys(u.structure for u in uses):
            mine = [u for u in uses if u.structure == s]
            total = None
            for r in range(1, len(mine) + 1):
                for subset in itertools.combinations(mine, r):
                    term = _sum_onto_units(leaf, subset)
                    term = term if r % 2 else -term
                    total = term if total is None else total + term
            key = (s, layer if STRUCTURES[s].per_layer else None)
            acc[key] = total if key not in acc else acc[key] + total
    layers = {k[1] for k in acc if k[1] is not None}
    if layers and layers != set(range(num_layers)):
        raise ConfigError(f"group_scores got num_layers={num_layers} but the scores hold layers {sorted(layers)}")
    out = {}
    for s, st in STRUCTURES.items():
        if st.per_layer and (s, 0) in acc:
            out[s] = jnp.stack([acc[(s, i)] for i in range(num_layers)])
        elif (s, None) in acc:
            out[s] = acc[(s, None)]
    return out


# ---------------------------------------------------------------------------------- host side: compaction
def take_units(params: Mapping[str, Any], select: Callable[[str, Optional[int]], Tuple[tuple, Any]]
               ) -> Dict[str, Any]:
    """Slices every parameter along its uses (NumPy, host side). `select(structure, layer)` returns
    `(index, keep)`: `index` a tuple of int arrays of the new unit shape [U'_0, .., U'_k] (one per mask axis)
    selecting the units the result keeps, `keep` None or a 0/1 float array [U'_0, .., U'_k] that zeroes
    padding units. A parameter [.., U_0, .., U_k, ..] becomes [.., U'_0, .., U'_k, ..] in its own dtype.
    Raises ConfigError for parameters Bert does not have."""
    out, unknown = [], []
    for path, leaf in _walk(params):
        uses = lookup(path)
        if uses is None:
            unknown.append(path[0])
            continue
        x, layer = np.asarray(leaf), layer_of(path)
        for u in uses:
            index, keep = select(u.structure, layer)
            k = len(u.axes)
            y = np.moveaxis(x, u.axes, tuple(range(k)))[tuple(index)]
            if keep is not None:
                y = (y * np.reshape(keep, np.shape(keep) + (1,) * (y.ndim - k))).astype(x.dtype)
            x = np.moveaxis(y, tuple(range(k)), u.axes)
        out.append((path, x))
    if unknown:
        raise ConfigError(f"compact does not know how to slice the parameter groups {sorted(set(unknown))}; "
                          "only jaxdistill Bert params are supported")
    return _nest(out)


# ------------------------------------------------------------------------------------------------ counting
def full_units(config: BertConfig) -> Dict[str, Any]:
    """Units of the unpruned model: an int per global structure, a list of N ints per per-layer one."""
    out = {}
    for s, shape in mask_shapes(config).items():
        size = int(np.prod(shape[1:] if STRUCTURES[s].per_layer else shape))
        out[s] = [size] * shape[0] if STRUCTURES[s].per_layer else size
    return out


def units_of_masks(masks: Mapping[str, Any]) -> Dict[str, Any]:
    """Kept units of concrete masks: an int per global structure (sum), [N] ints per per-layer one."""
    out = {}
    for s, st in STRUCTURES.items():
        m = np.asarray(masks[s]) > 0
        out[s] = [int(x) for x in m.reshape(m.shape[0], -1).sum(1)] if st.per_layer else int(m.sum())
    return out


def kept_sizes(config: BertConfig, units: Mapping[str, Any]) -> Dict[Path, int]:
    """Kept entries of every parameter of `Bert(config)` when `units[s]` units of each structure are kept
    (an int, or [N] ints for per-layer structures): the product of the unpruned axes' sizes and, per use,
    the kept units (masks are separable, so this is the number of entries whose multiplier is 1)."""
    out = {}
    for e in layout(config):
        used = {a for u in e.uses for a in u.axes}
        n = int(np.prod([d for a, d in enumerate(e.shape) if a not in used], dtype=np.int64))
        for u in e.uses:
            k = units[u.structure]
            n *= int(k[e.layer] if STRUCTURES[u.structure].per_layer else k)
        out[e.path] = n
    return out


def count_units(config: BertConfig, units: Mapping[str, Any]) -> Dict[str, int]:
    """Parameter counts {"embeddings", "encoder", "heads", "backbone", "total"} from `kept_sizes`:
    embeddings = the `embeddings` scope, encoder = the `layer_<i>` scopes, heads = the rest (pooler, MLM
    transform + LayerNorm + vocabulary bias, classifier; the tied MLM decoder is the word embedding)."""
    parts = {"embeddings": 0, "encoder": 0, "heads": 0}
    for path, n in kept_sizes(config, units).items():
        parts["embeddings" if path[0] == "embeddings" else "encoder" if layer_of(path) is not None
              else "heads"] += n
    return dict(parts, backbone=parts["embeddings"] + parts["encoder"],
                total=parts["embeddings"] + parts["encoder"] + parts["heads"])


def count_from_widths(config: BertConfig, hidden: int, attn_widths: Sequence[int],
                      ffn_widths: Sequence[int]) -> Dict[str, int]:
    """Parameter counts of a BERT with hidden width `hidden` and, per layer, `attn_widths[i]` kept attention
    units (heads x dims per head) and `ffn_widths[i]` FFN neurons; vocabulary, positions, token types, depth
    and the optional heads come from `config`. Returns {"embeddings", "encoder", "heads", "backbone",
    "total"} (Python ints; see `count_units`)."""
    return count_units(config, {"hidden": int(hidden), "attn": [int(a) for a in attn_widths],
                                "ffn": [int(f) for f in ffn_widths]})


def full_param_count(config: BertConfig) -> Dict[str, int]:
    """`count_units` of the unpruned model described by `config`."""
    return count_units(config, full_units(config))


__all__ = ["AXIS_OF", "Entry", "REFERENCE_CONFIG", "STRUCTURES", "Structure", "UNPRUNED_AXES", "Use",
           "apply_multipliers", "count_from_widths", "count_units", "full_param_count", "full_units", "group_scores",
           "kept_sizes", "layer_of", "layout", "lookup", "mask_shapes", "param_multipliers", "param_uses", "take_units",
           "units_of_masks", "uses_of_names"]
