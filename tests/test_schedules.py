"""Schedules against their closed forms, jit-safety and config errors."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdistill.schedules import make_schedule


def vals(f, steps):
    return [float(f(s)) for s in steps]


def test_constant_linear_cosine():
    assert vals(make_schedule(2.5), [0, 10**6]) == [2.5, 2.5]
    lin = make_schedule(dict(kind="linear", init_value=1.0, end_value=3.0, steps=10, begin=5))
    np.testing.assert_allclose(vals(lin, [0, 5, 10, 15, 100]), [1, 1, 2, 3, 3], rtol=1e-6)
    cos = make_schedule(ml_collections.ConfigDict(dict(kind="cosine", init_value=4.0, end_value=0.0, steps=8)))
    ref = [0 + 4 * 0.5 * (1 + math.cos(math.pi * min(t, 8) / 8)) for t in (0, 2, 4, 8, 9)]
    np.testing.assert_allclose(vals(cos, [0, 2, 4, 8, 9]), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("decay", ["constant", "linear", "cosine"])
def test_warmup_then_decay(decay):
    f = make_schedule(dict(kind="warmup", peak_value=1e-3, warmup_steps=10, decay=decay, decay_steps=90,
                           end_value=1e-4))
    def ref(t):
        if t < 10:
            return 1e-3 * t / 10
        frac = min((t - 10) / 90, 1.0)
        return {"constant": 1e-3, "linear": 1e-3 + (1e-4 - 1e-3) * frac,
                "cosine": 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * frac))}[decay]
    steps = [0, 5, 10, 40, 100, 200]
    np.testing.assert_allclose(vals(f, steps), [ref(t) for t in steps], rtol=1e-5, atol=1e-9)


def test_piecewise_and_traced_step():
    f = make_schedule(dict(kind="piecewise", boundaries=[10, 20], values=[1.0, 0.5, 0.1]))
    np.testing.assert_allclose(vals(f, [0, 9, 10, 19, 20, 99]), [1, 1, 0.5, 0.5, 0.1, 0.1], rtol=1e-6)
    g = make_schedule(dict(kind="linear", init_value=0.0, end_value=1.0, steps=4))
    out = jax.jit(lambda s: g(s))(jnp.int32(2))
    assert out.dtype == jnp.float32 and float(out) == 0.5
    assert float(make_schedule(lambda s: s * 2)(3)) == 6.0


def test_schedule_errors():
    with pytest.raises(ValueError, match="schedule kind 'exp' is not one of"):
        make_schedule(dict(kind="exp"))
    with pytest.raises(ValueError, match=r"linear schedule: missing fields \['steps'\], unknown fields \['stepz'\]"):
        make_schedule(dict(kind="linear", init_value=0.0, end_value=1.0, stepz=3))
    with pytest.raises(ValueError, match="decay_steps > 0"):
        make_schedule(dict(kind="warmup", peak_value=1.0, warmup_steps=3))
    with pytest.raises(ValueError, match="len\\(values\\) == len\\(boundaries\\) \\+ 1"):
        make_schedule(dict(kind="piecewise", boundaries=[1], values=[1.0]))
