"""HomoDistil pruning: config validation, schedule, PLATON importance, prune_update, and a short pruned run."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp
import optax

from jaxdistill import pruning
from jaxdistill.models import Bert, BertConfig, init_params
from tiny import tiny_config

CFG = dict(hidden=24, ffn=24, head_dim=4, warmup_steps=5, final_steps=10, every=5)


def _pc(total=40, config=None, **kw):
    return pruning.PruningConfig.from_config(dict(CFG, **kw), config or tiny_config(), total)


# ---------------------------------------------------------------------------------------------- config
def test_defaults_and_derived_fields():
    pc = pruning.PruningConfig.from_config(pruning.default_pruning_config(), tiny_config(), 100)
    assert (pc.enabled, pc.attn_structure, pc.every, pc.window, pc.beta1, pc.beta2) == (True, "head_dim", 10, 10, 0.85, 0.95)
    assert (pc.warmup_steps, pc.final_steps, pc.prune_end) == (10, 20, 80)
    assert (pc.hidden, pc.ffn, pc.attn) == (32, 48, 8)  # no targets: full widths
    hash(pc)  # static under jit


@pytest.mark.parametrize("overrides, message", [
    (dict(head_dim=None, attn_width=18), r"pruning.attn_width=18 is not a positive multiple of num_attention_heads=4.*16 or 20"),
    (dict(attn_structure="heads", head_dim=None, attn_width=12), r"attn_width=12 is not a positive multiple of the head dim 8"),
    (dict(hidden=3), r"pruning.hidden=3 is below the number of attention heads kept \(4\)"),
    (dict(hidden=40), r"pruning.hidden=40 is larger than the model; the teacher has 32"),
    (dict(ffn=49), r"pruning.ffn=49 is larger than the model"),
    (dict(head_dim=9), r"pruning.head_dim=9 is larger than the model; the teacher has 8"),
    (dict(attn_structure="heads", head_dim=None, heads=5), r"pruning.heads=5 is larger than the model"),
    (dict(heads=2), r"pruning.heads is for attn_structure='heads'"),
    (dict(attn_structure="heads"), r"pruning.head_dim is for attn_structure='head_dim'"),
    (dict(head_dim=4, attn_width=16), r"either pruning.attn_width or pruning.head_dim"),
    (dict(hidden=None, target_params=10 ** 9), r"target_params=1000000000 is larger than the model"),
    (dict(hidden=None, ffn=None, target_params=1000), r"target_params=1000 cannot be reached"),
    (dict(target_params=5000), r"every width .* is fixed"),
    (dict(warmup_steps=20, final_steps=20), r"warmup_steps \+ final_steps = 20 \+ 20 leaves no pruning phase"),
    (dict(every=0), r"pruning.every=0"),
    (dict(beta1=1.0), r"pruning.beta1=1.0 must be in \[0, 1\)"),
    (dict(attn_structure="rows"), r"attn_structure='rows'"),
    (dict(hiden=10), r"unknown pruning field\(s\) \['hiden'\]"),
    (dict(schedule="cubic"), r"pruning.schedule='cubic'; use one of \('iterative', 'oneshot'\)"),
    (dict(importance="fisher"), r"pruning.importance='fisher'; use one of \('platon', 'sensitivity', 'magnitude'\)"),
])
def test_invalid_configs_fail_at_build_time(overrides, message):
    with pytest.raises(ValueError, match=message):
        _pc(**overrides)


def test_target_params_solver_shared_ratio():
    bert_base = BertConfig()  # 768 / 3072 / 12 x 64 / 12 layers
    target = 14_000_000
    pc = pruning.PruningConfig.from_config(dict(target_params=target, params_scope="encoder"), bert_base, 1000)
    count = pc.final_param_count(bert_base)["encoder"]
    assert count <= target
    rho = pc.solved_ratio
    for w, full in ((pc.hidden, 768), (pc.ffn, 3072), (pc.attn, 64)):
        assert abs(w - rho * full) <= 0.5 + 1e-9
    # brute force over a fine grid of shared ratios with the same rounding: nothing larger fits the budget
    best = 0
    for r in np.linspace(0, 1, 4001):
        h, f, a = (max(1, int(np.floor(r * full + 0.5))) for full in (768, 3072, 64))
        c = pruning.count_from_widths(bert_base, h, [12 * a] * 12, [f] * 12)["encoder"]
        if c <= target:
            best = max(best, c)
    assert count >= best and count > 0.97 * target
    assert 300 <= pc.hidden <= 330 and 1200 <= pc.ffn <= 1320 and 25 <= pc.attn <= 28  # HomoDistil-tiny-like


def test_target_params_whole_heads_keeps_standard_shape_and_fixed_widths():
    config = tiny_config()
    pc = pruning.PruningConfig.from_config(dict(attn_structure="heads", ffn=40, target_params=9000,
                                                params_scope="total"), config, 100)
    assert pc.ffn == 40 and pc.hidden == pc.attn * 8  # hidden tied to heads x d_h: a standard BERT
    assert pc.final_param_count(config)["total"] <= 9000


# -------------------------------------------------------------------------------------------- schedule
def test_keep_ratio_endpoints_and_cubic_shape():
    pc = _pc(total=45, warmup_steps=5, final_steps=10)  # pruning phase t in [5, 35], span 30
    steps = np.arange(0, 46)
    r = {k: np.array([float(pruning.keep_ratio(t, pc)[k]) for t in steps]) for k in ("hidden", "ffn", "attn")}
    for k, r_t in (("hidden", 24 / 32), ("ffn", 24 / 48), ("attn", 4 / 8)):
        ref = r_t + (1 - r_t) * (1 - np.clip((steps - 5) / 30, 0, 1)) ** 3
        np.testing.assert_allclose(r[k], ref, rtol=0, atol=1e-6)
        assert np.all(r[k][:6] == 1.0) and np.all(r[k][35:] == np.float32(r_t))
        assert np.isclose(r[k][20], r_t + (1 - r_t) / 8, atol=1e-6)  # half-way: (1/2)^3 of the gap remains
    w = {k: np.array([int(pruning.target_widths(t, pc)[k]) for t in steps]) for k in ("hidden", "ffn", "attn")}
    assert np.all(np.diff(w["ffn"]) <= 0) and w["ffn"][5] == 48 and np.all(w["ffn"][35:] == 24)
    np.testing.assert_array_equal(w["ffn"], 24 + np.floor(24 * (1 - np.clip((steps - 5) / 30, 0, 1)) ** 3 + 0.5))


def test_cadence():
    pc = _pc(total=43, warmup_steps=5, final_steps=10, every=5)  # prune_end = 33
    on = [t for t in range(50) if bool(pruning.on_cadence(t, pc))]
    assert on == [10, 15, 20, 25, 30, 33]


# ------------------------------------------------------------------------------------------ importance
def test_importance_matches_numpy_reference():
    pc = _pc(window=3, beta1=0.85, beta2=0.95)
    rng = np.random.default_rng(0)
    shapes = {"a": (4, 3), "b": {"c": (5,)}}
    params = jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), shapes, is_leaf=lambda s: isinstance(s, tuple))
    state = pruning.init_importance(params)
    update = jax.jit(pruning.update_importance, static_argnames="config")
    ref = {k: np.zeros(s) for k, s in (("a", (4, 3)), ("c", (5,)))}
    I, U, acc = dict(ref), dict(ref), dict(ref)
    n = 0
    for step in range(8):
        grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
        state = update(state, params, grads, jnp.int32(step), config=pc)
        flat_p = {"a": params["a"], "c": params["b"]["c"]}
        flat_g = {"a": grads["a"], "c": grads["b"]["c"]}
        n += 1
        for k in acc:
            acc[k] = acc[k] + np.abs(flat_p[k].astype(np.float64) * flat_g[k])
        if (step + 1) % 3 == 0:
            for k in acc:
                s = acc[k] / n
                I[k] = 0.85 * I[k] + 0.15 * s
                U[k] = 0.95 * U[k] + 0.05 * np.abs(s - I[k])
                acc[k] = np.zeros_like(acc[k])
            n = 0
        got = {"a": state["ema_I"]["a"], "c": state["ema_I"]["b"]["c"]}
        for k in acc:
            np.testing.assert_allclose(np.asarray(got[k]), I[k], rtol=1e-5, atol=1e-7, err_msg=f"I step {step}")
            np.testing.assert_allclose(np.asarray({"a": state["ema_U"]["a"], "c": state["ema_U"]["b"]["c"]}[k]),
                                       U[k], rtol=1e-5, atol=1e-7, err_msg=f"U step {step}")
            np.testing.assert_allclose(np.asarray({"a": state["window_sum"]["a"], "c": state["window_sum"]["b"]["c"]}[k]),
                                       acc[k], rtol=1e-5, atol=1e-7)
        assert int(state["count"]) == n
        if step < 2:
            assert not np.any(np.asarray(state["ema_I"]["a"])), "EMA must not move before the window ends"
    scores = pruning.importance_scores(state, pc)
    np.testing.assert_allclose(np.asarray(scores["a"]), I["a"] * U["a"], rtol=1e-5)


def test_plain_sensitivity_setting():
    pc = _pc(window=1, beta1=0.0, beta2=1.0)
    rng = np.random.default_rng(1)
    params = {"w": rng.normal(size=(6,)).astype(np.float32)}
    state = pruning.init_importance(params)
    for step in range(3):
        grads = {"w": rng.normal(size=(6,)).astype(np.float32)}
        state = pruning.update_importance(state, params, grads, step, pc)
    np.testing.assert_allclose(np.asarray(pruning.importance_scores(state, pc)["w"]), np.abs(params["w"] * grads["w"]),
                               rtol=1e-6)


def test_sensitivity_importance_is_the_last_windows_mean():
    """importance="sensitivity" ignores beta1/beta2: the score is the mean |theta * grad| of the last closed
    window (steps 3..5 here), not an EMA over windows."""
    pc = _pc(window=3, beta1=0.85, beta2=0.95, importance="sensitivity")
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=(5,)).astype(np.float32)}
    state = pruning.init_importance(params)
    grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(7)]
    for step, g in enumerate(grads):
        state = pruning.update_importance(state, params, {"w": g}, step, pc)
    want = np.mean([np.abs(params["w"] * g) for g in grads[3:6]], axis=0)
    np.testing.assert_allclose(np.asarray(pruning.importance_scores(state, pc)["w"]), want, rtol=1e-5)


def test_magnitude_importance_needs_no_gradients_and_scores_abs_params():
    pc = _pc(importance="magnitude")
    params = {"w": np.array([0.5, -2.0, 0.1], np.float32)}
    state = pruning.init_importance(params)
    after = pruning.update_importance(state, params, {"w": np.ones(3, np.float32)}, 0, pc)
    assert after is state  # nothing accumulated
    np.testing.assert_allclose(np.asarray(pruning.importance_scores(state, pc, params)["w"]), [0.5, 2.0, 0.1], rtol=1e-7)
    with pytest.raises(ValueError, match="pass student_params"):
        pruning.importance_scores(state, pc)


def test_magnitude_pruning_keeps_the_largest_units():
    """With magnitude importance prune_update keeps, per FFN layer, the neurons whose weights (in and out) have
    the largest summed |theta| — checked against a NumPy sum over the FFN kernels and bias."""
    config = tiny_config()
    pc = _pc(importance="magnitude")
    params, opt_state = _setup(config, optax.sgd(0.1))
    masks, _, _ = jax.jit(pruning.prune_update, static_argnames="config")(
        pruning.init_masks(config), pruning.init_importance(params["student"]), params, opt_state, jnp.int32(20),
        config=pc)
    k = int(pruning.target_widths(20, pc)["ffn"])
    for layer in range(config.num_hidden_layers):
        p = jax.tree.map(np.asarray, params["student"])[f"layer_{layer}"]
        score = (np.abs(p["intermediate"]["kernel"]).sum(0) + np.abs(p["intermediate"]["bias"])
                 + np.abs(p["output"]["kernel"]).sum(1))
        keep = np.zeros_like(score)
        keep[np.argsort(-score, kind="stable")[:k]] = 1
        np.testing.assert_array_equal(np.asarray(masks["ffn"][layer]), keep, err_msg=f"layer {layer}")


def test_oneshot_schedule_cuts_at_the_first_pruning_step_then_holds():
    pc_iter, pc_one = _pc(), _pc(schedule="oneshot")
    full = {"hidden": pc_one.full_hidden, "ffn": pc_one.full_ffn, "attn": pc_one.full_attn}
    target = {"hidden": pc_one.hidden, "ffn": pc_one.ffn, "attn": pc_one.attn}
    for t in range(0, pc_one.warmup_steps + 1):
        assert {k: int(v) for k, v in pruning.target_widths(t, pc_one).items()} == full
    for t in range(pc_one.warmup_steps + 1, pc_one.total_steps + 1):
        assert {k: int(v) for k, v in pruning.target_widths(t, pc_one).items()} == target
    # the same warm-up and cadence as the iterative schedule; the iterative one is still wider mid-way
    assert [t for t in range(41) if pruning.on_cadence(t, pc_one)] == [t for t in range(41) if pruning.on_cadence(t, pc_iter)]
    assert int(pruning.target_widths(15, pc_iter)["ffn"]) > pc_iter.ffn
    config = tiny_config()
    opt = optax.adamw(1e-3)
    params, opt_state = _setup(config, opt)
    imp = _fake_importance(params, np.random.default_rng(4))
    update = jax.jit(pruning.prune_update, static_argnames="config")
    masks = pruning.init_masks(config)
    history = []
    for t in range(1, pc_one.total_steps + 1):
        masks, params, opt_state = update(masks, imp, params, opt_state, jnp.int32(t), config=pc_one)
        history.append({k: np.asarray(v).copy() for k, v in masks.items()})
    first = min(t for t in range(41) if pruning.on_cadence(t, pc_one))
    assert all(np.all(h["ffn"] == 1) for h in history[:first - 1])
    cut = history[first - 1]
    assert cut["hidden"].sum() == pc_one.hidden and np.all(cut["ffn"].sum(-1) == pc_one.ffn)
    assert np.all(cut["attn"].sum(-1) == pc_one.attn)
    for h in history[first:]:  # later updates change nothing
        for k in h:
            np.testing.assert_array_equal(h[k], cut[k])


def test_group_scores_sum_everything_a_unit_removes():
    """Reference: a unit's score = sum of parameter scores where removing that unit alone zeroes the parameter."""
    config = tiny_config(num_labels=3)
    params = init_params(config, jax.random.key(0))
    rng = np.random.default_rng(2)
    scores = jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape), jnp.float32), params)
    groups = jax.jit(pruning.group_scores, static_argnums=1)(scores, config.num_hidden_layers)
    ones = jax.tree.map(np.asarray, pruning.init_masks(config))
    multipliers = jax.jit(pruning.param_multipliers)

    def ref(group, index):
        m = dict(ones)
        m[group] = ones[group].copy()
        m[group][index] = 0.0
        mults = jax.tree.map(np.asarray, multipliers(m, params))
        total = 0.0
        for path, s in jax.tree_util.tree_leaves_with_path(scores):
            node = mults
            for key in path:
                node = node.get(key.key) if isinstance(node, dict) else None
            if node is not None:
                total += float(np.sum(np.asarray(s) * (1 - np.broadcast_to(np.asarray(node), s.shape))))
        return total

    for group, index in (("hidden", 3), ("hidden", 31), ("attn", (1, 2, 5)), ("attn", (0, 0, 0)), ("ffn", (0, 7)),
                         ("ffn", (1, 47))):
        np.testing.assert_allclose(float(groups[group][index]), ref(group, index), rtol=1e-5, err_msg=str((group, index)))


# ---------------------------------------------------------------------------------------------- update
def _setup(config, optimizer, seed=0):
    params = {"student": init_params(config, jax.random.key(seed)), "projections": {"w": jnp.ones((3, 3))}}
    return params, optimizer.init(params)


def _fake_importance(params, rng):
    imp = pruning.init_importance(params["student"])
    rand = lambda t: jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape), jnp.float32), t)
    return dict(imp, ema_I=rand(params["student"]), ema_U=rand(params["student"]))


def test_prune_update_off_cadence_returns_inputs_and_on_cadence_selects_top_k():
    config = tiny_config()
    pc = _pc()
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    params, opt_state = _setup(config, opt)
    imp = _fake_importance(params, np.random.default_rng(0))
    masks = pruning.init_masks(config)
    update = jax.jit(pruning.prune_update, static_argnames="config")
    out = update(masks, imp, params, opt_state, jnp.int32(7), config=pc)
    for a, b in zip(jax.tree.leaves((masks, params, opt_state)), jax.tree.leaves(out)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    new_masks, _, _ = update(masks, imp, params, opt_state, jnp.int32(20), config=pc)
    # reference top-k in NumPy from the same scores
    g = jax.tree.map(np.asarray, pruning.group_scores(pruning.importance_scores(imp, pc), 2))
    w = {k: int(v) for k, v in pruning.target_widths(20, pc).items()}

    def topk(s, k):
        keep = np.zeros_like(s)
        keep[np.argsort(-s, kind="stable")[:k]] = 1.0
        return keep

    np.testing.assert_array_equal(np.asarray(new_masks["hidden"]), topk(g["hidden"], w["hidden"]))
    np.testing.assert_array_equal(np.asarray(new_masks["ffn"]), np.stack([topk(s, w["ffn"]) for s in g["ffn"]]))
    np.testing.assert_array_equal(np.asarray(new_masks["attn"]),
                                  np.stack([[topk(s, w["attn"]) for s in layer] for layer in g["attn"]]))


def test_ties_broken_by_index_and_no_revival():
    mask = jnp.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    score = jnp.array([1.0, 9.0, 2.0, 2.0, 0.5, 9.0])  # pruned units have the best scores
    keep = pruning._keep_top(score, mask, jnp.int32(2))
    np.testing.assert_array_equal(np.asarray(keep), [0, 0, 1, 1, 0, 0])
    keep = pruning._keep_top(jnp.zeros(6), mask, jnp.int32(3))  # all tied: lowest kept indices
    np.testing.assert_array_equal(np.asarray(keep), [1, 0, 1, 1, 0, 0])
    keep = pruning._keep_top(score, mask, jnp.int32(6))  # asking for more than is kept revives nothing
    np.testing.assert_array_equal(np.asarray(keep), np.asarray(mask))


@pytest.mark.parametrize("accumulate", [False, True])
def test_pruned_params_and_adam_moments_are_zero_and_stay_zero(accumulate):
    """After prune_update the pruned params and every params-shaped optimizer subtree are zero; a further
    optimizer step through the masked model keeps the pruned params at exactly zero."""
    config = tiny_config()
    pc = _pc()
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.01))
    if accumulate:
        opt = optax.MultiSteps(opt, every_k_schedule=2)
    params, opt_state = _setup(config, opt)
    masks = pruning.init_masks(config)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 97, (2, 8)), jnp.int32)

    def loss_fn(p, m):
        out = Bert(config).apply({"params": p["student"]}, ids, masks=m)
        return jnp.mean(out.mlm_logits ** 2) + jnp.sum(p["projections"]["w"] ** 2)

    @jax.jit
    def step(params, opt_state, m):
        grads = jax.grad(loss_fn)(params, m)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, grads

    for _ in range(3):  # make the moments (and MultiSteps' accumulator) non-zero
        params, opt_state, _ = step(params, opt_state, masks)
    imp = _fake_importance(params, np.random.default_rng(1))
    before = opt_state
    masks, params, opt_state = jax.jit(pruning.prune_update, static_argnames="config")(
        masks, imp, params, opt_state, jnp.int32(pc.prune_end), config=pc)
    assert pruning.remaining_widths(masks) == {"hidden": 24, "ffn": [24, 24], "head_dims": [16, 16], "heads": [4, 4]}
    mults = pruning.param_multipliers(masks, params["student"])

    def pruned_entries(tree):
        out = []
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            node = mults
            for key in path:
                node = node.get(key.key) if isinstance(node, dict) else None
            if node is not None:
                out.append(np.asarray(leaf)[np.broadcast_to(np.asarray(node), leaf.shape) == 0])
        return np.concatenate(out)

    def mirrors(state):
        adam = (state.inner_opt_state if accumulate else state)[1][0]
        return [adam.mu, adam.nu] + ([state.acc_grads] if accumulate else [])

    assert pruned_entries(params["student"]).size > 1000
    assert not np.any(pruned_entries(params["student"]))
    for old, tree in zip(mirrors(before), mirrors(opt_state)):
        assert np.any(pruned_entries(old["student"])), "the test needs non-zero moments before pruning"
        assert not np.any(pruned_entries(tree["student"])), "optimizer moments of pruned params must be zero"
        np.testing.assert_array_equal(np.asarray(tree["projections"]["w"]), np.asarray(old["projections"]["w"]))
    for _ in range(2):
        params, opt_state, grads = step(params, opt_state, masks)
        assert not np.any(pruned_entries(grads["student"])), "pruned params get exactly zero gradient"
    assert not np.any(pruned_entries(params["student"])), "a pruned parameter revived"


def test_whole_heads_mode_prunes_the_same_number_of_heads_per_layer():
    config = tiny_config()
    pc = _pc(attn_structure="heads", head_dim=None, heads=2, hidden=16)
    params, opt_state = _setup(config, optax.adam(1e-3))
    imp = _fake_importance(params, np.random.default_rng(3))
    masks, _, _ = pruning.prune_update(pruning.init_masks(config), imp, params, opt_state, 30, pc)
    a = np.asarray(masks["attn"])
    assert np.all((a.sum(-1) == 0) | (a.sum(-1) == 8)), "heads are kept or removed whole"
    assert pruning.remaining_widths(masks)["heads"] == [2, 2] and pruning.remaining_widths(masks)["hidden"] == 16


def test_masks_over_a_whole_schedule_change_only_on_cadence_monotone_and_end_at_targets():
    config = tiny_config()
    pc = _pc(total=47, warmup_steps=4, final_steps=9, every=3)  # prune_end 38 is not a multiple of 3
    params, opt_state = _setup(config, optax.adam(1e-3))
    update = jax.jit(pruning.prune_update, static_argnames="config")
    rng = np.random.default_rng(4)
    masks = pruning.init_masks(config)
    history = []
    for t in range(1, 48):
        imp = _fake_importance(params, rng)  # scores change every step: an unstable ranking
        new, params, opt_state = update(masks, imp, params, opt_state, jnp.int32(t), config=pc)
        changed = any(not np.array_equal(np.asarray(new[k]), np.asarray(masks[k])) for k in masks)
        if changed:
            history.append(t)
            assert bool(pruning.on_cadence(t, pc)), f"masks changed off cadence at step {t}"
        for k in masks:
            assert np.all(np.asarray(new[k]) <= np.asarray(masks[k])), f"unit revived at step {t}"
        w = pruning.remaining_widths(new)
        tw = {k: int(v) for k, v in pruning.target_widths(t if pruning.on_cadence(t, pc) else max(
            [s for s in range(t + 1) if bool(pruning.on_cadence(s, pc))] or [0]), pc).items()}
        assert w["hidden"] == tw["hidden"] and w["ffn"] == [tw["ffn"]] * 2 and w["head_dims"] == [4 * tw["attn"]] * 2
        masks = new
    assert len(history) >= 3 and bool(pruning.on_cadence(38, pc)) and not bool(pruning.on_cadence(39, pc))
    assert pruning.remaining_widths(masks) == {"hidden": 24, "ffn": [24, 24], "head_dims": [16, 16], "heads": [4, 4]}


def test_disabled_is_identity():
    config = tiny_config()
    pc = _pc(enabled=False)
    params, opt_state = _setup(config, optax.adam(1e-3))
    imp = pruning.init_importance(params["student"])
    assert pruning.update_importance(imp, params["student"], params["student"], 0, pc) is imp
    masks = pruning.init_masks(config)
    out = pruning.prune_update(masks, imp, params, opt_state, 10, pc)
    assert out[0] is masks and out[1] is params and out[2] is opt_state


# ------------------------------------------------------------------------------------------- short run
def test_short_pruned_distillation_run_reaches_targets_with_falling_loss():
    """A tiny HomoDistil run: MLM CE + hidden MSE to a frozen teacher copy, importance in the jitted step,
    prune_update between steps. The student starts as the teacher (distillation loss exactly 0), reaches the
    target widths at T - t_f, and recovers afterwards; the compacted model equals the masked one."""
    config = tiny_config()
    total = 40
    pc = _pc(total=total, hidden=20, ffn=24, head_dim=4, warmup_steps=4, final_steps=12, every=4)
    t_config, teacher = config, init_params(config, jax.random.key(0))
    _, student, masks = pruning.student_from_teacher(t_config, teacher)
    params = {"student": student, "projections": {}}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3, weight_decay=0.0))
    opt_state = opt.init(params)
    imp = pruning.init_importance(student)
    rng = np.random.default_rng(0)
    B, L = 8, 16
    ids = rng.integers(5, config.vocab_size, (B, L)).astype(np.int32)
    is_target = rng.random((B, L)) < 0.15
    is_target[:, 0] = True
    labels = np.where(is_target, ids, -100).astype(np.int32)
    inputs = jnp.asarray(np.where(is_target, 4, ids).astype(np.int32))  # 4 plays [MASK]
    labels = jnp.asarray(labels)
    model = Bert(config)

    def loss_fn(p, m, teacher):
        t_out = jax.lax.stop_gradient(model.apply({"params": teacher}, inputs, output_intermediates=True))
        s_out = model.apply({"params": p["student"]}, inputs, masks=m, output_intermediates=True)
        logp = jax.nn.log_softmax(s_out.mlm_logits)
        sel = labels >= 0
        nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
        mlm = jnp.sum(nll * sel) / jnp.sum(sel)
        hid = sum(jnp.mean((hs - ht) ** 2) for hs, ht in zip(s_out.hidden_states, t_out.hidden_states))
        return mlm + hid, hid

    @jax.jit
    def train_step(params, opt_state, imp, m, step, teacher):
        (loss, hid), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, m, teacher)
        imp = pruning.update_importance(imp, params["student"], grads["student"], step, pc)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, imp, loss, hid

    prune = jax.jit(pruning.prune_update, static_argnames="config")
    losses, hids = [], []
    for t in range(total):
        params, opt_state, imp, loss, hid = train_step(params, opt_state, imp, masks, jnp.int32(t), teacher)
        losses.append(float(loss))
        hids.append(float(hid))
        masks, params, opt_state = prune(masks, imp, params, opt_state, jnp.int32(t + 1), config=pc)
    assert hids[0] == 0.0, "the student starts as an exact copy of the teacher: distillation loss exactly 0"
    assert np.all(np.isfinite(losses))
    assert pruning.remaining_widths(masks) == {"hidden": 20, "ffn": [24, 24], "head_dims": [16, 16], "heads": [4, 4]}
    end = pc.prune_end  # last mask change happens after step end - 1
    assert max(losses[end - 12:end]) > losses[0] - 0.3, "pruning should visibly perturb the loss"
    assert np.all(np.diff(losses[end:]) < 0), np.round(losses, 3)  # recovers steadily once widths are final
    assert losses[-1] < losses[end] - 0.3, (losses[end], losses[-1])
    c2, p2 = pruning.compact(config, params["student"], masks)
    np.testing.assert_allclose(np.asarray(Bert(c2).apply({"params": p2}, inputs).mlm_logits),
                               np.asarray(model.apply({"params": params["student"]}, inputs, masks=masks).mlm_logits),
                               atol=1e-5, rtol=0)
    counts = pruning.count_params(config, masks)
    assert counts["backbone"] == pc.final_param_count(config)["backbone"]
