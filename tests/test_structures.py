"""The structures table and everything derived from it, checked against each other on random masks:
multipliers, group scores, parameter counts, compaction, FLOPs and the masked vs compacted forward."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxdistill import compaction, metrics, pruning, structures
from jaxdistill.errors import ConfigError
from jaxdistill.models import Bert, init_params
from tiny import tiny_config

CONFIG = tiny_config(num_labels=3)  # d=32, N=2, H=4, d_h=8, F=48, V=97, P=64, T=2, C=3; MLM head + pooler


@pytest.fixture(scope="module")
def params():
    return init_params(CONFIG, jax.random.key(0))


def _masks(kind, seed):
    """Random 0/1 masks. balanced_*: what prune_update produces (uniform widths); nonuniform: independent
    per-layer/per-head widths with a whole head pruned in layer 0; degenerate: layer 1 keeps no FFN neuron
    and no head at all."""
    rng = np.random.default_rng(seed)
    n, H, dh, F, d = 2, 4, 8, 48, 32
    pick = lambda size, k: np.isin(np.arange(size), rng.choice(size, k, replace=False)).astype(np.float32)
    hidden = pick(d, 21)
    if kind == "balanced_head_dim":
        attn = np.stack([np.stack([pick(dh, 5) for _ in range(H)]) for _ in range(n)])
        ffn = np.stack([pick(F, 30) for _ in range(n)])
    elif kind == "balanced_heads":
        attn = np.stack([np.repeat(pick(H, 3)[:, None], dh, 1) for _ in range(n)])
        ffn = np.stack([pick(F, 17) for _ in range(n)])
    else:
        attn = (rng.random((n, H, dh)) < 0.55).astype(np.float32)
        attn[0, 2] = 0.0
        ffn = (rng.random((n, F)) < 0.6).astype(np.float32)
        hidden = (rng.random(d) < 0.7).astype(np.float32)
        if kind == "degenerate":
            attn[1], ffn[1] = 0.0, 0.0
    return {"hidden": jnp.asarray(hidden), "attn": jnp.asarray(attn), "ffn": jnp.asarray(ffn)}


KINDS = ("balanced_head_dim", "balanced_heads", "nonuniform", "degenerate")


def _kept(params, mults):
    """Number of entries whose multiplier is 1, per top-level scope (absent multiplier: every entry kept)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        m = mults
        for key in path:
            m = m.get(key.key) if isinstance(m, dict) else None
        kept = leaf.size if m is None else int(np.broadcast_to(np.asarray(m), leaf.shape).sum())
        out[path[0].key] = out.get(path[0].key, 0) + kept
    return out


# ------------------------------------------------------------------------------------------------ the table
def test_table_reads_the_models_logical_axes(params):
    table = structures.param_uses()
    paths = {tuple(k.key for k in p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert all(structures.lookup(p) is not None for p in paths), "every parameter of Bert is in the table"
    U = structures.Use
    assert table[("layer_<i>", "attention", "query", "kernel")] == (U("hidden", (0,)), U("attn", (1, 2)))
    assert table[("layer_<i>", "attention", "output", "kernel")] == (U("attn", (0, 1)), U("hidden", (2,)))
    assert table[("layer_<i>", "output", "kernel")] == (U("ffn", (0,)), U("hidden", (1,)))
    assert table[("pooler", "kernel")] == table[("mlm_transform", "kernel")] == (U("hidden", (0,)), U("hidden", (1,)))
    assert table[("embeddings", "word_embeddings", "embedding")] == (U("hidden", (1,)),)
    assert table[("mlm_bias",)] == table[("classifier", "bias")] == ()
    assert structures.mask_shapes(CONFIG) == {"hidden": (32,), "attn": (2, 4, 8), "ffn": (2, 48)}
    assert structures.mask_shapes(tiny_config(head_dim=6)) == {"hidden": (32,), "attn": (2, 4, 6), "ffn": (2, 48)}
    assert {k: v.shape for k, v in pruning.init_masks(CONFIG).items()} == structures.mask_shapes(CONFIG)


def test_unclassified_axes_are_refused():
    with pytest.raises(ConfigError, match="logical axis 'rows'"):
        structures.uses_of_names(("embed", "rows"), ("layer_0", "x", "kernel"))
    with pytest.raises(ConfigError, match="incomplete 'attn' unit"):
        structures.uses_of_names(("embed", "heads"), ("layer_0", "x", "kernel"))
    with pytest.raises(ConfigError, match="outside the encoder layers"):
        structures.uses_of_names(("mlp",), ("pooler", "bias"))
    with pytest.raises(ConfigError, match="num_layers=3"):
        pruning.group_scores(init_params(CONFIG, jax.random.key(0)), 3)


# ------------------------------------------------------------------------------------- derived, cross-checked
@pytest.mark.parametrize("kind", KINDS)
def test_counts_multipliers_and_compaction_agree(params, kind):
    masks = _masks(kind, seed=KINDS.index(kind))
    mults = jax.jit(pruning.param_multipliers)(masks, params)
    kept = _kept(params, mults)
    counts = pruning.count_params(CONFIG, masks)
    assert counts["total"] == sum(kept.values())
    assert counts["embeddings"] == kept["embeddings"]
    assert counts["encoder"] == kept["layer_0"] + kept["layer_1"]
    c2, p2 = pruning.compact(CONFIG, params, masks)
    dense_count = pruning.count_params(c2, pruning.init_masks(c2))["total"]
    assert counts["compact_total"] == compaction.leaf_count(p2) == dense_count
    uniform = kind.startswith("balanced")
    if uniform:
        assert compaction.leaf_count(p2) == sum(kept.values())
    else:
        assert compaction.leaf_count(p2) > sum(kept.values())  # padded layers/heads
    # compaction keeps exactly the entries the multipliers keep (padding entries are zero): the same values
    values = lambda tree: np.sort(np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)]))
    nonzero = lambda v: v[v != 0]
    masked = values(structures.apply_multipliers(params, mults))
    assert nonzero(masked).size > 5000
    np.testing.assert_array_equal(nonzero(masked), nonzero(values(p2)))


def test_group_scores_of_unit_scores_count_what_each_unit_removes(params):
    """With every per-parameter score 1, a unit's score is the number of entries it removes: counted once by
    zeroing the unit alone and watching the multipliers, once by hand from the architecture."""
    ones = jax.tree.map(jnp.ones_like, params)
    groups = jax.tree.map(np.asarray, jax.jit(pruning.group_scores, static_argnums=1)(ones, 2))
    full = jax.tree.map(np.asarray, pruning.init_masks(CONFIG))
    mult = jax.jit(pruning.param_multipliers)
    total = sum(_kept(params, mult(full, params)).values())
    V, P, T, d, H, dh, F, C = 97, 64, 2, 32, 4, 8, 48, 3
    by_hand = {"hidden": (V + P + T) + 2 + 2 * (3 * H * dh + H * dh + 1 + 2 + 2 * F + 1 + 2)
               + (2 * d - 1 + 1) + (2 * d - 1 + 1 + 2) + C,
               "attn": 3 * d + 3 + d, "ffn": d + 1 + d}
    for name, scores in groups.items():
        assert scores.shape == full[name].shape
        for unit in np.ndindex(*scores.shape):
            m = {k: v.copy() for k, v in full.items()}
            m[name][unit] = 0.0
            removed = total - sum(_kept(params, mult(m, params)).values())
            assert scores[unit] == removed == by_hand[name], (name, unit)


@pytest.mark.parametrize("kind", KINDS)
def test_flops_of_masked_model_equal_flops_of_compacted_model(params, kind):
    masks = _masks(kind, seed=10 + KINDS.index(kind))
    L = 16
    widths = pruning.remaining_widths(masks)
    c2, _ = pruning.compact(CONFIG, params, masks)
    masked, dense = metrics.bert_forward_flops(CONFIG, L, widths), metrics.bert_forward_flops(c2, L)
    if kind.startswith("balanced"):
        assert masked == dense
    else:
        assert masked < dense  # the compacted model computes its padding too
    # elementwise: 2 L per kept entry of each per-token kernel (encoder, MLM transform, tied decoder) + attention
    mults = pruning.param_multipliers(masks, params)
    kept = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = tuple(k.key for k in path)
        if (keys[-1] == "kernel" and keys[0] not in ("pooler", "classifier")) or \
                keys[:2] == ("embeddings", "word_embeddings"):
            m = mults
            for key in keys:
                m = m[key]
            kept += int(np.broadcast_to(np.asarray(m), leaf.shape).sum())
    attention = sum(4 * L * L * a for a in widths["head_dims"])
    assert masked == 2 * L * kept + attention


@pytest.mark.parametrize("kind", KINDS)
def test_masked_forward_equals_compacted_forward(params, kind):
    masks = _masks(kind, seed=20 + KINDS.index(kind))
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 97, (3, 10)), jnp.int32)
    att = np.ones((3, 10), np.int32)
    att[1, 6:] = 0
    att = jnp.asarray(att)
    masked = Bert(CONFIG).apply({"params": params}, ids, att, masks=masks)
    c2, p2 = pruning.compact(CONFIG, params, masks)
    dense = Bert(c2).apply({"params": p2}, ids, att)
    hid = np.flatnonzero(np.asarray(masks["hidden"]))
    np.testing.assert_allclose(np.asarray(masked.mlm_logits), np.asarray(dense.mlm_logits), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(masked.logits), np.asarray(dense.logits), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(masked.pooled)[:, hid], np.asarray(dense.pooled), atol=1e-5, rtol=0)
    # and the masked params (pruned entries zeroed, as prune_update leaves them) give the same function
    mults = pruning.param_multipliers(masks, params)
    zeroed = structures.apply_multipliers(params, mults)
    again = Bert(CONFIG).apply({"params": zeroed}, ids, att, masks=masks)
    np.testing.assert_allclose(np.asarray(again.mlm_logits), np.asarray(masked.mlm_logits), atol=1e-5, rtol=0)


def test_count_from_widths_is_the_count_of_the_dense_model():
    """count_from_widths(d', a, f) == the leaf count of a Bert built with those widths."""
    for d2, heads, dh2, f2 in ((20, 4, 5, 30), (16, 2, 8, 7), (1, 1, 1, 1)):
        c2 = CONFIG.replace(hidden_size=d2, num_attention_heads=heads, head_dim=dh2, intermediate_size=f2)
        counted = pruning.count_from_widths(CONFIG, d2, [heads * dh2] * 2, [f2] * 2)
        assert counted["total"] == compaction.leaf_count(init_params(c2, jax.random.key(0)))
