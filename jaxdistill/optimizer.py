"""The optimizer every training loop uses (distillation, fine-tuning, MLM-head fitting): AdamW after clipping.

`OptimizerConfig` holds the settings as explicit, validated fields; `make_lr_schedule(cfg)` and
`make_optimizer(cfg)` build the optax objects. Callers construct the config from their own settings (the
distillation config's `train` section with `OptimizerConfig.from_section`, fine-tuning's fields directly).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import optax

from jaxdistill.errors import ConfigError

DECAYS = ("linear", "cosine", "constant")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with a warm-up + decay learning-rate schedule.

    lr: peak learning rate, reached after `warmup_steps` of linear warm-up from 0; then `decay` over the
    remaining `steps - warmup_steps` updates: "linear" or "cosine" to 0, or "constant". b1, b2, eps: Adam.
    weight_decay: decoupled, on kernels and embeddings only (parameters with ndim > 1; never biases or
    LayerNorm). grad_clip: global-norm clipping before Adam (0 = off). `prefix` names the config section in
    error messages ("train." for distillation).
    """

    lr: float
    steps: int
    warmup_steps: int = 0
    decay: str = "linear"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    prefix: str = ""

    def __post_init__(self):
        p, problems = self.prefix, []
        if not self.lr > 0:
            problems.append(f"{p}lr must be positive (got {self.lr})")
        if self.steps < 1:
            problems.append(f"{p}steps must be positive (got {self.steps})")
        if self.warmup_steps < 0:
            problems.append(f"{p}warmup_steps must be >= 0 (got {self.warmup_steps})")
        if self.decay not in DECAYS:
            problems.append(f"{p}decay {self.decay!r} is not one of {', '.join(map(repr, DECAYS))}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            problems.append(f"{p}grad_clip and {p}weight_decay must be >= 0")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))

    @classmethod
    def from_section(cls, section: Mapping[str, Any], prefix: str = "train.") -> "OptimizerConfig":
        """From a config section with the same field names (e.g. the distillation config's `train`)."""
        get = section.get
        return cls(lr=float(get("lr")), steps=int(get("steps")), warmup_steps=int(get("warmup_steps", 0)),
                   decay=str(get("decay", "linear")), b1=float(get("b1", 0.9)), b2=float(get("b2", 0.999)),
                   eps=float(get("eps", 1e-6)), weight_decay=float(get("weight_decay", 0.0)),
                   grad_clip=float(get("grad_clip", 0.0) or 0.0), prefix=prefix)


def make_lr_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """step -> learning rate: linear warm-up to `cfg.lr`, then `cfg.decay`."""
    decay_steps = max(cfg.steps - cfg.warmup_steps, 1)
    if cfg.decay == "linear":
        after = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
    elif cfg.decay == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, decay_steps)
    else:
        after = optax.constant_schedule(cfg.lr)
    if cfg.warmup_steps <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), after], [cfg.warmup_steps])


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """AdamW (no decay on biases and LayerNorm) after global-norm clipping, on `make_lr_schedule(cfg)`."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
    parts.append(optax.adamw(make_lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
