"""HomoDistil: prune the student while distilling it, with masks as explicit pytrees (METHODS.md, HomoDistil).

Masks: `{"hidden": [d], "attn": [N, H, d_h], "ffn": [N, F]}` float32 0/1 (`init_masks`), passed to
`Bert.__call__(..., masks=masks)`. Which parameters one unit of each group (structure) removes is the table in
`jaxdistill.structures` (hidden dims, per-layer attention head dims, per-layer FFN neurons); `group_scores`
and `param_multipliers` (re-exported here) are derived from it. A unit's score is the sum of the
per-parameter scores of everything it removes.

Importance (PLATON): s = |theta * grad| per parameter each step, averaged over a window of `window` steps;
at a window end `I <- b1 I + (1-b1) s_win`, then `U <- b2 U + (1-b2) |s_win - I|` (with the *updated* I, as
in PLATON's code); score = I * U, or I alone when beta2 == 1. window=1, beta1=0, beta2=1 gives plain
sensitivity |theta * grad| of the last step. Alternatives for ablations (`importance`): "sensitivity" scores
the last closed window's mean |theta * grad| alone (no EMA, no uncertainty), "magnitude" scores |theta| at the
pruning step and accumulates nothing (no gradients needed).

Schedule: a cubic factor c(t) = 1 for t <= t_i, (1 - (t - t_i)/(T - t_i - t_f))^3 between, 0 from T - t_f on;
a group of full width W and target w keeps `w + round((W - w) * c(t))` units (keep ratio
r(t) = r_T + (1 - r_T) c(t), r_T = w / W). Masks change only at steps t with t_i < t <= T - t_f and
(t % every == 0 or t == T - t_f), so they reach the targets exactly at T - t_f. `schedule="oneshot"` replaces
the cubic factor by c(t) = 1 for t <= t_i and 0 after: every group is cut to its target at the first pruning
step after the same warm-up, and later updates change nothing.

Budget (local, balanced): every layer keeps the same number of FFN neurons; in `attn_structure="head_dim"`
every head of every layer keeps the same number of dimensions (top-k within each head), in `"heads"` every
layer keeps the same number of whole heads. Compaction (see `jaxdistill.compaction`) therefore gives a
dense BERT with uniform widths.

Step convention: `update_importance(..., step)` takes the index of the step whose gradients it gets
(0, 1, ...); a window ends when `(step + 1) % window == 0`. `prune_update(..., step)` takes the number of
optimizer steps completed so far (the TrainState's step after the update), so with window == every the mask
update at t = k * every sees the window that just closed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections

from jaxdistill.compaction import (compact, count_from_widths, count_params, full_param_count,  # noqa: F401
                                   remaining_widths)
from jaxdistill.errors import ConfigError
from jaxdistill.models.bert import BertConfig
from jaxdistill.structures import apply_multipliers, group_scores, mask_shapes, param_multipliers  # noqa: F401

Array = jax.Array
PyTree = Any

ATTN_STRUCTURES = ("head_dim", "heads")
SCHEDULES = ("iterative", "oneshot")
IMPORTANCES = ("platon", "sensitivity", "magnitude")
PARAM_SCOPES = ("encoder", "backbone", "total")


# --------------------------------------------------------------------------------------------- config
def default_pruning_config() -> ml_collections.ConfigDict:
    """The `pruning` section of a HomoDistil config, with documented defaults.

    Widths (leave at None to keep a group at full width, or to have `target_params` solve it):
      hidden: kept hidden width d'.  ffn: kept FFN neurons per layer F'.
      head_dim: kept dimensions per head (attn_structure="head_dim").  heads: kept heads per layer
      (attn_structure="heads").  attn_width: alternative to head_dim/heads, the kept attention inner width per
      layer (must be divisible by the head count, or by d_h in whole-head mode).
      target_params: solve the widths that are None from a parameter budget (see `PruningConfig`), counted
      over `params_scope` ("encoder", "backbone" = embeddings + encoder, "total" = + pooler/MLM heads).
    Schedule: warmup_steps t_i and final_steps t_f (None: 10 % and 20 % of the run, assumed), every dT = 10
    (PLATON), window (None: = every), beta1 = 0.85 and beta2 = 0.95 (PLATON). schedule: "iterative" (the
    cubic schedule) or "oneshot" (cut to the targets at the first pruning step). importance: "platon",
    "sensitivity" (last window's mean |theta * grad|) or "magnitude" (|theta|).
    Assumed (METHODS.md leaves them open): the t_i/t_f fractions, params_scope="backbone", attn_structure
    "head_dim", the shared-ratio width solver.
    """
    ph = ml_collections.config_dict.placeholder
    return ml_collections.ConfigDict(dict(
        enabled=True,
        attn_structure="head_dim",
        hidden=ph(int), ffn=ph(int), head_dim=ph(int), heads=ph(int), attn_width=ph(int),
        target_params=ph(int), params_scope="backbone",
        warmup_steps=ph(int), final_steps=ph(int),
        warmup_fraction=0.1, final_fraction=0.2,
        every=10, window=ph(int), beta1=0.85, beta2=0.95,
        schedule="iterative", importance="platon",
    ))


_FIELDS = tuple(default_pruning_config().keys())


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Validated, hashable pruning settings (static under jit). Build with `PruningConfig.from_config`.

    Full widths of the teacher: `full_hidden` d, `full_ffn` F, `num_heads` H, `full_head_dim` d_h,
    `num_layers` N. Targets: `hidden`, `ffn`, and `attn` (dims per head in "head_dim" mode, heads per layer in
    "heads" mode). `solved_ratio` is the shared ratio found from `target_params` (None when widths were given).
    """

    enabled: bool
    attn_structure: str
    num_layers: int
    full_hidden: int
    full_ffn: int
    num_heads: int
    full_head_dim: int
    hidden: int
    ffn: int
    attn: int
    total_steps: int
    warmup_steps: int
    final_steps: int
    every: int
    window: int
    beta1: float
    beta2: float
    schedule: str = "iterative"
    importance: str = "platon"
    target_params: Optional[int] = None
    params_scope: str = "backbone"
    solved_ratio: Optional[float] = None

    @property
    def full_attn(self) -> int:
        return self.full_head_dim if self.attn_structure == "head_dim" else self.num_heads

    @property
    def prune_end(self) -> int:
        """T - t_f: the step from which every width equals its target."""
        return self.total_steps - self.final_steps

    def final_widths(self) -> Dict[str, int]:
        """{"hidden": d', "ffn": F', "heads": H', "head_dim": d_h'} once the schedule has ended."""
        heads = self.num_heads if self.attn_structure == "head_dim" else self.attn
        head_dim = self.attn if self.attn_structure == "head_dim" else self.full_head_dim
        return dict(hidden=self.hidden, ffn=self.ffn, heads=heads, head_dim=head_dim)

    def compact_shape(self, bert_config: BertConfig) -> BertConfig:
        """`bert_config` at the final widths, as a fresh model would have them (its own attention scale,
        1/sqrt(kept head dim)): the shape of a randomly initialised student of the same budget."""
        w = self.final_widths()
        standard = w["hidden"] == w["heads"] * w["head_dim"]
        return bert_config.replace(hidden_size=w["hidden"], intermediate_size=w["ffn"], num_attention_heads=w["heads"],
                                   head_dim=None if standard else w["head_dim"], attention_scale_dim=None)

    def final_param_count(self, bert_config: BertConfig) -> Dict[str, int]:
        w = self.final_widths()
        n = self.num_layers
        return count_from_widths(bert_config, w["hidden"], [w["heads"] * w["head_dim"]] * n, [w["ffn"]] * n)

    @classmethod
    def from_config(cls, cfg: Any, bert_config: BertConfig, total_steps: int) -> "PruningConfig":
        """Validates `cfg` (a ConfigDict, a dict or None for the defaults) against the teacher/student
        `bert_config` and the run length; raises ValueError naming the field and the fix."""
        c = default_pruning_config().to_dict()
        if cfg is not None:
            given = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
            unknown = sorted(set(given) - set(_FIELDS))
            if unknown:
                raise ConfigError(f"unknown pruning field(s) {unknown}; the known fields are {sorted(_FIELDS)}")
            c.update(given)
        return _build(c, bert_config, int(total_steps))


def _err(msg: str):
    raise ConfigError("invalid pruning config: " + msg)


def _build(c: Dict[str, Any], bc: BertConfig, total: int) -> PruningConfig:
    d, F, H, dh, N = (bc.hidden_size, bc.intermediate_size, bc.num_attention_heads, bc.attention_head_size,
                      bc.num_hidden_layers)
    mode = c["attn_structure"]
    if mode not in ATTN_STRUCTURES:
        _err(f"pruning.attn_structure={mode!r}; use one of {ATTN_STRUCTURES}")
    if c["schedule"] not in SCHEDULES:
        _err(f"pruning.schedule={c['schedule']!r}; use one of {SCHEDULES}")
    if c["importance"] not in IMPORTANCES:
        _err(f"pruning.importance={c['importance']!r}; use one of {IMPORTANCES}")
    if c["params_scope"] not in PARAM_SCOPES:
        _err(f"pruning.params_scope={c['params_scope']!r}; use one of {PARAM_SCOPES}")
    if total < 1:
        _err(f"total_steps={total}; the run needs at least one step")
    # ---- attention target: head_dim / heads / attn_width
    if mode == "head_dim" and c["heads"] is not None:
        _err("pruning.heads is for attn_structure='heads'; set pruning.head_dim (dims kept per head) "
             "or switch attn_structure to 'heads'")
    if mode == "heads" and c["head_dim"] is not None:
        _err("pruning.head_dim is for attn_structure='head_dim'; set pruning.heads (heads kept per layer) "
             "or switch attn_structure to 'head_dim'")
    attn = c["head_dim"] if mode == "head_dim" else c["heads"]
    unit, unit_name = (H, f"num_attention_heads={H}") if mode == "head_dim" else (dh, f"the head dim {dh}")
    if c["attn_width"] is not None:
        if attn is not None:
            _err(f"set either pruning.attn_width or pruning.{'head_dim' if mode == 'head_dim' else 'heads'}, "
                 "not both")
        w = int(c["attn_width"])
        if w <= 0 or w % unit:
            lo, hi = max(unit, w // unit * unit), (w // unit + 1) * unit
            _err(f"pruning.attn_width={w} is not a positive multiple of {unit_name} ({mode} mode keeps the same "
                 f"{'dims in every head' if mode == 'head_dim' else 'whole heads in every layer'}); "
                 f"use e.g. {lo} or {hi}")
        attn = w // unit
    full_attn = dh if mode == "head_dim" else H
    targets = {"hidden": (c["hidden"], d), "ffn": (c["ffn"], F),
               ("head_dim" if mode == "head_dim" else "heads"): (attn, full_attn)}
    for name, (val, full) in targets.items():
        if val is not None and not (1 <= int(val) <= full):
            what = "larger than the model" if int(val) > full else "not positive"
            _err(f"pruning.{name}={val} is {what}; the teacher has {full}, so use 1..{full}")
    # ---- solve free widths from a parameter budget
    solved_ratio = None
    hidden, ffn = c["hidden"], c["ffn"]
    if c["target_params"] is not None:
        hidden, ffn, attn, solved_ratio = _solve(c, bc, hidden, ffn, attn, mode)
    hidden = d if hidden is None else int(hidden)
    ffn = F if ffn is None else int(ffn)
    attn = full_attn if attn is None else int(attn)
    kept_heads = H if mode == "head_dim" else attn
    if hidden < kept_heads:
        _err(f"pruning.hidden={hidden} is below the number of attention heads kept ({kept_heads}); "
             f"keep at least {kept_heads} hidden dimensions or prune heads (attn_structure='heads')")
    # ---- schedule
    ti = c["warmup_steps"] if c["warmup_steps"] is not None else int(round(c["warmup_fraction"] * total))
    tf = c["final_steps"] if c["final_steps"] is not None else int(round(c["final_fraction"] * total))
    if ti < 0 or tf < 0:
        _err(f"pruning.warmup_steps={ti} / final_steps={tf} must be >= 0")
    if ti + tf >= total:
        _err(f"pruning.warmup_steps + final_steps = {ti} + {tf} leaves no pruning phase in a run of {total} "
             "steps; make them sum to less than the number of training steps")
    every = int(c["every"])
    window = every if c["window"] is None else int(c["window"])
    if every < 1:
        _err(f"pruning.every={every}; masks are updated every `every` >= 1 steps")
    if window < 1:
        _err(f"pruning.window={window}; the importance window needs >= 1 step")
    b1, b2 = float(c["beta1"]), float(c["beta2"])
    if not (0.0 <= b1 < 1.0):
        _err(f"pruning.beta1={b1} must be in [0, 1) (1 would freeze the importance EMA at zero)")
    if not (0.0 <= b2 <= 1.0):
        _err(f"pruning.beta2={b2} must be in [0, 1] (1 disables the uncertainty term: score = I)")
    return PruningConfig(enabled=bool(c["enabled"]), attn_structure=mode, num_layers=N, full_hidden=d, full_ffn=F,
                         num_heads=H, full_head_dim=dh, hidden=hidden, ffn=ffn, attn=attn, total_steps=total,
                         warmup_steps=int(ti), final_steps=int(tf), every=every, window=window, beta1=b1, beta2=b2,
                         schedule=c["schedule"], importance=c["importance"],
                         target_params=c["target_params"], params_scope=c["params_scope"], solved_ratio=solved_ratio)


def _solve(c, bc: BertConfig, hidden, ffn, attn, mode):
    """Solves the widths left at None from `target_params` with one shared keep ratio rho.

    Each free group gets width max(1, round(rho * full)); in "heads" mode with a standard teacher
    (H * d_h == d) a free hidden width is tied to the kept heads (d' = H' * d_h) so the compact model stays a
    standard BERT. rho is the largest ratio (bisection, the count being monotone in rho) whose count over
    `params_scope` is <= target_params.
    """
    d, F, H, dh, N = (bc.hidden_size, bc.intermediate_size, bc.num_attention_heads, bc.attention_head_size,
                      bc.num_hidden_layers)
    target, scope = int(c["target_params"]), c["params_scope"]
    if hidden is not None and ffn is not None and attn is not None:
        _err("pruning.target_params is set but every width (hidden, ffn and the attention target) is fixed; "
             "drop target_params or leave a width at None for it to solve")
    tie_hidden = mode == "heads" and hidden is None and H * dh == d
    rnd = lambda x: max(1, int(math.floor(x + 0.5)))

    def widths(rho):
        a = attn if attn is not None else rnd(rho * (dh if mode == "head_dim" else H))
        f = ffn if ffn is not None else rnd(rho * F)
        heads = H if mode == "head_dim" else a
        h = hidden if hidden is not None else (heads * dh if tie_hidden else max(rnd(rho * d), heads))
        return int(h), int(f), int(a)

    def count(rho):
        h, f, a = widths(rho)
        aw = H * a if mode == "head_dim" else a * dh
        return count_from_widths(bc, h, [aw] * N, [f] * N)[scope]

    full = full_param_count(bc)[scope]
    if target > full:
        _err(f"pruning.target_params={target} is larger than the model ({full} parameters in scope "
             f"{scope!r}); use a smaller budget")
    if count(0.0) > target:
        _err(f"pruning.target_params={target} cannot be reached: even width-1 free groups leave {count(0.0)} "
             f"parameters in scope {scope!r} (embeddings and fixed widths count too); raise the budget, fix "
             "smaller widths, or use params_scope='encoder'")
    lo, hi = 0.0, 1.0
    if count(1.0) <= target:
        lo = 1.0
    else:
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    h, f, a = widths(lo)
    return h, f, a, lo


# ---------------------------------------------------------------------------------------------- masks
def init_masks(config: BertConfig) -> Dict[str, Array]:
    """All-ones masks for `config`: {"hidden": [d], "attn": [N, H, d_h], "ffn": [N, F]} float32 (shapes from
    `structures.mask_shapes`)."""
    return {name: jnp.ones(shape, jnp.float32) for name, shape in mask_shapes(config).items()}


def student_from_teacher(teacher_config: BertConfig, teacher_params: PyTree):
    """(config, params, masks) of a HomoDistil student: a copy of the teacher in fresh buffers (so that
    donating the student's state never deletes the teacher's arrays) and all-ones masks."""
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), teacher_params)
    return teacher_config, params, init_masks(teacher_config)


# ------------------------------------------------------------------------------------------ importance
def init_importance(params: PyTree) -> Dict[str, Any]:
    """Zero importance state for the student's params: {"window_sum", "ema_I", "ema_U"} (float32 trees
    like `params`) and "count" (int32 scalar: steps accumulated in the current window)."""
    zeros = lambda: jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
    return {"window_sum": zeros(), "ema_I": zeros(), "ema_U": zeros(), "count": jnp.zeros((), jnp.int32)}


def update_importance(importance: Dict[str, Any], params: PyTree, grads: PyTree, step, config: PruningConfig
                      ) -> Dict[str, Any]:
    """One step of PLATON importance. Pure and jittable (`step` may be a traced int32).

    `params` are the student params the gradients `grads` were taken at. Adds s = |params * grads| to the
    window sum every step; when `(step + 1) % window == 0` it closes the window: s_win = window_sum / count,
    I <- b1 I + (1-b1) s_win, U <- b2 U + (1-b2) |s_win - I_new|, and resets the sum. Returns the new state.
    With importance "sensitivity" a closing window sets I <- s_win (U unused); with "magnitude" nothing is
    accumulated (the state is returned unchanged).
    """
    if not config.enabled or config.importance == "magnitude":
        return importance
    wsum = jax.tree.map(lambda a, p, g: a + jnp.abs(p.astype(jnp.float32) * g.astype(jnp.float32)),
                        importance["window_sum"], params, grads)
    count = importance["count"] + 1
    b1, b2 = (0.0, 1.0) if config.importance == "sensitivity" else (config.beta1, config.beta2)

    def close(_):
        n = count.astype(jnp.float32)
        s_win = jax.tree.map(lambda a: a / n, wsum)
        ema_i = jax.tree.map(lambda i, s: b1 * i + (1.0 - b1) * s, importance["ema_I"], s_win)
        ema_u = jax.tree.map(lambda u, s, i: b2 * u + (1.0 - b2) * jnp.abs(s - i), importance["ema_U"], s_win, ema_i)
        return {"window_sum": jax.tree.map(jnp.zeros_like, wsum), "ema_I": ema_i, "ema_U": ema_u,
                "count": jnp.zeros((), jnp.int32)}

    def accumulate(_):
        return {"window_sum": wsum, "ema_I": importance["ema_I"], "ema_U": importance["ema_U"], "count": count}

    if config.window == 1:
        return close(None)
    end = (jnp.asarray(step, jnp.int32) + 1) % config.window == 0
    return jax.lax.cond(end, close, accumulate, None)


def importance_scores(importance: Dict[str, Any], config: PruningConfig, student_params: PyTree = None) -> PyTree:
    """Per-parameter scores (float32 trees like the student's params): "platon": ema_I * ema_U, or ema_I when
    beta2 == 1 (plain EMA sensitivity); "sensitivity": ema_I (the last window's mean |theta * grad|);
    "magnitude": |student_params|."""
    if config.importance == "magnitude":
        if student_params is None:
            raise ValueError("magnitude importance scores |theta|: pass student_params")
        return jax.tree.map(lambda p: jnp.abs(p.astype(jnp.float32)), student_params)
    if config.importance == "sensitivity" or config.beta2 == 1.0:
        return importance["ema_I"]
    return jax.tree.map(jnp.multiply, importance["ema_I"], importance["ema_U"])


# -------------------------------------------------------------------------------------------- schedule
def _schedule_factor(step, config: PruningConfig) -> Array:
    """The schedule factor c(t): 1 until t_i, then down to 0 at T - t_f (cubic), or at once ("oneshot")."""
    t = jnp.asarray(step, jnp.float32)
    if config.schedule == "oneshot":
        return (t <= config.warmup_steps).astype(jnp.float32)
    span = float(config.total_steps - config.warmup_steps - config.final_steps)
    frac = jnp.clip((t - config.warmup_steps) / span, 0.0, 1.0)
    return (1.0 - frac) ** 3


def keep_ratio(step, config: PruningConfig) -> Dict[str, Array]:
    """Keep ratio per group at `step`: r(t) = r_T + (1 - r_T) (1 - (t - t_i)/(T - t_i - t_f))^3, clipped to
    1 before t_i and r_T from T - t_f on, with r_T = target / full. Keys "hidden", "ffn", "attn". float32."""
    c = _schedule_factor(step, config)
    out = {}
    for name, (target, full) in _groups(config).items():
        r_t = target / full
        out[name] = r_t + (1.0 - r_t) * c
    return out


def _groups(config: PruningConfig):
    return {"hidden": (config.hidden, config.full_hidden), "ffn": (config.ffn, config.full_ffn),
            "attn": (config.attn, config.full_attn)}


def target_widths(step, config: PruningConfig) -> Dict[str, Array]:
    """Units each group keeps at `step` (int32): `target + round((full - target) * c(t))`. "attn" counts dims
    per head ("head_dim" mode) or heads per layer ("heads" mode). Non-increasing in step; jittable."""
    c = _schedule_factor(step, config)
    return {name: (target + jnp.floor((full - target) * c + 0.5)).astype(jnp.int32)
            for name, (target, full) in _groups(config).items()}


def on_cadence(step, config: PruningConfig) -> Array:
    """True at the steps where `prune_update` changes masks: t_i < t <= T - t_f and (t % every == 0 or
    t == T - t_f). A jittable bool scalar."""
    t = jnp.asarray(step, jnp.int32)
    end = config.prune_end
    return (t > config.warmup_steps) & (t <= end) & ((t % config.every == 0) | (t == end))


# ------------------------------------------------------------------------------------------------ update
def _keep_top(score: Array, mask: Array, k: Array) -> Array:
    """mask * (rank < k) along the last axis, ranking still-kept units by score (descending, ties by
    lower index); pruned units rank last, so nothing is revived and min(k, kept) units stay."""
    s = jnp.where(mask > 0, jnp.nan_to_num(score.astype(jnp.float32), nan=0.0), -jnp.inf)
    order = jnp.argsort(-s, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)
    return mask * (rank < k).astype(mask.dtype)


def select_masks(masks: Dict[str, Array], groups: Dict[str, Array], widths: Dict[str, Array],
                 config: PruningConfig) -> Dict[str, Array]:
    """New masks keeping, among the kept units, the top `widths` of each group: the hidden vector, the FFN
    neurons of each layer, the dims of each head ("head_dim") or the heads of each layer ("heads")."""
    new = {"hidden": _keep_top(groups["hidden"], masks["hidden"], widths["hidden"]),
           "ffn": _keep_top(groups["ffn"], masks["ffn"], widths["ffn"])}
    if config.attn_structure == "head_dim":
        new["attn"] = _keep_top(groups["attn"], masks["attn"], widths["attn"])
    else:
        head_mask = jnp.max(masks["attn"], axis=-1)                     # [N, H]
        keep = _keep_top(groups["attn"].sum(-1), head_mask, widths["attn"])
        new["attn"] = masks["attn"] * keep[..., None]
    return new


def _mask_mirrors(node, structure, apply_fn):
    """Applies `apply_fn` to every subtree of an optimizer state whose tree structure equals `structure`
    (the params'), e.g. Adam's mu/nu inside optax.chain or optax.MultiSteps, and MultiSteps' acc_grads."""
    if jax.tree.structure(node) == structure:
        return apply_fn(node)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*[_mask_mirrors(x, structure, apply_fn) for x in node])
    if isinstance(node, (tuple, list)):
        return type(node)(_mask_mirrors(x, structure, apply_fn) for x in node)
    if isinstance(node, Mapping):
        return type(node)({k: _mask_mirrors(v, structure, apply_fn) for k, v in node.items()})
    return node


def prune_update(masks: Dict[str, Array], importance: Dict[str, Any], params: PyTree, opt_state: PyTree, step,
                 config: PruningConfig):
    """Between train steps: on the cadence (`on_cadence`), keep the top `target_widths(step)` units of every
    group among the still-kept ones (scores from `importance_scores`, summed per unit by `group_scores`),
    then zero the pruned parameters of `params["student"]` and the matching entries of every optimizer-state
    subtree that mirrors `params` (Adam mu/nu, MultiSteps acc_grads). Off-cadence, returns the inputs.

    `params` is the training tree {"student": ..., "projections": ...} (a bare student tree works too);
    projections are never pruned. Pure and jittable with a traced int32 `step` (a lax.cond).
    Returns (masks, params, opt_state).
    """
    if not config.enabled:
        return masks, params, opt_state
    nested = isinstance(params, Mapping) and "student" in params
    student = params["student"] if nested else params
    structure = jax.tree.structure(params)

    def update(operands):
        masks, params, opt_state = operands
        groups = group_scores(importance_scores(importance, config, params["student"] if nested else params),
                              config.num_layers)
        new_masks = select_masks(masks, groups, target_widths(step, config), config)
        mults = param_multipliers(new_masks, student)
        full_mults = {"student": mults} if nested else mults
        apply_fn = lambda tree: apply_multipliers(tree, full_mults)
        return new_masks, apply_fn(params), _mask_mirrors(opt_state, structure, apply_fn)

    return jax.lax.cond(on_cadence(step, config), update, lambda ops: ops, (masks, params, opt_state))


__all__ = ["PruningConfig", "compact", "count_from_widths", "count_params", "default_pruning_config", "group_scores",
           "importance_scores", "init_importance", "init_masks", "keep_ratio", "on_cadence", "param_multipliers",
           "prune_update", "remaining_widths", "select_masks", "student_from_teacher", "target_widths",
           "update_importance"]
