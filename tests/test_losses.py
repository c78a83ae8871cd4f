"""Each loss against an independent NumPy implementation of its formula, plus gradients and invariances."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import losses

B, L, C, D, H, DH = 3, 6, 7, 10, 4, 5
NEG = np.finfo(np.float32).min


def _mask():
    m = np.ones((B, L), np.float32)
    m[1, 4:] = 0
    m[2, 2:] = 0
    return m


def np_log_softmax(x, axis=-1):
    x = x.astype(np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def np_kl_rows(lt, ls):
    pt = np.exp(lt)
    return np.where(pt > 0, pt * (np.where(pt > 0, lt, 0) - np.where(pt > 0, ls, 0)), 0).sum(-1)


def np_sel_mean(v, m):
    return (v * m).sum() / m.sum()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(float(a), float(b), rtol=tol, atol=1e-6)


# --------------------------------------------------------------------------------- prediction layer
@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_soft_kl_and_soft_ce_match_numpy(rng, T):
    zs, zt, m = rng.normal(size=(B, L, C)) * 2, rng.normal(size=(B, L, C)) * 2, _mask()
    ls, lt = np_log_softmax(zs / T), np_log_softmax(zt / T)
    ref_kl = T * T * np_sel_mean((np.exp(lt) * (lt - ls)).sum(-1), m)
    ref_ce = T * T * np_sel_mean(-(np.exp(lt) * ls).sum(-1), m)
    close(losses.soft_kl(zs, zt, T, mask=m), ref_kl)
    close(losses.soft_cross_entropy(zs, zt, T, mask=m), ref_ce)
    close(losses.soft_kl(zs, zt, T), T * T * (np.exp(lt) * (lt - ls)).sum(-1).mean())


def test_soft_kl_exactly_zero_for_identical_logits(rng):
    z = rng.normal(size=(B, L, C)).astype(np.float32) * 5
    assert float(losses.soft_kl(z, z, 3.0, mask=_mask())) == 0.0
    assert float(jax.jit(losses.soft_kl)(z, z, 3.0)) == 0.0


def test_logit_mse_default_and_official(rng):
    zs, zt, m = rng.normal(size=(B, L, C)), rng.normal(size=(B, L, C)), _mask()
    per_pos = ((zs - zt) ** 2).sum(-1)
    close(losses.logit_mse(zs, zt, mask=m), np_sel_mean(per_pos, m))
    close(losses.logit_mse(zs, zt, mask=m, reduction="official"), np_sel_mean(per_pos, m) / C)
    zs2, zt2 = rng.normal(size=(B, C)), rng.normal(size=(B, C))  # classifier logits: torch MSELoss mean
    close(losses.logit_mse(zs2, zt2, reduction="official"), ((zs2 - zt2) ** 2).mean())


def test_mlm_and_hard_cross_entropy(rng):
    logits = rng.normal(size=(B, L, C))
    labels = np.full((B, L), -100)
    labels[0, 1], labels[1, 3], labels[2, 0] = 2, 6, 0
    lp = np_log_softmax(logits)
    sel = np.argwhere(labels != -100)
    ref = -np.mean([lp[b, i, labels[b, i]] for b, i in sel])
    close(losses.mlm_cross_entropy(logits, labels), ref)
    assert float(losses.mlm_cross_entropy(logits, np.full((B, L), -100))) == 0.0  # no target: 0, not NaN
    y = np.array([1, 0, 6])
    close(losses.cross_entropy(logits[:, 0], y), -np.mean(lp[np.arange(B), 0, y]))


# ---------------------------------------------------------------------------------- intermediate
def test_hidden_mse_default_and_official(rng):
    hs, ht, m = rng.normal(size=(B, L, D)), rng.normal(size=(B, L, D)), _mask()
    close(losses.hidden_mse(hs, ht, mask=m), np_sel_mean(((hs - ht) ** 2).mean(-1), m))
    close(losses.hidden_mse(hs, ht, mask=m, reduction="official"), ((hs - ht) ** 2).mean())


def test_cosine_embedding(rng):
    hs, ht, m = rng.normal(size=(B, L, D)), rng.normal(size=(B, L, D)), _mask()
    cos = (hs * ht).sum(-1) / np.linalg.norm(hs, axis=-1) / np.linalg.norm(ht, axis=-1)
    close(losses.cosine_embedding(hs, ht, mask=m), np_sel_mean(1 - cos, m))
    close(losses.cosine_embedding(3.0 * ht, ht, mask=m), 0.0)  # scale-invariant


@pytest.mark.parametrize("normalize", [True, False])
def test_pkd_patience(rng, normalize):
    K = 4
    s, t = rng.normal(size=(B, K, D)), rng.normal(size=(B, K, D))
    if normalize:
        us, ut = s / np.linalg.norm(s, axis=-1, keepdims=True), t / np.linalg.norm(t, axis=-1, keepdims=True)
    else:
        us, ut = s, t
    sq = (us - ut) ** 2
    ref = sum(np.mean(sq[:, k].sum(-1)) for k in range(K))
    close(losses.pkd_patience(s, t, normalize=normalize), ref)
    close(losses.pkd_patience(s, t, normalize=normalize, reduction="official"), sq.mean())


def _scores(rng, m, heads=H):
    raw = rng.normal(size=(B, heads, L, L)) * 2
    return raw + np.where(m[:, None, None, :] > 0, 0.0, NEG), raw


def np_softmax_rows(scores, m):
    x = np.where(m[:, None, None, :] > 0, scores, -np.inf)
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def test_attention_score_mse_default_and_official(rng):
    m = _mask()
    (ss, rs), (st, rt) = _scores(rng, m), _scores(rng, m)
    pair = m[:, None, :, None] * m[:, None, None, :] * np.ones((1, H, 1, 1))
    ref = ((rs - rt) ** 2 * pair).sum() / pair.sum()
    close(losses.attention_score_mse(ss.astype(np.float32), st.astype(np.float32), m), ref)
    # official: TinyBERT with a -10000 key mask, entries <= -100 zeroed, mean over everything
    ts = np.where(m[:, None, None, :] > 0, rs, -10000.0)
    tt = np.where(m[:, None, None, :] > 0, rt, -10000.0)
    ts, tt = np.where(ts <= -100, 0, ts), np.where(tt <= -100, 0, tt)
    close(losses.attention_score_mse(ss.astype(np.float32), st.astype(np.float32), m, reduction="official"),
          ((ts - tt) ** 2).mean())


def test_attention_kl(rng):
    m = _mask()
    ps, pt = np_softmax_rows(_scores(rng, m)[1], m), np_softmax_rows(_scores(rng, m)[1], m)
    kl = np.where(pt > 0, pt * (np.log(np.where(pt > 0, pt, 1)) - np.log(np.where(pt > 0, ps, 1))), 0).sum(-1)
    qm = m[:, None, :] * np.ones((1, H, 1))
    close(losses.attention_kl(ps.astype(np.float32), pt.astype(np.float32), m), np_sel_mean(kl, qm), tol=1e-4)


def np_relation_kl(xs, xt, m):
    """xs [B, R, L, ds], xt [B, R, L, dt]: KL of softmax(x x^T / sqrt(d)) rows, mean over R and valid queries."""
    def logp(x):
        rel = np.einsum("brqd,brkd->brqk", x, x) / np.sqrt(x.shape[-1])
        rel = np.where(m[:, None, None, :] > 0, rel, -np.inf)
        return np_log_softmax(rel)
    kl = np_kl_rows(logp(xt), logp(xs))
    return np_sel_mean(kl, m[:, None, :] * np.ones((1, xs.shape[1], 1)))


def test_value_relation_kl(rng):
    m = _mask()
    vs, vt = rng.normal(size=(B, H, L, 3)), rng.normal(size=(B, H, L, DH))  # head dims may differ
    close(losses.value_relation_kl(vs, vt, m), np_relation_kl(vs, vt, m), tol=1e-4)


def np_minilmv2_heads(x, R):
    """Independent reference: per token, concatenate the heads into one vector, then cut it into R pieces."""
    Bx, Hx, Lx, dh = x.shape
    out = np.zeros((Bx, R, Lx, Hx * dh // R))
    for b in range(Bx):
        for i in range(Lx):
            full = np.concatenate([x[b, h, i] for h in range(Hx)])
            for r, piece in enumerate(np.split(full, R)):
                out[b, r, i] = piece
    return out


@pytest.mark.parametrize("hs,dhs,ht,dht,R", [(12, 4, 8, 6, 6), (4, 6, 4, 6, 8), (2, 3, 4, 3, 3)])
def test_minilmv2_relation_kl_matches_numpy_across_head_counts(rng, hs, dhs, ht, dht, R):
    m = _mask()
    xs, xt = rng.normal(size=(B, hs, L, dhs)), rng.normal(size=(B, ht, L, dht))
    ref = np_relation_kl(np_minilmv2_heads(xs, R), np_minilmv2_heads(xt, R), m)
    close(losses.minilmv2_relation_kl(xs, xt, R, m), ref, tol=1e-4)


def test_minilmv2_with_r_equal_h_is_the_per_head_relation(rng):
    m = _mask()
    xs, xt = rng.normal(size=(B, H, L, DH)), rng.normal(size=(B, H, L, DH))
    close(losses.minilmv2_relation_kl(xs, xt, H, m), losses.value_relation_kl(xs, xt, m), tol=1e-6)
    close(losses.minilmv2_relation_kl(xs, xt, H, m), np_relation_kl(xs, xt, m), tol=1e-4)


def test_feature_map_mse(rng):
    hs, ht, m = rng.normal(size=(B, L, D)) * 3 + 1, rng.normal(size=(B, L, D)), _mask()
    std = lambda x: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    close(losses.feature_map_mse(hs, ht, mask=m), np_sel_mean(((std(hs) - std(ht)) ** 2).mean(-1), m))


# -------------------------------------------------------------------------------------- gradients
def test_soft_kl_and_soft_ce_give_the_same_student_gradient(rng):
    zs, zt, m = rng.normal(size=(B, L, C)), rng.normal(size=(B, L, C)), _mask()
    for T in (1.0, 3.0):
        g_kl = jax.grad(losses.soft_kl)(jnp.float32(zs), zt, T, m)
        g_ce = jax.grad(losses.soft_cross_entropy)(jnp.float32(zs), zt, T, m)
        np.testing.assert_allclose(g_kl, g_ce, rtol=1e-5, atol=1e-7)
        assert float(jnp.abs(g_kl).max()) > 1e-3


def test_temperature_squared_keeps_the_gradient_scale(rng):
    zs, zt = rng.normal(size=(16, 10)) * 0.5, rng.normal(size=(16, 10)) * 0.5
    norms = {T: float(jnp.linalg.norm(jax.grad(losses.soft_kl)(jnp.float32(zs), zt, T))) for T in (1, 2, 4, 8)}
    for T, n in norms.items():
        assert abs(n / norms[1] - 1) < 0.05, norms
    # without the T^2 factor the gradient would shrink like 1/T^2
    assert norms[8] / 64 < 0.05 * norms[1]


def test_teacher_gets_no_gradient(rng):
    m = _mask()
    s, t = jnp.float32(rng.normal(size=(B, L, D))), jnp.float32(rng.normal(size=(B, L, D)))
    for fn in (lambda a, b: losses.hidden_mse(a, b, m), lambda a, b: losses.cosine_embedding(a, b, m),
               lambda a, b: losses.soft_kl(a, b, 2.0, m), lambda a, b: losses.feature_map_mse(a, b, m)):
        gs, gt = jax.grad(fn, argnums=(0, 1))(s, t)
        assert float(jnp.abs(gt).max()) == 0.0 and float(jnp.abs(gs).max()) > 0


def test_bfloat16_inputs_are_computed_in_float32(rng):
    hs, ht, m = rng.normal(size=(B, L, D)), rng.normal(size=(B, L, D)), _mask()
    out = jax.jit(losses.hidden_mse)(jnp.bfloat16(hs), jnp.bfloat16(ht), m)
    assert out.dtype == jnp.float32
    close(out, losses.hidden_mse(np.float32(jnp.bfloat16(hs)), np.float32(jnp.bfloat16(ht)), m), tol=1e-6)
    assert losses.soft_kl(jnp.bfloat16(hs), jnp.bfloat16(ht), 2.0).dtype == jnp.float32


# ------------------------------------------------------------------------------- padding invariance
def _pad(x, axes, extra, rng, fill=None):
    for ax in axes:
        shape = list(x.shape)
        shape[ax] = extra
        junk = rng.normal(size=shape) * 7 if fill is None else np.full(shape, fill)
        x = np.concatenate([x, junk], axis=ax)
    return x


def test_appending_padding_changes_no_loss(rng):
    m, E = _mask(), 3
    mp = np.concatenate([m, np.zeros((B, E), np.float32)], axis=1)
    zs, zt = rng.normal(size=(B, L, C)), rng.normal(size=(B, L, C))
    hs, ht = rng.normal(size=(B, L, D)), rng.normal(size=(B, L, D))
    (ss, rs), (st, rt) = _scores(rng, m), _scores(rng, m)
    vs, vt = rng.normal(size=(B, H, L, DH)), rng.normal(size=(B, H, L, DH))
    ps, pt = np_softmax_rows(rs, m), np_softmax_rows(rt, m)
    labels = np.where(rng.random((B, L)) < 0.5, rng.integers(0, C, (B, L)), -100)

    def pad_scores(raw, m_pad):
        raw = _pad(_pad(raw, [3], E, rng), [2], E, rng)
        return (raw + np.where(m_pad[:, None, None, :] > 0, 0.0, NEG)).astype(np.float32), raw

    sps, raw_s = pad_scores(rs, mp)
    spt, raw_t = pad_scores(rt, mp)
    cases = [
        (lambda a, b, mm: losses.soft_kl(a, b, 2.0, mm), (zs, zt), 1),
        (lambda a, b, mm: losses.soft_cross_entropy(a, b, 2.0, mm), (zs, zt), 1),
        (losses.logit_mse, (zs, zt), 1), (losses.hidden_mse, (hs, ht), 1),
        (losses.cosine_embedding, (hs, ht), 1), (losses.feature_map_mse, (hs, ht), 1),
        (losses.value_relation_kl, (vs, vt), 2),
        (lambda a, b, mm: losses.minilmv2_relation_kl(a, b, 2, mm), (vs, vt), 2),
    ]
    for fn, (a, b), ax in cases:
        base = fn(a, b, m)
        close(fn(_pad(a, [ax], E, rng), _pad(b, [ax], E, rng), mp), base)
    close(losses.attention_score_mse(sps, spt, mp), losses.attention_score_mse(ss.astype(np.float32),
                                                                               st.astype(np.float32), m))
    close(losses.attention_kl(np_softmax_rows(raw_s, mp), np_softmax_rows(raw_t, mp), mp),
          losses.attention_kl(ps, pt, m), tol=1e-5)
    close(losses.mlm_cross_entropy(_pad(zs, [1], E, rng), _pad(labels, [1], E, rng, fill=-100)),
          losses.mlm_cross_entropy(zs, labels))


# --------------------------------------------------------------------------------- errors, registry
def test_errors_name_the_problem(rng):
    m = _mask()
    with pytest.raises(ValueError, match="equal head counts.*minilmv2_relation_kl"):
        losses.attention_kl(np.ones((B, 4, L, L)), np.ones((B, 2, L, L)), m)
    with pytest.raises(ValueError, match="not divisible by num_relation_heads=7"):
        losses.minilmv2_relation_kl(rng.normal(size=(B, H, L, DH)), rng.normal(size=(B, H, L, DH)), 7, m)
    with pytest.raises(ValueError, match="shapes differ.*projection"):
        losses.hidden_mse(np.ones((B, L, 4)), np.ones((B, L, 8)))
    with pytest.raises(ValueError, match="reduction 'sum' is not one of"):
        losses.hidden_mse(np.ones((B, L, 4)), np.ones((B, L, 4)), reduction="sum")


def test_registry():
    expected = {"soft_kl", "soft_cross_entropy", "logit_mse", "mlm_cross_entropy", "hidden_mse",
                "cosine_embedding", "pkd_patience", "attention_score_mse", "attention_kl", "value_relation_kl",
                "minilmv2_relation_kl", "feature_map_mse"}
    assert expected <= set(losses.LOSSES)
    fn = lambda s, t, mask=None: jnp.float32(0.0)
    try:
        losses.register("my_test_loss", fn)
        assert losses.get("my_test_loss") is fn
        with pytest.raises(ValueError, match="already registered"):
            losses.register("my_test_loss", lambda s, t: 0.0)
    finally:
        losses.LOSSES.pop("my_test_loss", None)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        losses.get("nope")
