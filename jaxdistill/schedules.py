"""Pure `step -> value` schedules for loss weights, temperatures, keep ratios and learning rates.

`make_schedule(spec)` turns a small config into a jit-safe function of the (int or traced) step that returns
a float32 scalar. A spec is one of:

- a number: the constant schedule, e.g. `2.0`;
- a callable `step -> value`: returned unchanged (wrapped to return float32);
- a dict / ConfigDict with a `kind` and that kind's fields (missing fields take the defaults shown):

| kind | fields | value at step t |
|---|---|---|
| `constant` | `value` | `value` |
| `linear` | `init_value`, `end_value`, `steps`, `begin=0` | `init_value` until `begin`, then linear to `end_value` at `begin + steps`, then `end_value` |
| `cosine` | `init_value`, `end_value=0`, `steps`, `begin=0` | half-cosine from `init_value` to `end_value` over the same window |
| `warmup` | `peak_value`, `warmup_steps`, `init_value=0`, `decay="cosine"`, `decay_steps`, `end_value=0` | linear warm-up from `init_value` to `peak_value`, then `decay` (`constant`, `linear`, `cosine`) to `end_value` over `decay_steps` more steps |
| `piecewise` | `boundaries` (increasing steps), `values` (one more than boundaries) | `values[i]` for `boundaries[i-1] <= t < boundaries[i]` |

The optax schedules are the same shapes; this module exists so the same small configs drive loss weights,
temperatures and the learning rate, and so a config error names the field that is wrong.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp
from jaxdistill.errors import ConfigError

Schedule = Callable[[Any], jnp.ndarray]

_FIELDS = {
    "constant": ({"value"}, set()),
    "linear": ({"init_value", "end_value", "steps"}, {"begin"}),
    "cosine": ({"init_value", "steps"}, {"end_value", "begin"}),
    "warmup": ({"peak_value", "warmup_steps"}, {"init_value", "decay", "decay_steps", "end_value"}),
    "piecewise": ({"boundaries", "values"}, set()),
}


def _as_dict(spec) -> dict:
    if hasattr(spec, "to_dict"):
        return dict(spec.to_dict())
    return dict(spec)


def _fraction(step, begin: float, steps: float):
    """Fraction of the window [begin, begin + steps] that has elapsed at `step`, clipped to [0, 1]."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.clip((t - begin) / max(float(steps), 1e-12), 0.0, 1.0)


def constant(value: float) -> Schedule:
    v = float(value)
    return lambda step: jnp.asarray(v, jnp.float32)


def linear(init_value: float, end_value: float, steps: int, begin: int = 0) -> Schedule:
    a, b = float(init_value), float(end_value)
    return lambda step: jnp.asarray(a + (b - a) * _fraction(step, begin, steps), jnp.float32)


def cosine(init_value: float, steps: int, end_value: float = 0.0, begin: int = 0) -> Schedule:
    a, b = float(init_value), float(end_value)

    def f(step):
        frac = _fraction(step, begin, steps)
        return jnp.asarray(b + (a - b) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)), jnp.float32)
    return f


def warmup(peak_value: float, warmup_steps: int, init_value: float = 0.0, decay: str = "cosine",
           decay_steps: int = 0, end_value: float = 0.0) -> Schedule:
    if decay not in ("constant", "linear", "cosine"):
        raise ConfigError(f"warmup schedule: decay {decay!r} is not one of 'constant', 'linear', 'cosine'")
    if decay != "constant" and int(decay_steps) <= 0:
        raise ConfigError(f"warmup schedule with decay={decay!r} needs decay_steps > 0, got {decay_steps}")
    up = linear(init_value, peak_value, warmup_steps)
    if decay == "constant":
        down = constant(peak_value)
    elif decay == "linear":
        down = linear(peak_value, end_value, decay_steps, begin=warmup_steps)
    else:
        down = cosine(peak_value, decay_steps, end_value=end_value, begin=warmup_steps)
    return lambda step: jnp.where(jnp.asarray(step) < warmup_steps, up(step), down(step)).astype(jnp.float32)


def piecewise(boundaries, values) -> Schedule:
    boundaries, values = [int(b) for b in boundaries], [float(v) for v in values]
    if len(values) != len(boundaries) + 1:
        raise ConfigError(f"piecewise schedule needs len(values) == len(boundaries) + 1, got {len(values)} values "
                         f"and {len(boundaries)} boundaries")
    if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
        raise ConfigError(f"piecewise schedule boundaries must increase strictly, got {boundaries}")
    b, v = jnp.asarray(boundaries, jnp.int32), jnp.asarray(values, jnp.float32)
    return lambda step: v[jnp.sum(jnp.asarray(step, jnp.int32) >= b)]


_MAKERS = {"constant": constant, "linear": linear, "cosine": cosine, "warmup": warmup, "piecewise": piecewise}


def make_schedule(spec) -> Schedule:
    """A float32 `step -> value` function from a number, a callable or a `{kind: ..., ...}` config.

    Raises ValueError naming the kind and the missing or unknown fields when the config is malformed.
    """
    if isinstance(spec, bool):
        raise ConfigError(f"a schedule must be a number, a callable or a config dict, got the bool {spec!r}")
    if isinstance(spec, (int, float)):
        return constant(spec)
    if callable(spec) and not isinstance(spec, Mapping) and not hasattr(spec, "to_dict"):
        return lambda step: jnp.asarray(spec(step), jnp.float32)
    try:
        d = _as_dict(spec)
    except (TypeError, ValueError):
        raise ConfigError(f"a schedule must be a number, a callable or a config dict, got {spec!r}") from None
    kind = d.pop("kind", None)
    if kind not in _FIELDS:
        raise ConfigError(f"schedule kind {kind!r} is not one of {sorted(_FIELDS)} (config: {spec!r})")
    required, optional = _FIELDS[kind]
    missing, unknown = required - set(d), set(d) - required - optional
    if missing or unknown:
        raise ConfigError(f"{kind} schedule: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}; "
                         f"it takes {sorted(required)} and optionally {sorted(optional)}")
    return _MAKERS[kind](**d)


def is_constant(spec) -> bool:
    """True when `spec` is a plain number (or a `constant` config), so its value is known at build time."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return True
    try:
        return _as_dict(spec).get("kind") == "constant"
    except (TypeError, ValueError):
        return False


def constant_value(spec) -> float:
    """The value of a constant spec (see `is_constant`)."""
    return float(spec) if isinstance(spec, (int, float)) else float(_as_dict(spec)["value"])
