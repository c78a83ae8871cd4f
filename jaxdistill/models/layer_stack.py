"""Running BERT's encoder layers: unrolled (one submodule per layer) or under a scan, with a remat policy.

The parameter layout is the same either way: one subtree `layer_{i}` per layer, as Hugging Face names them,
which `structures`, `pruning`, compaction and `hf` import/export read. The scanned path stacks those subtrees
at the start of the forward pass (`stack_layer_params`: a leading [N] axis on every leaf) and scans one
layer's function over them with `jax.lax.scan`, the same loop `flax.linen.scan` lowers to; the gradient flows
back through the stacking, so gradients, optimizer state and importance keep the `layer_{i}` layout too. The
compile time of a scanned model does not grow with its depth (`bench/layers_scan.py`).

HomoDistil's per-layer masks are already stacked per layer (`attn` [N, H, d_h], `ffn` [N, F]) and are scanned
over with the parameters; the global hidden mask [d] is the same in every layer.

Remat policies (`BertConfig.remat`): "none" keeps every activation for the backward pass; "full" keeps only
each layer's input and recomputes the layer; "dots_saveable" keeps the outputs of matrix multiplications and
recomputes the element-wise work (`jax.checkpoint_policies.dots_with_no_batch_dims_saveable`).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

REMAT_POLICIES = ("none", "full", "dots_saveable")


def remat_policy_name(remat: Any) -> str:
    """The remat policy named by a `BertConfig.remat` value: False/None -> "none", True -> "full", or a name."""
    if remat is None or remat is False:
        return "none"
    if remat is True:
        return "full"
    return str(remat)


def checkpoint_policy(name: str) -> Optional[Callable]:
    """The `jax.checkpoint` policy of a remat policy name ("full" -> None: save nothing but the inputs)."""
    if name == "dots_saveable":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    return None


def stack_layer_params(params: Sequence[Any]) -> Any:
    """[tree of layer 0, ..., tree of layer N-1] -> one tree whose leaves have a leading [N] axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)


def unstack_layer_params(stacked: Any, num_layers: int) -> List[Any]:
    """Inverse of `stack_layer_params`: the list of N per-layer trees."""
    return [jax.tree.map(lambda leaf: leaf[i], stacked) for i in range(num_layers)]


def scan_layers(layer_fn: Callable, layer_params: Sequence[Any], x: Array, per_layer_masks: Tuple,
                dropout_rng: Optional[Array], remat: str, keep_intermediates: bool):
    """Runs `layer_fn` over the layers with `jax.lax.scan`.

    layer_fn(params_i, x [B, L, d], masks_i (a tuple of [N]-stripped masks or None), rng_i or None)
      -> (x [B, L, d], intermediates dict of arrays).
    layer_params: N per-layer parameter trees (same structure). per_layer_masks: a tuple of arrays with a
    leading [N] axis, or None entries. dropout_rng: one key (layer i uses `fold_in(key, i)`) or None.
    remat: a name in REMAT_POLICIES. keep_intermediates: also return every layer's output and intermediates.
    Returns (x, hidden_states, intermediates): hidden_states a list of N outputs [B, L, d] and intermediates a
    list of N dicts when `keep_intermediates`, else empty lists.
    """
    num_layers = len(layer_params)

    def body(h, xs):
        params_i, masks_i, i = xs
        rng_i = None if dropout_rng is None else jax.random.fold_in(dropout_rng, i)
        out, inter = layer_fn(params_i, h, masks_i, rng_i)
        return out, ((out, inter) if keep_intermediates else None)

    if remat != "none":
        body = jax.checkpoint(body, policy=checkpoint_policy(remat), prevent_cse=False)
    xs = (stack_layer_params(layer_params), tuple(per_layer_masks), jnp.arange(num_layers))
    x, ys = jax.lax.scan(body, x, xs)
    if not keep_intermediates:
        return x, [], []
    outs, inters = ys
    hidden = [outs[i] for i in range(num_layers)]
    per_layer = [jax.tree.map(lambda a: a[i], inters) for i in range(num_layers)]
    return x, hidden, per_layer
