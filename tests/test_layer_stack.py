"""Layers under a scan: same parameter layout, outputs and gradients equal to the unrolled model (1e-5), with
HomoDistil masks and every remat policy; importance computed from scanned gradients equals the unrolled one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import pruning
from jaxdistill.errors import ConfigError
from jaxdistill.models import Bert, init_params
from tiny import tiny_config


def forward(config, params, batch, masks):
    return Bert(config).apply({"params": params}, batch["input_ids"], batch["attention_mask"], masks=masks,
                              output_intermediates=True)


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(num_hidden_layers=3)
    params = init_params(config, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (2, 8), 1, config.vocab_size)
    batch = dict(input_ids=ids, attention_mask=jnp.array([[1] * 8, [1] * 5 + [0] * 3]))
    keys = jax.random.split(jax.random.key(3), 3)
    masks = {k: (jax.random.uniform(key, m.shape) > 0.3).astype(jnp.float32)
             for key, (k, m) in zip(keys, sorted(pruning.init_masks(config).items()))}
    return config, params, batch, masks


def test_parameter_layout_is_the_same(setup):
    config, params, _, _ = setup
    scanned = init_params(config.replace(scan_layers=True), jax.random.key(0))
    assert jax.tree.structure(scanned) == jax.tree.structure(params)
    assert "layer_2" in scanned


def test_scanned_outputs_equal_unrolled_for_every_remat_policy(setup):
    config, params, batch, masks = setup
    ref = jax.jit(lambda p: forward(config, p, batch, masks))(params)
    for policy in ("none", "full"):  # dots_saveable: in the gradient test
        out = jax.jit(lambda p: forward(config.replace(scan_layers=True, remat=policy), p, batch, masks))(params)
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5, err_msg=policy)


def test_scanned_gradients_and_importance_equal_unrolled(setup):
    config, params, batch, masks = setup

    def grads(c):
        loss = lambda p: jnp.mean(jnp.square(forward(c, p, batch, masks).mlm_logits))
        return jax.jit(jax.grad(loss))(params)

    g_ref, g_scan = grads(config), grads(config.replace(scan_layers=True, remat="dots_saveable"))
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_scan)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    pcfg = pruning.PruningConfig.from_config(pruning.default_pruning_config(), config, 10)
    imp = pruning.init_importance(params)
    i_ref = pruning.update_importance(imp, params, g_ref, jnp.int32(0), pcfg)
    i_scan = pruning.update_importance(imp, params, g_scan, jnp.int32(0), pcfg)
    for a, b in zip(jax.tree.leaves(i_ref), jax.tree.leaves(i_scan)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-9)


def test_bad_remat_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="remat"):
        tiny_config(remat="sometimes")
