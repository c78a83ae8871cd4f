"""Any jaxdistill BERT as an exactly equivalent standard BERT (what Hugging Face `BertConfig` expresses).

A compacted HomoDistil student can keep `head_dim` dimensions per head with heads x head_dim != hidden, and
keeps its teacher's attention scale `1/sqrt(attention_scale_dim)`. A standard BERT has hidden / heads
dimensions per head and the scale `1/sqrt(hidden / heads)`. `to_standard` rewrites the parameters so the
standard model computes the same function:

- the scale: the query kernel and bias are multiplied by `sqrt(standard_head_dim / attention_scale_dim)`,
  so `q'.k / sqrt(standard_head_dim) == q.k / sqrt(attention_scale_dim)`;
- the widths: every head is zero-padded from `head_dim` to `standard_head_dim = hidden / standard_heads`
  dimensions. Zero query/key columns add nothing to any score; zero value columns and zero rows of the
  output projection add nothing to the output. When heads do not divide hidden, whole zero heads are added
  (`standard_heads` is the fewest heads >= heads that divide hidden with room for head_dim): a zero head has
  uniform attention over zero values, and so contributes exactly zero too.

With `a = hidden - heads x head_dim` padded attention dimensions, the padding costs `4 x hidden x a + 3 x a`
parameters per layer (reported as `StandardForm.padding_params`); a model that is already standard comes back
unchanged. A student whose heads x head_dim exceed hidden (or with no head count that fits, e.g. a prime
hidden size) has no exact standard form; export it in jaxdistill's own format.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from jaxdistill.errors import ModelError
from jaxdistill.models.bert import BertConfig


@dataclasses.dataclass(frozen=True)
class StandardForm:
    """A standard-BERT rewrite of a model (see the module docstring).

    config / params: the standard model (NumPy params in jaxdistill's layout). padding_params: zero
    parameters added by padding. added_heads: all-zero heads added per layer. query_scale: the factor folded
    into the query kernel and bias (1.0: none). kept_head_dim: the real dimensions per head before padding.
    """

    config: BertConfig
    params: Dict[str, Any]
    padding_params: int
    added_heads: int
    query_scale: float
    kept_head_dim: int


def standard_heads(hidden: int, heads: int, head_dim: int) -> Tuple[int, int]:
    """(heads', dims per head') of the standard layout holding `heads` heads of `head_dim` dimensions in
    width `hidden`: the fewest heads' >= heads that divide hidden with hidden / heads' >= head_dim.
    Raises ModelError when there is none (heads x head_dim > hidden)."""
    for count in range(heads, hidden + 1):
        if hidden % count == 0 and hidden // count >= head_dim:
            return count, hidden // count
    raise ModelError(
        f"a model with {heads} heads x {head_dim} dimensions in hidden {hidden} has no exact standard BERT form "
        f"(that needs a head count >= {heads} dividing {hidden} into heads of >= {head_dim} dimensions); export "
        "it in jaxdistill's own format (--own-format, own_format=True), or prune to heads x head_dim <= hidden "
        "with a hidden size the heads divide")


def has_standard_form(config) -> bool:
    """Whether a BertConfig can be written as a standard BERT (exactly, or with zero-padded heads)."""
    heads, head_dim, hidden = config.num_attention_heads, config.attention_head_size, config.hidden_size
    try:
        standard_heads(hidden, heads, head_dim)
        return True
    except ModelError:
        return False


def _pad_heads(array: np.ndarray, head_axis: int, heads: int, head_dim: int) -> np.ndarray:
    """Zero-pads `array`'s (head, dim) axes at `head_axis`, `head_axis + 1` to (heads, head_dim)."""
    pad = [(0, 0)] * array.ndim
    pad[head_axis] = (0, heads - array.shape[head_axis])
    pad[head_axis + 1] = (0, head_dim - array.shape[head_axis + 1])
    return np.pad(array, pad)


def standard_attention(attention: Mapping[str, Any], heads: int, head_dim: int, query_scale: float
                       ) -> Dict[str, Any]:
    """One layer's attention parameters ({query, key, value, output, LayerNorm}) padded to `heads` x
    `head_dim` with `query_scale` folded into the query."""
    out = dict(attention)
    for name in ("query", "key", "value"):
        kernel = np.asarray(attention[name]["kernel"])  # [d, H, d_h]
        bias = np.asarray(attention[name]["bias"])      # [H, d_h]
        if name == "query" and query_scale != 1.0:
            kernel = (kernel * np.float32(query_scale)).astype(kernel.dtype)
            bias = (bias * np.float32(query_scale)).astype(bias.dtype)
        out[name] = {"kernel": _pad_heads(kernel, 1, heads, head_dim), "bias": _pad_heads(bias, 0, heads, head_dim)}
    out["output"] = {"kernel": _pad_heads(np.asarray(attention["output"]["kernel"]), 0, heads, head_dim),  # [H, d_h, d]
                     "bias": attention["output"]["bias"]}
    return out


def _size(tree) -> int:
    if isinstance(tree, Mapping):
        return sum(_size(v) for v in tree.values())
    return int(np.size(tree))


def to_standard(config: BertConfig, params: Mapping[str, Any]) -> StandardForm:
    """The standard BERT computing what `Bert(config)` with `params` computes (see the module docstring).

    `params`: host arrays in jaxdistill's layout. Layers other than attention are shared, not copied.
    """
    heads, head_dim = config.num_attention_heads, config.attention_head_size
    if config.is_standard:
        return StandardForm(config, dict(params), 0, 0, 1.0, head_dim)
    new_heads, new_head_dim = standard_heads(config.hidden_size, heads, head_dim)
    scale = 1.0 if new_head_dim == config.scale_dim else math.sqrt(new_head_dim / config.scale_dim)
    new_params = dict(params)
    for i in range(config.num_hidden_layers):
        layer = dict(params[f"layer_{i}"])
        layer["attention"] = standard_attention(layer["attention"], new_heads, new_head_dim, scale)
        new_params[f"layer_{i}"] = layer
    new_config = config.replace(num_attention_heads=new_heads, head_dim=None, attention_scale_dim=None)
    assert new_config.is_standard, new_config
    return StandardForm(new_config, new_params, _size(new_params) - _size(params), new_heads - heads, scale,
                        head_dim)
