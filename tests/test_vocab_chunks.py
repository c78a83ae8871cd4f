"""Vocabulary-chunked prediction losses equal the whole-logits losses (values and gradients), with padding, MLM
targets and HomoDistil masks; and the engine's chunking knob is validated."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import objectives, pruning, vocab_chunks
from jaxdistill.configs import paper_recipe
from jaxdistill.errors import ConfigError
from jaxdistill.models import Bert, init_params
from tiny import tiny_config

B, SEQ = 3, 7


def random_masks(config, seed):
    """HomoDistil masks with about 30 % of every structure pruned."""
    masks = pruning.init_masks(config)
    keys = jax.random.split(jax.random.key(seed), len(masks))
    return {k: (jax.random.uniform(key, m.shape) > 0.3).astype(jnp.float32)
            for key, (k, m) in zip(keys, sorted(masks.items()))}


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    teacher = init_params(config, jax.random.key(0))
    student = init_params(config, jax.random.key(1))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size, (B, SEQ)).astype(np.int32)
    am = np.ones((B, SEQ), np.int32)
    am[1, 5:] = 0
    am[2, 3:] = 0
    mlm = np.where((rng.random((B, SEQ)) < 0.4) & (am > 0), ids, -100).astype(np.int32)
    mlm[0, 1] = ids[0, 1]
    batch = dict(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(am), token_type_ids=jnp.zeros_like(ids),
                 mlm_labels=jnp.asarray(mlm))
    return config, teacher, student, batch, random_masks(config, 2)


def objective_fn(config, recipe, teacher_params, batch, masks, chunk_tokens, fuse=False):
    """(student params -> (loss, metrics)) through the model, chunked when chunk_tokens > 0."""
    whole = chunk_tokens == 0
    apply = lambda p, m: Bert(config).apply({"params": p}, batch["input_ids"], batch["attention_mask"],
                                            batch["token_type_ids"], masks=m, mlm_logits=whole)

    def fn(p):
        t_out = jax.lax.stop_gradient(apply(teacher_params, None))
        return recipe.objective(apply(p, masks), t_out, batch, jnp.int32(0), {},
                                vocab_chunk_tokens=chunk_tokens, teacher_student_kl=True, fuse_gradient=fuse)
    return fn


def prediction_recipe(config, positions):
    r = paper_recipe("hinton")
    r.logits, r.prediction_positions, r.temperature = "mlm_logits", positions, 2.0
    r.weights.update(dict(soft=1.0, soft_ce=0.5, logit_mse=0.1, hard=0.0, mlm=1.0))
    r.matches = []
    return objectives.build_recipe(r, config, config)


@pytest.mark.parametrize("positions,chunk_tokens,fuse", [("valid", 6, False), ("valid", 6, True),
                                                         ("mlm", 9, True)])
def test_chunked_terms_and_gradients_equal_whole_logits(setup, positions, chunk_tokens, fuse):
    """chunk_tokens 6 with B = 3: chunks of 2 positions (7 = 2+2+2+1 pads the last chunk); padded rows, MLM
    targets and HomoDistil masks on the student; the gradient recomputed per chunk or fused (weights 1, 0.5,
    0.1 and 1 on soft, soft_ce, logit_mse and mlm)."""
    config, teacher, student, batch, masks = setup
    recipe = prediction_recipe(config, positions)
    grad = lambda c, f: jax.jit(jax.value_and_grad(objective_fn(config, recipe, teacher, batch, masks, c, f),
                                                   has_aux=True))(student)
    (loss_w, m_w), g_w = grad(0, False)
    (loss_c, m_c), g_c = grad(chunk_tokens, fuse)
    np.testing.assert_allclose(float(loss_c), float(loss_w), rtol=1e-5, atol=1e-6)
    assert set(m_w) == set(m_c) and "teacher_student_kl" in m_c
    for k in m_w:
        np.testing.assert_allclose(float(m_c[k]), float(m_w[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_w), jax.tree.leaves(g_c)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))
    assert float(jnp.abs(g_c["mlm_transform"]["kernel"]).max()) > 0  # the head's gradient flows


def test_copy_student_has_exactly_zero_chunked_kl(setup):
    """A student that is a copy of the teacher: the chunked soft KL and the KL metric are 0 to rounding (XLA
    may fuse the student's and the teacher's head differently inside the chunk; rows equal bitwise give 0)."""
    config, teacher, _, batch, _ = setup
    recipe = prediction_recipe(config, "valid")
    loss, metrics = jax.jit(objective_fn(config, recipe, teacher, batch, None, 8))(teacher)
    assert abs(float(metrics["loss/soft"])) < 1e-6 and abs(float(metrics["teacher_student_kl"])) < 1e-6


def test_fused_gradient_weights_must_name_differentiable_terms(setup):
    config, teacher, student, batch, _ = setup
    apply = lambda p: Bert(config).apply({"params": p}, batch["input_ids"], batch["attention_mask"],
                                         mlm_logits=False).mlm_predictor
    with pytest.raises(ConfigError, match="gradient_weights"):
        vocab_chunks.prediction_terms(apply(student), apply(teacher), ("soft", "teacher_student_kl"),
                                      chunk_tokens=6, gradient_weights={"teacher_student_kl": 1.0})


def test_chunk_length_and_knob_validation():
    assert vocab_chunks.chunk_length(16, 128, 4096) == 128
    assert vocab_chunks.chunk_length(64, 128, 4096) == 64
    assert vocab_chunks.chunk_length(64, 128, 10) == 1
    assert vocab_chunks.chunk_length(8, 128, 0) == 128
    assert vocab_chunks.check_chunk_tokens(0) == 0
    for bad in (-1, 2.5, "many"):
        with pytest.raises(ConfigError, match="train.vocab_chunk_tokens"):
            vocab_chunks.check_chunk_tokens(bad)


def test_classifier_logit_recipes_refuse_chunking():
    from jaxdistill.experiment import check_vocab_chunking
    config = tiny_config(num_labels=3)
    recipe = objectives.build_recipe(paper_recipe("hinton"), config, config)
    with pytest.raises(ConfigError, match="vocab_chunk_tokens=0"):
        check_vocab_chunking(4096, recipe)
    check_vocab_chunking(0, recipe)
