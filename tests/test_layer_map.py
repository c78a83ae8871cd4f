"""Layer maps and student initialisation against the official index lists; projections."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import layer_map as lm
from jaxdistill.models import Bert, init_params
from tiny import tiny_config


def test_pkd_skip_and_last_match_the_paper():
    # Sun et al. 2019, 12 -> 6: PKD-Skip uses teacher layers {2, 4, 6, 8, 10}, PKD-Last {7, ..., 11} (1-indexed)
    assert lm.skip(6, 12) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]
    assert lm.last(6, 12) == [(1, 7), (2, 8), (3, 9), (4, 10), (5, 11)]
    # the official PKD code indexes encoder layers from 0: skip "1,3,5,7,9"; hidden-state index = that + 1
    assert [t - 1 for _, t in lm.skip(6, 12)] == [1, 3, 5, 7, 9]
    assert [t for _, t in lm.skip(3, 12)] == [4, 8]


@pytest.mark.parametrize("M,N", [(4, 12), (6, 12), (2, 4), (3, 3)])
def test_tinybert_uniform_matches_the_official_selection(M, N):
    per_block = N // M
    # official TinyBERT: hidden reps teacher_reps[i * per_block] for i in 0..M (index 0 = embeddings);
    # attentions teacher_atts[i * per_block + per_block - 1] for i in 0..M-1 (0-based layers)
    official_reps = [i * per_block for i in range(M + 1)]
    official_atts = [i * per_block + per_block - 1 for i in range(M)]
    pairs = lm.uniform(M, N)
    assert [s for s, _ in pairs] == list(range(M + 1))
    assert [t for _, t in pairs] == official_reps
    assert [t - 1 for _, t in lm.make_layer_map("uniform_no_embeddings", M, N, min_index=1)] == official_atts


def test_last_only_and_explicit():
    assert lm.last_only(4, 12) == [(4, 12)]
    assert lm.make_layer_map([(1, 3), (-1, -1)], 2, 6) == [(1, 3), (2, 6)]
    with pytest.raises(ValueError, match="teacher layer index 7 is out of range.*valid indices are 0..6"):
        lm.make_layer_map([(1, 7)], 2, 6)
    with pytest.raises(ValueError, match="student layer index 0 is out of range.*1..2"):
        lm.make_layer_map("uniform", 2, 6, min_index=1)
    with pytest.raises(ValueError, match="unknown layer map 'middle'"):
        lm.make_layer_map("middle", 2, 6)


def test_student_init_layer_presets():
    assert lm.student_init_layers("distilbert", 12, 6) == [0, 2, 4, 7, 9, 11] == list(lm.DISTILBERT_LAYERS)
    assert lm.student_init_layers("first", 12, 3) == [0, 1, 2]
    assert lm.student_init_layers("copy", 12) == list(range(12))
    with pytest.raises(ValueError, match="cannot initialise a 13-layer student from 12"):
        lm.student_init_layers("first", 12, 13)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))) and \
        jax.tree.structure(a) == jax.tree.structure(b)


def test_init_student_copies_the_chosen_layers():
    tc = tiny_config(num_hidden_layers=4)
    tp = init_params(tc, jax.random.key(0))
    sc, sp = lm.init_student_from_teacher(tc, tp, layers=[0, 3])
    assert sc.num_hidden_layers == 2 and sc.hidden_size == tc.hidden_size
    assert _leaves_equal(sp["layer_0"], tp["layer_0"]) and _leaves_equal(sp["layer_1"], tp["layer_3"])
    for key in ("embeddings", "pooler", "mlm_transform", "mlm_LayerNorm", "mlm_bias"):
        assert _leaves_equal(sp[key], tp[key])
    assert jax.tree.structure(sp) == jax.tree.structure(init_params(sc, jax.random.key(1)))
    # a real copy: no buffer shared with the teacher (the student is donated to the train step)
    assert sp["layer_1"]["output"]["kernel"].unsafe_buffer_pointer() != \
        jnp.asarray(tp["layer_3"]["output"]["kernel"]).unsafe_buffer_pointer()


def test_exact_copy_gives_identical_outputs():
    tc = tiny_config()
    tp = init_params(tc, jax.random.key(0))
    sc, sp = lm.init_student_from_teacher(tc, tp, layers=range(tc.num_hidden_layers))
    ids = jnp.asarray([[5, 6, 7, 8, 0]], jnp.int32)
    am = jnp.asarray([[1, 1, 1, 1, 0]], jnp.int32)
    ot = Bert(tc).apply({"params": tp}, ids, am)
    os_ = Bert(sc).apply({"params": sp}, ids, am)
    assert sc == tc
    np.testing.assert_array_equal(ot.mlm_logits, os_.mlm_logits)


def test_init_student_errors():
    tc = tiny_config()
    tp = init_params(tc, jax.random.key(0))
    with pytest.raises(ValueError, match=r"teacher layers \[2\] are out of range.*0..1"):
        lm.init_student_from_teacher(tc, tp, layers=[0, 2])
    with pytest.raises(ValueError, match="hidden_size=16.*projections"):
        lm.init_student_from_teacher(tc, tp, layers=[0], hidden_size=16)
    with pytest.raises(ValueError, match="change copied parameter shapes"):
        lm.init_student_from_teacher(tc, tp, layers=[0], intermediate_size=8)


def test_projections_identity_when_widths_match():
    rng = jax.random.key(0)
    p = lm.init_projection(rng, 8, 8)
    x = jax.random.normal(jax.random.key(1), (2, 3, 8)) * 100
    np.testing.assert_array_equal(lm.apply_projection(p, x), x)
    q = lm.init_projection(rng, 4, 8)
    assert q["kernel"].shape == (4, 8) and float(jnp.abs(q["kernel"]).max()) > 0
    y = lm.apply_projection(q, x[..., :4])
    np.testing.assert_allclose(y, np.asarray(x[..., :4]) @ np.asarray(q["kernel"]), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="expects inputs of width 4, got 8"):
        lm.apply_projection(q, x)
