"""MLM masking: statistics, special tokens, whole words, smoothing, determinism (pure NumPy, synthetic vocab)."""
import numpy as np
import pytest

from jaxdistill.data import mlm

V, PAD, UNK, CLS, SEP, MASK = 1000, 0, 100, 101, 102, 103
SPECIAL_IDS = [PAD, UNK, CLS, SEP, MASK]
CONT_START = 600  # ids >= 600 are "##" continuation pieces


def _tables():
    special = np.zeros(V, dtype=bool)
    special[SPECIAL_IDS] = True
    cont = np.zeros(V, dtype=bool)
    cont[CONT_START:] = True
    return special, cont


def _spec(**kw):
    special, cont = _tables()
    return mlm.MaskingSpec(special=special, mask_id=MASK, random_ids=np.flatnonzero(~special).astype(np.int32),
                           continuation=cont, **kw)


def _batch(B=2048, L=128, seed=0):
    """[CLS] words (with ## pieces, an inner [SEP] and an [UNK] now and then) [SEP] [PAD]..."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(L // 4, L + 1, size=B)
    toks = rng.integers(104, CONT_START, size=(B, L))
    cont = rng.random((B, L)) < 0.3
    toks[cont] = rng.integers(CONT_START, V, size=int(cont.sum()))
    toks[rng.random((B, L)) < 0.01] = UNK
    toks[rng.random((B, L)) < 0.01] = SEP
    toks[:, 0] = CLS
    toks[np.arange(B), lengths - 1] = SEP
    toks[np.arange(L)[None, :] >= lengths[:, None]] = PAD
    return toks.astype(np.int32), lengths


def test_rate_and_80_10_10_split():
    toks, lengths = _batch()
    special, _ = _tables()
    inp, lab = mlm.mask_tokens(toks, lengths, np.arange(len(toks)), _spec(), seed=3, step=11)
    real = np.arange(toks.shape[1])[None] < lengths[:, None]
    cand = real & ~special[toks]
    tgt = lab != mlm.IGNORE_INDEX
    assert cand.sum() > 150_000
    rate = tgt.sum() / cand.sum()
    assert abs(rate - 0.15) < 0.005, rate
    assert np.array_equal(lab[tgt], toks[tgt])  # labels are the original tokens
    n = tgt.sum()
    masked = (inp == MASK) & tgt
    kept = (inp == toks) & tgt
    rand = tgt & ~masked & ~kept
    assert abs(masked.sum() / n - 0.8) < 0.01
    assert abs(rand.sum() / n - 0.1) < 0.01
    assert abs(kept.sum() / n - 0.1) < 0.01
    assert not special[inp[rand]].any()  # random replacements are ordinary tokens
    assert np.array_equal(inp[~tgt], toks[~tgt])  # nothing else changes


def test_special_and_padding_never_targets():
    toks, lengths = _batch(B=512)
    special, _ = _tables()
    for ww in (False, True):
        inp, lab = mlm.mask_tokens(toks, lengths, np.arange(len(toks)), _spec(whole_word=ww), seed=0, step=0)
        pad = np.arange(toks.shape[1])[None] >= lengths[:, None]
        assert (lab[special[toks] | pad] == mlm.IGNORE_INDEX).all()
        assert np.array_equal(inp[special[toks] | pad], toks[special[toks] | pad])


def test_whole_word_masking_keeps_pieces_together():
    toks, lengths = _batch()
    special, cont = _tables()
    inp, lab = mlm.mask_tokens(toks, lengths, np.arange(len(toks)), _spec(whole_word=True), seed=5, step=2)
    real = np.arange(toks.shape[1])[None] < lengths[:, None]
    cand = real & ~special[toks]
    wid, _ = mlm.word_ids(toks, cand, cont)
    tgt = lab != mlm.IGNORE_INDEX
    B, L = toks.shape
    key = np.arange(B)[:, None] * L + wid
    flat_key, flat_tgt = key[cand], tgt[cand]
    per_word_tgt = np.bincount(flat_key, weights=flat_tgt, minlength=B * L)
    per_word_len = np.bincount(flat_key, minlength=B * L)
    words = per_word_len > 0  # every word is either fully a target or not at all
    assert np.all((per_word_tgt[words] == 0) | (per_word_tgt[words] == per_word_len[words]))
    n_words_multi = int(((per_word_len > 1) & (per_word_tgt > 0)).sum())
    assert n_words_multi > 1000  # multi-piece words were masked, as wholes
    assert abs(tgt.sum() / cand.sum() - 0.15) < 0.005


def test_frequency_smoothing_prefers_rare_tokens():
    B, L = 1024, 64
    rng = np.random.default_rng(1)
    toks = rng.integers(104, CONT_START, size=(B, L)).astype(np.int32)
    frequent = 200
    toks[:, 1::2] = frequent  # half of all tokens are one very frequent id
    toks[:, 0], toks[:, -1] = CLS, SEP
    lengths = np.full(B, L)
    counts = np.ones(V)
    counts[frequent] = 1e6
    special, _ = _tables()
    weights = mlm.smoothing_weights(counts, 0.7, special)
    assert weights[frequent] == pytest.approx(1e6 ** -0.7) and (weights[SPECIAL_IDS] == 0).all()
    _, lab = mlm.mask_tokens(toks, lengths, np.arange(B), _spec(weights=weights), seed=0, step=0)
    tgt = lab != mlm.IGNORE_INDEX
    cand = ~special[toks]
    assert abs(tgt.sum() / cand.sum() - 0.15) < 0.005
    assert tgt[toks == frequent].mean() < 0.01  # uniform selection would give 15 %
    _, lab_u = mlm.mask_tokens(toks, lengths, np.arange(B), _spec(), seed=0, step=0)
    assert abs((lab_u != mlm.IGNORE_INDEX)[toks == frequent].mean() - 0.15) < 0.01


def test_deterministic_and_independent_of_the_batch_split():
    toks, lengths = _batch(B=64)
    ids = np.arange(64)
    a = mlm.mask_tokens(toks, lengths, ids, _spec(), seed=7, step=42)
    b = mlm.mask_tokens(toks, lengths, ids, _spec(), seed=7, step=42)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for lo, hi in [(0, 16), (16, 48), (48, 64)]:  # any slice keyed by its global indices gives the same rows
        part = mlm.mask_tokens(toks[lo:hi], lengths[lo:hi], ids[lo:hi], _spec(), seed=7, step=42)
        assert np.array_equal(part[0], a[0][lo:hi]) and np.array_equal(part[1], a[1][lo:hi])
    for kw in (dict(seed=8, step=42), dict(seed=7, step=43)):
        c = mlm.mask_tokens(toks, lengths, ids, _spec(), **kw)
        assert not np.array_equal(c[1], a[1])
    e = mlm.mask_tokens(toks, lengths, ids, _spec(), seed=7, step=42, stream=mlm.STREAM_EVAL)
    assert not np.array_equal(e[1], a[1])


def test_invalid_probabilities_are_rejected():
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        _spec(mlm_probability=1.5)
    with pytest.raises(ValueError, match="sum <= 1"):
        _spec(mask_replace=0.8, random_replace=0.3)
