"""HomoDistil compaction and parameter accounting: masked BERT -> dense, smaller BERT.

Masks are the pytree `{"hidden": [d], "attn": [N, H, d_h], "ffn": [N, F]}` of 0/1 values (see
`jaxdistill.pruning`); which parameters each unit removes is `jaxdistill.structures`' table. Everything here
runs on the host (NumPy) on concrete masks; none of it is jittable.

Compaction keeps, in original index order, the kept units of every structure: the kept hidden dimensions,
the kept FFN neurons of every layer, the heads that keep at least one dimension and, inside them, the kept
head dimensions. Widths must be uniform across layers in a dense BERT; masks produced by
`pruning.prune_update` always are (local, balanced budget). For hand-made non-uniform masks every layer is
padded to the widest layer with *pruned* units whose parameters are set to zero, which leaves the function
unchanged (a zero FFN neuron or a zero Q/K/V head dimension contributes exactly nothing), so `compact` is
exact for any masks. For a multi-axis unit ([H, d_h]) padding is nested: each layer keeps the heads with at
least one kept dimension, padded with pruned heads to the widest layer; each kept head its kept dimensions,
padded with pruned dimensions to the widest head.

Parameter counting convention (`count_params`): a parameter is counted when no pruned unit removes it.
Counts are split into `embeddings` (word, position and token-type tables plus the embedding LayerNorm),
`encoder` (all N layers) and `heads` (pooler, MLM transform + LayerNorm + vocabulary bias, classifier: the
ones the config has; the MLM decoder is tied to the word embeddings and never counted twice);
`backbone = embeddings + encoder` and `total = backbone + heads`. The `compact_*` entries count the
compacted model and equal `sum(x.size for x in leaves(compact(...)[1]))` for `compact_total`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from jaxdistill.models.bert import BertConfig
from jaxdistill.structures import (STRUCTURES, count_from_widths, count_units, full_param_count,  # noqa: F401
                                   mask_shapes, take_units, units_of_masks)


# ----------------------------------------------------------------------------------------------- plan
def _kept_then_padding(keep: np.ndarray, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the kept entries of a 1-D bool vector (in order), padded with pruned ones to `width`."""
    kept, pruned = np.flatnonzero(keep), np.flatnonzero(~keep)
    idx = np.concatenate([kept, pruned[: width - len(kept)]]).astype(np.int32)
    flag = np.zeros(width, np.float32)
    flag[: len(kept)] = 1.0
    return idx, flag


def _plan_units(mask: np.ndarray) -> Tuple[Tuple[np.ndarray, ...], np.ndarray]:
    """Nested kept-then-padding selection for instances of one structure.

    mask: bool [M, U_0, .., U_k] (M instances: layers, or 1 for a global structure). Axis j keeps, per
    selected parent unit, the units with any kept entry below them, padded to W_j = max(1, widest parent).
    Returns (index, keep): k+1 int32 arrays [M, W_0, .., W_k] (the original unit index along each mask axis)
    and keep float32 [M, W_0, .., W_k] (0 for padding units and everything under a padding parent).
    """
    m, rank = mask.shape[0], mask.ndim - 1
    index: List[np.ndarray] = []
    keep = np.ones((m,), np.float32)
    sub = mask                                          # [M, W_0..W_{j-1}, U_j..U_k] at step j
    for j in range(rank):
        outer = sub.shape[: j + 1]
        alive = sub.reshape(outer + (sub.shape[j + 1], -1)).any(-1)          # [M, W.., U_j]
        width = max(1, int(alive.sum(-1).max()))
        idx = np.zeros(outer + (width,), np.int32)
        flag = np.zeros(outer + (width,), np.float32)
        for pos in np.ndindex(*outer):
            idx[pos], flag[pos] = _kept_then_padding(alive[pos], width)
        index = [np.repeat(a[..., None], width, -1) for a in index] + [idx]
        keep = keep[..., None] * flag
        sub = np.take_along_axis(sub, idx.reshape(idx.shape + (1,) * (rank - j - 1)), axis=j + 1)
    return tuple(index), keep


@dataclasses.dataclass(frozen=True)
class CompactionPlan:
    """Which units of a masked model the compacted model keeps (NumPy arrays, original order).

    `units[s] = (index, keep)` for every structure s (see `_plan_units`): index arrays [M, W_0, .., W_k]
    (M = N layers, or 1 for "hidden") and keep [M, W_0, .., W_k] (0 marks zeroed padding units).
    """

    units: Dict[str, Tuple[Tuple[np.ndarray, ...], np.ndarray]]

    @property
    def widths(self) -> Tuple[int, int, int, int]:
        """(hidden d', ffn F', heads H', head dim d_h') of the compacted model."""
        (h,), _ = self.units["hidden"]
        (f,), _ = self.units["ffn"]
        heads, _ = self.units["attn"]
        return h.shape[1], f.shape[1], heads[0].shape[1], heads[0].shape[2]

    # The per-structure views of earlier versions: hidden_idx [d']; ffn_idx, ffn_keep [N, F'];
    # head_idx [N, H']; dim_idx, dim_keep [N, H', d_h'].
    hidden_idx = property(lambda self: self.units["hidden"][0][0][0])
    ffn_idx = property(lambda self: self.units["ffn"][0][0])
    ffn_keep = property(lambda self: self.units["ffn"][1])
    head_idx = property(lambda self: self.units["attn"][0][0][..., 0])
    dim_idx = property(lambda self: self.units["attn"][0][1])
    dim_keep = property(lambda self: self.units["attn"][1])

    def select(self, structure: str, layer: Optional[int]):
        """`(index, keep)` for `structures.take_units`: one layer's selection (keep None when nothing is
        padded)."""
        index, keep = self.units[structure]
        i = layer if STRUCTURES[structure].per_layer else 0
        k = keep[i]
        return tuple(a[i] for a in index), (None if k.all() else k)


def _bool_masks(masks: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    missing = [s for s in STRUCTURES if s not in masks]
    if missing:
        raise ValueError(f"masks need the keys {sorted(STRUCTURES)} (missing {missing}); "
                         "build them with pruning.init_masks(config)")
    out = {s: np.asarray(masks[s]) > 0 for s in STRUCTURES}
    ranks = {s: len(st.axes) + st.per_layer for s, st in STRUCTURES.items()}
    layers = {out[s].shape[0] for s, st in STRUCTURES.items() if st.per_layer and out[s].ndim}
    if any(out[s].ndim != ranks[s] for s in STRUCTURES) or len(layers) > 1:
        raise ValueError(f"masks have shapes {({s: out[s].shape for s in out})}; expected hidden [d], "
                         "attn [N, H, d_h], ffn [N, F]")
    return out


def compaction_plan(masks: Mapping[str, Any]) -> CompactionPlan:
    """The `CompactionPlan` of `masks` (concrete arrays). Raises when no hidden dimension is kept."""
    bm = _bool_masks(masks)
    if not bm["hidden"].any():
        raise ValueError("the hidden mask keeps no dimension; a BERT needs hidden_size >= 1 "
                         "(raise pruning.hidden)")
    return CompactionPlan({s: _plan_units(bm[s] if st.per_layer else bm[s][None])
                           for s, st in STRUCTURES.items()})


def remaining_widths(masks: Mapping[str, Any]) -> Dict[str, Any]:
    """Kept widths of `masks` (host side, for metrics and plots).

    Returns {"hidden": int, "ffn": [N] ints, "head_dims": [N] ints (kept head dimensions summed over
    heads), "heads": [N] ints (heads with at least one kept dimension)}.
    """
    bm = _bool_masks(masks)
    units, heads = units_of_masks(bm), bm["attn"].any(-1).sum(1)
    return dict(hidden=units["hidden"], ffn=units["ffn"], head_dims=units["attn"], heads=[int(x) for x in heads])


def compact_config(config: BertConfig, plan: CompactionPlan) -> BertConfig:
    """The dense config of the compacted model. The attention scale stays `config.scale_dim`; `head_dim`
    and `attention_scale_dim` are set only when a standard BertConfig cannot express the result."""
    d2, f2, h2, dh2 = plan.widths
    standard_split = d2 % h2 == 0 and d2 // h2 == dh2
    head_dim = None if standard_split else dh2
    scale = config.scale_dim
    return config.replace(hidden_size=d2, intermediate_size=f2, num_attention_heads=h2, head_dim=head_dim,
                          attention_scale_dim=None if scale == dh2 else scale)


def count_params(config: BertConfig, masks: Mapping[str, Any]) -> Dict[str, int]:
    """Effective parameter counts of the masked model and counts of its compacted model (host side).

    Returns {"embeddings", "encoder", "heads", "backbone", "total"} for the masked model (a parameter
    counts unless a pruned unit removes it), the same keys prefixed `compact_` for `compact(...)`'s model
    (equal to the masked counts when every layer keeps the same widths), and `full_total` (unpruned).
    See the module docstring for what each key includes.
    """
    out = dict(count_units(config, units_of_masks(_bool_masks(masks))))
    plan = compaction_plan(masks)
    comp = {}
    for s, st in STRUCTURES.items():
        (first, *_), _ = plan.units[s]
        per = int(np.prod(first.shape[1:]))          # kept-or-padding units per instance
        comp[s] = [per] * first.shape[0] if st.per_layer else per
    out.update({f"compact_{k}": v for k, v in count_units(config, comp).items()})
    out["full_total"] = full_param_count(config)["total"]
    return out


# ------------------------------------------------------------------------------------------- compact
def compact(config: BertConfig, params: Mapping[str, Any], masks: Mapping[str, Any]
            ) -> Tuple[BertConfig, Dict[str, Any]]:
    """Slices the kept units of a masked student into a dense, smaller BERT: `(new_config, new_params)`.

    `params` is the student's Bert params (not the {"student", "projections"} tree). Every parameter is
    sliced along the axes `jaxdistill.structures` assigns to each structure (`take_units`), with this
    module's plan (kept units in order, zeroed padding for non-uniform masks). The result computes the same
    function as `Bert(config).apply({"params": params}, ..., masks=masks)` (up to float32 summation order).
    Parameters come back as NumPy arrays in their original dtype.
    """
    if "student" in params and "embeddings" not in params:
        raise ValueError("compact takes the student's Bert params; pass params['student'], not the "
                         "{'student', 'projections'} training tree")
    bm = _bool_masks(masks)
    want = mask_shapes(config)
    got = {s: bm[s].shape for s in want}
    if got != want:
        raise ValueError(f"masks shapes {got} do not match the config ({want}); "
                         "build masks with pruning.init_masks(config)")
    plan = compaction_plan(masks)
    return compact_config(config, plan), take_units(params, plan.select)


def leaf_count(params: Mapping[str, Any]) -> int:
    """Number of scalars in a params tree (sum of leaf sizes)."""
    if isinstance(params, Mapping):
        return sum(leaf_count(v) for v in params.values())
    return int(np.size(params))


__all__: List[str] = ["CompactionPlan", "compact", "compact_config", "compaction_plan", "count_from_widths",
                      "count_params", "full_param_count", "leaf_count", "remaining_widths"]
