"""bench/dot_floor.py's reading of a compiled step: every dot with its executions per call (a scanned dot counts
its trip count), FLOPs by hand, and a PyTorch einsum that computes the same contraction as XLA's dot_general."""
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
spec = importlib.util.spec_from_file_location("dot_floor", os.path.join(HERE, "..", "bench", "dot_floor.py"))
dot_floor = sys.modules["dot_floor"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dot_floor)


def scanned_and_batched(x, w, a, b):
    def body(c, _):
        return jnp.tanh(c @ w), None
    y, _ = jax.lax.scan(body, x, None, length=5)
    return y, jnp.einsum("bij,bkj->bik", a, b)


def test_dots_are_counted_per_execution_with_hand_flops():
    args = (jnp.ones((4, 8)), jnp.ones((8, 8)), jnp.ones((2, 5, 6)), jnp.ones((2, 7, 6)))
    hlo = jax.jit(scanned_and_batched).lower(*args).compile().as_text()
    dots = dot_floor.dots_of(hlo)
    by_flops = {d.flops: n for d, n in dots.items()}
    assert by_flops == {2 * 4 * 8 * 8: 5, 2 * 2 * 5 * 7 * 6: 1}, {d.label(): n for d, n in dots.items()}
    batched = next(d for d in dots if d.lhs_batch)
    assert batched.lhs == (2, 5, 6) and batched.rhs == (2, 7, 6)
    assert batched.lhs_contracting == (2,) and batched.rhs_contracting == (2,)


def test_einsum_spec_computes_the_same_contraction_as_dot_general():
    import torch
    dot = dot_floor.Dot("f32", (3, 4, 5, 6), (3, 6, 7, 5), lhs_batch=(0,), rhs_batch=(0,),
                        lhs_contracting=(2, 3), rhs_contracting=(3, 1))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(dot.lhs, dtype=np.float32), rng.standard_normal(dot.rhs, dtype=np.float32)
    want = jax.lax.dot_general(a, b, ((dot.lhs_contracting, dot.rhs_contracting), (dot.lhs_batch, dot.rhs_batch)))
    got = torch.einsum(dot_floor.einsum_spec(dot), torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-4)
    assert dot.flops == 2 * 3 * 4 * 5 * 6 * 7
