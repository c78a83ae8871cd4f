"""HomoDistil compaction and parameter accounting: masked BERT -> dense, smaller BERT.

Masks are the pytree `{"hidden": [d], "attn": [N, H, d_h], "ffn": [N, F]}` of 0/1 values (see
`jaxdistill.pruning`). Everything here runs on the host (NumPy) on concrete masks; none of it is jittable.

Compaction keeps, in original index order, the kept hidden dimensions, the kept FFN neurons of every layer,
the heads that keep at least one dimension and, inside them, the kept head dimensions. Widths must be
uniform across layers in a dense BERT; masks produced by `pruning.prune_update` always are (local, balanced
budget). For hand-made non-uniform masks every layer is padded to the widest layer with *pruned* units whose
parameters are set to zero, which leaves the function unchanged (a zero FFN neuron or a zero Q/K/V head
dimension contributes exactly nothing), so `compact` is exact for any masks.

Parameter counting convention (`count_params`): a parameter is counted when no pruned unit removes it.
Counts are split into `embeddings` (word, position and token-type tables plus the embedding LayerNorm),
`encoder` (all N layers) and `heads` (pooler, MLM transform + LayerNorm + vocabulary bias, classifier: the
ones the config has; the MLM decoder is tied to the word embeddings and never counted twice);
`backbone = embeddings + encoder` and `total = backbone + heads`. The `compact_*` entries count the
compacted model and equal `sum(x.size for x in leaves(compact(...)[1]))` for `compact_total`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from jaxdistill.models.bert import BertConfig


# ------------------------------------------------------------------------------------------- counting
def count_from_widths(config: BertConfig, hidden: int, attn_widths: Sequence[int],
                      ffn_widths: Sequence[int]) -> Dict[str, int]:
    """Parameter counts of a BERT with hidden width `hidden` and, per layer, `attn_widths[i]` kept
    attention inner dimensions (heads x dims per head) and `ffn_widths[i]` FFN neurons.

    Vocabulary, positions, token types, depth and heads (pooler / MLM / classifier) come from `config`.
    Returns {"embeddings", "encoder", "heads", "backbone", "total"} (Python ints).
    """
    d = int(hidden)
    emb = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * d + 2 * d
    enc = 0
    for a, f in zip(attn_widths, ffn_widths):
        a, f = int(a), int(f)
        enc += 3 * (d * a + a)          # query, key, value kernels [d, a] and biases [a]
        enc += a * d + d + 2 * d        # attention output kernel [a, d] + bias, attention LayerNorm
        enc += d * f + f + f * d + d    # intermediate [d, f] + bias, output [f, d] + bias
        enc += 2 * d                    # output LayerNorm
    heads = 0
    if config.with_pooler:
        heads += d * d + d
    if config.with_mlm_head:
        heads += d * d + d + 2 * d + config.vocab_size  # transform, its LayerNorm, vocabulary bias
    if config.num_labels:
        heads += d * config.num_labels + config.num_labels
    return dict(embeddings=emb, encoder=enc, heads=heads, backbone=emb + enc, total=emb + enc + heads)


def full_param_count(config: BertConfig) -> Dict[str, int]:
    """`count_from_widths` of the unpruned model described by `config`."""
    a = config.num_attention_heads * config.attention_head_size
    n = config.num_hidden_layers
    return count_from_widths(config, config.hidden_size, [a] * n, [config.intermediate_size] * n)


# ----------------------------------------------------------------------------------------------- plan
@dataclasses.dataclass(frozen=True)
class CompactionPlan:
    """Which units of a masked model the compacted model keeps (NumPy index arrays, original order).

    hidden_idx [d']; ffn_idx, ffn_keep [N, F'] (keep = 0 marks padding units, zeroed);
    head_idx [N, H']; dim_idx, dim_keep [N, H', d_h'] (padding heads / dims have keep = 0).
    """

    hidden_idx: np.ndarray
    ffn_idx: np.ndarray
    ffn_keep: np.ndarray
    head_idx: np.ndarray
    dim_idx: np.ndarray
    dim_keep: np.ndarray

    @property
    def widths(self) -> Tuple[int, int, int, int]:
        """(hidden d', ffn F', heads H', head dim d_h') of the compacted model."""
        return (len(self.hidden_idx), self.ffn_idx.shape[1], self.head_idx.shape[1], self.dim_idx.shape[2])


def _kept_then_padding(keep: np.ndarray, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the kept entries of a 1-D bool vector (in order), padded with pruned ones to `width`."""
    kept, pruned = np.flatnonzero(keep), np.flatnonzero(~keep)
    idx = np.concatenate([kept, pruned[: width - len(kept)]]).astype(np.int32)
    flag = np.zeros(width, np.float32)
    flag[: len(kept)] = 1.0
    return idx, flag


def _bool_masks(masks: Mapping[str, Any]):
    try:
        hid = np.asarray(masks["hidden"]) > 0
        attn = np.asarray(masks["attn"]) > 0
        ffn = np.asarray(masks["ffn"]) > 0
    except KeyError as e:
        raise ValueError(f"masks need the keys 'hidden', 'attn' and 'ffn' (missing {e}); "
                         "build them with pruning.init_masks(config)") from None
    if hid.ndim != 1 or attn.ndim != 3 or ffn.ndim != 2 or attn.shape[0] != ffn.shape[0]:
        raise ValueError(f"masks have shapes hidden {hid.shape}, attn {attn.shape}, ffn {ffn.shape}; "
                         "expected hidden [d], attn [N, H, d_h], ffn [N, F]")
    return hid, attn, ffn


def compaction_plan(masks: Mapping[str, Any]) -> CompactionPlan:
    """The `CompactionPlan` of `masks` (concrete arrays). Raises when no hidden dimension is kept."""
    hid, attn, ffn = _bool_masks(masks)
    if not hid.any():
        raise ValueError("the hidden mask keeps no dimension; a BERT needs hidden_size >= 1 "
                         "(raise pruning.hidden)")
    n, h, _ = attn.shape
    f2 = max(1, int(ffn.sum(1).max()))
    ffn_idx, ffn_keep = zip(*[_kept_then_padding(ffn[i], f2) for i in range(n)])
    head_any = attn.any(-1)
    h2 = max(1, int(head_any.sum(1).max()))
    dh2 = max(1, int(attn.sum(-1).max()))
    head_idx = np.zeros((n, h2), np.int32)
    dim_idx = np.zeros((n, h2, dh2), np.int32)
    dim_keep = np.zeros((n, h2, dh2), np.float32)
    for i in range(n):
        head_idx[i], head_flag = _kept_then_padding(head_any[i], h2)
        for j, head in enumerate(head_idx[i]):
            dim_idx[i, j], flag = _kept_then_padding(attn[i, head], dh2)
            dim_keep[i, j] = flag * head_flag[j]
    return CompactionPlan(np.flatnonzero(hid).astype(np.int32), np.stack(ffn_idx), np.stack(ffn_keep),
                          head_idx, dim_idx, dim_keep)


def remaining_widths(masks: Mapping[str, Any]) -> Dict[str, Any]:
    """Kept widths of `masks` (host side, for metrics and plots).

    Returns {"hidden": int, "ffn": [N] ints, "head_dims": [N] ints (kept head dimensions summed over
    heads), "heads": [N] ints (heads with at least one kept dimension)}.
    """
    hid, attn, ffn = _bool_masks(masks)
    return dict(hidden=int(hid.sum()), ffn=[int(x) for x in ffn.sum(1)],
                head_dims=[int(x) for x in attn.sum((1, 2))], heads=[int(x) for x in attn.any(-1).sum(1)])


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
    hid, attn, ffn = _bool_masks(masks)
    eff = count_from_widths(config, int(hid.sum()), attn.sum((1, 2)), ffn.sum(1))
    plan = compaction_plan(masks)
    d2, f2, h2, dh2 = plan.widths
    n = attn.shape[0]
    comp = count_from_widths(config, d2, [h2 * dh2] * n, [f2] * n)
    out = dict(eff)
    out.update({f"compact_{k}": v for k, v in comp.items()})
    out["full_total"] = full_param_count(config)["total"]
    return out


# ------------------------------------------------------------------------------------------- compact
def compact(config: BertConfig, params: Mapping[str, Any], masks: Mapping[str, Any]
            ) -> Tuple[BertConfig, Dict[str, Any]]:
    """Slices the kept units of a masked student into a dense, smaller BERT: `(new_config, new_params)`.

    `params` is the student's Bert params (not the {"student", "projections"} tree). The result computes
    the same function as `Bert(config).apply({"params": params}, ..., masks=masks)` (up to float32
    summation order). Parameters come back as float32-or-original-dtype NumPy arrays.
    """
    if "student" in params and "embeddings" not in params:
        raise ValueError("compact takes the student's Bert params; pass params['student'], not the "
                         "{'student', 'projections'} training tree")
    n = config.num_hidden_layers
    hid_m, attn_m, ffn_m = _bool_masks(masks)
    want = (config.hidden_size,), (n, config.num_attention_heads, config.attention_head_size), \
        (n, config.intermediate_size)
    if (hid_m.shape, attn_m.shape, ffn_m.shape) != want:
        raise ValueError(f"masks shapes {hid_m.shape}, {attn_m.shape}, {ffn_m.shape} do not match the config "
                         f"({want}); build masks with pruning.init_masks(config)")
    plan = compaction_plan(masks)
    new_config = compact_config(config, plan)
    p = _to_numpy(params)
    hid = plan.hidden_idx
    ix = np.ix_(hid, hid)

    def ln(tree):
        return {"scale": tree["scale"][hid], "bias": tree["bias"][hid]}

    e = p["embeddings"]
    out: Dict[str, Any] = {"embeddings": {
        "word_embeddings": {"embedding": e["word_embeddings"]["embedding"][:, hid]},
        "position_embeddings": e["position_embeddings"][:, hid],
        "token_type_embeddings": e["token_type_embeddings"][:, hid],
        "LayerNorm": ln(e["LayerNorm"]),
    }}
    for i in range(n):
        lp = p[f"layer_{i}"]
        a = lp["attention"]
        heads, dims, keep = plan.head_idx[i][:, None], plan.dim_idx[i], plan.dim_keep[i]  # [H',1], [H',d_h']
        att = {}
        for name in ("query", "key", "value"):
            kern = a[name]["kernel"][hid][:, heads, dims]                      # [d', H', d_h']
            att[name] = {"kernel": (kern * keep[None]).astype(kern.dtype),
                         "bias": (a[name]["bias"][heads, dims] * keep).astype(kern.dtype)}
        okern = a["output"]["kernel"][heads, dims][:, :, hid]                    # [H', d_h', d']
        att["output"] = {"kernel": (okern * keep[..., None]).astype(okern.dtype), "bias": a["output"]["bias"][hid]}
        att["LayerNorm"] = ln(a["LayerNorm"])
        fidx, fkeep = plan.ffn_idx[i], plan.ffn_keep[i]
        ik = lp["intermediate"]["kernel"][hid][:, fidx]                           # [d', F']
        ok = lp["output"]["kernel"][fidx][:, hid]                                 # [F', d']
        out[f"layer_{i}"] = {
            "attention": att,
            "intermediate": {"kernel": (ik * fkeep[None]).astype(ik.dtype),
                             "bias": (lp["intermediate"]["bias"][fidx] * fkeep).astype(ik.dtype)},
            "output": {"kernel": (ok * fkeep[:, None]).astype(ok.dtype), "bias": lp["output"]["bias"][hid]},
            "LayerNorm": ln(lp["LayerNorm"]),
        }
    if "pooler" in p:
        out["pooler"] = {"kernel": p["pooler"]["kernel"][ix], "bias": p["pooler"]["bias"][hid]}
    if "mlm_transform" in p:
        out["mlm_transform"] = {"kernel": p["mlm_transform"]["kernel"][ix], "bias": p["mlm_transform"]["bias"][hid]}
        out["mlm_LayerNorm"] = ln(p["mlm_LayerNorm"])
        out["mlm_bias"] = p["mlm_bias"]
    if "classifier" in p:
        out["classifier"] = {"kernel": p["classifier"]["kernel"][hid], "bias": p["classifier"]["bias"]}
    unknown = sorted(set(p) - set(out))
    if unknown:
        raise ValueError(f"compact does not know how to slice the parameter groups {unknown}; "
                         "only jaxdistill Bert params are supported")
    return new_config, out


def _to_numpy(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def leaf_count(params: Mapping[str, Any]) -> int:
    """Number of scalars in a params tree (sum of leaf sizes)."""
    if isinstance(params, Mapping):
        return sum(leaf_count(v) for v in params.values())
    return int(np.size(params))


__all__: List[str] = ["CompactionPlan", "compact", "compact_config", "compaction_plan", "count_from_widths",
                      "count_params", "full_param_count", "leaf_count", "remaining_widths"]
