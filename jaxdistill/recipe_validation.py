"""Checks a recipe config against the teacher's and the student's `BertConfig` before anything is traced.

`check_recipe(recipe_cfg, teacher_config, student_config) -> CheckedRecipe` runs every check below and returns
the resolved plan that `objectives.Recipe` evaluates: the active prediction-layer terms with their weight and
temperature schedules, the intermediate matches with their (student, teacher) layer pairs and projection
names, the projections to create, and MobileBERT's progressive schedule. Each check is its own function and
raises `jaxdistill.errors.ConfigError` (a ValueError) whose message names the field and the fix. The fields
themselves are documented in `objectives.base_recipe_config`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

from jaxdistill import layer_map as lm
from jaxdistill import losses as L
from jaxdistill import schedules
from jaxdistill.errors import ConfigError
from jaxdistill.models.bert import BertConfig
from jaxdistill.progressive_transfer import ProgressiveTransfer

PREDICTION_TERMS = ("soft", "soft_ce", "logit_mse", "hard", "mlm")
LOGIT_TERMS = ("soft", "soft_ce", "logit_mse", "hard")      # the terms that read `recipe.logits`
SOFT_TERMS = ("soft", "soft_ce", "logit_mse")               # the terms that compare teacher and student logits
NOT_DISTILLATION = ("hard", "mlm")                          # terms left out of the "loss/distill" metric
FEATURES = ("hidden", "cls", "attention_scores", "attention_probs", "queries", "keys", "values")
TOKEN_FEATURES = ("hidden", "attention_scores", "attention_probs", "queries", "keys", "values")
LOGITS = ("logits", "mlm_logits")
PREDICTION_POSITIONS = ("valid", "mlm", "all")
EQUAL_WIDTH_LOSSES = frozenset({"hidden_mse", "cosine_embedding", "feature_map_mse", "pkd_patience"})
EQUAL_HEAD_LOSSES = frozenset({"attention_score_mse", "attention_kl", "value_relation_kl"})
STACKED_LOSSES = frozenset({"pkd_patience"})
MATCH_FIELDS = frozenset({"name", "feature", "loss", "weight", "layers", "student_layer", "teacher_layer",
                          "projection", "activation", "loss_kwargs", "stack"})


@dataclasses.dataclass(frozen=True)
class PredictionPlan:
    """The active prediction-layer terms. `weights`: term -> schedule (step -> weight), zero-weight terms left
    out; `temperature`: schedule; `logits`: "logits" | "mlm_logits"; `positions`: "valid" | "mlm" | "all"."""

    weights: Dict[str, Callable]
    temperature: Callable
    logits: str
    positions: str
    logit_mse_reduction: str
    soft_ce_reduction: str = "mean"

    @property
    def logit_terms(self) -> Tuple[str, ...]:
        return tuple(k for k in LOGIT_TERMS if k in self.weights)


@dataclasses.dataclass(frozen=True)
class MatchPlan:
    """One intermediate match: `loss(student feature, teacher feature)` summed over `pairs` of hidden-state
    indices (student, teacher), or over the pairs stacked into [B, K, D] when `stacked`. `projections[i]` is
    the projection applied to the student side of pair i (None: none); `pass_mask` says whether the loss
    receives the [B, L] attention mask."""

    name: str
    feature: str
    loss: str
    fn: Callable
    weight: Callable
    pairs: Tuple[Tuple[int, int], ...]
    projections: Tuple[Optional[str], ...]
    activation: Optional[str]
    kwargs: Dict[str, Any]
    stacked: bool
    pass_mask: bool


@dataclasses.dataclass(frozen=True)
class CheckedRecipe:
    """A recipe config that passed every check, resolved against the two model configs."""

    name: str
    predictions: PredictionPlan
    matches: Tuple[MatchPlan, ...]
    projection_dims: Dict[str, Tuple[int, int]]   # projection name -> (student width, teacher width)
    projection_std: float
    progressive: Optional[ProgressiveTransfer]
    terms: Tuple[str, ...]                        # active prediction terms, then match names


def config_value(cfg, key: str, default=None):
    """`cfg[key]`, or `default` when the field is missing or None."""
    try:
        value = cfg[key]
    except (KeyError, AttributeError):
        return default
    return default if value is None else value


def as_dict(x) -> dict:
    """A plain dict of a ConfigDict or mapping."""
    return dict(x.to_dict()) if hasattr(x, "to_dict") else dict(x)


def is_off(weight_spec) -> bool:
    """True for a weight that is the constant 0 (the term is switched off)."""
    return schedules.is_constant(weight_spec) and schedules.constant_value(weight_spec) == 0.0


def feature_width(config: BertConfig, feature: str) -> tuple:
    """The trailing shape of `feature` in one layer: (d,) for hidden/cls, (H,) for attention maps, (H, d_h)
    for queries/keys/values (hidden/cls give the int d)."""
    if feature in ("hidden", "cls"):
        return config.hidden_size
    if feature in ("attention_scores", "attention_probs"):
        return (config.num_attention_heads,)
    return (config.num_attention_heads, config.attention_head_size)


# ------------------------------------------------------------------------------------------ recipe level
def check_name(cfg) -> str:
    name = config_value(cfg, "name")
    if not name:
        raise ConfigError("a recipe config needs a name: start from a paper recipe (jaxdistill.configs.<recipe>."
                          "recipe(), e.g. jaxdistill.configs.homodistil.recipe()) or from "
                          "objectives.base_recipe_config(name)")
    return str(name)


def check_depth(name: str, cfg, tc: BertConfig, sc: BertConfig) -> None:
    """`same_depth`: the student must have as many layers as the teacher (HomoDistil prunes width only)."""
    M, N = sc.num_hidden_layers, tc.num_hidden_layers
    if bool(config_value(cfg, "same_depth", False)) and M != N:
        raise ConfigError(f"{name} needs a student as deep as the teacher ({N} layers), got {M}; recipe.same_depth "
                          "is set: the student starts from a copy of the teacher and is pruned in width only")


def check_prediction_terms(name: str, cfg, tc: BertConfig, sc: BertConfig) -> PredictionPlan:
    """Weights, logits and positions; the models' heads (num_labels, MLM head) and vocabularies."""
    weights_cfg = as_dict(config_value(cfg, "weights", {}))
    unknown = set(weights_cfg) - set(PREDICTION_TERMS)
    if unknown:
        raise ConfigError(f"recipe {name!r}: unknown weights {sorted(unknown)}; known terms: {PREDICTION_TERMS}")
    active = {k: schedules.make_schedule(v) for k, v in weights_cfg.items() if not is_off(v)}
    logits = config_value(cfg, "logits", "mlm_logits")
    positions = config_value(cfg, "prediction_positions", "valid")
    if logits not in LOGITS:
        raise ConfigError(f"recipe {name!r}: logits must be 'logits' or 'mlm_logits', got {logits!r}")
    if positions not in PREDICTION_POSITIONS:
        raise ConfigError(f"recipe {name!r}: prediction_positions must be 'valid', 'mlm' or 'all', got {positions!r}")
    if any(k in active for k in LOGIT_TERMS):
        if logits == "logits":
            if not (tc.num_labels and sc.num_labels):
                raise ConfigError(f"recipe {name!r} distils classifier logits: teacher and student need num_labels "
                                  f"> 0 (got {tc.num_labels}, {sc.num_labels}); fine-tune the teacher first")
            if tc.num_labels != sc.num_labels:
                raise ConfigError(f"teacher and student num_labels differ: {tc.num_labels} vs {sc.num_labels}")
            if tc.num_labels == 1 and {"soft", "soft_ce"} & set(active):
                raise ConfigError(f"recipe {name!r}: soft targets need num_labels >= 2; for regression use "
                                  "the logit_mse recipe")
        elif not (tc.with_mlm_head and sc.with_mlm_head):
            raise ConfigError(f"recipe {name!r} distils MLM predictions: teacher and student need with_mlm_head")
    if "mlm" in active and not sc.with_mlm_head:
        raise ConfigError(f"recipe {name!r} has an MLM term: the student needs with_mlm_head=True")
    if tc.vocab_size != sc.vocab_size and logits == "mlm_logits" and set(SOFT_TERMS) & set(active):
        raise ConfigError(f"teacher and student vocabularies differ ({tc.vocab_size} vs {sc.vocab_size}); "
                          "distilling MLM predictions needs the same tokenizer")
    return PredictionPlan(weights=active, temperature=schedules.make_schedule(config_value(cfg, "temperature", 1.0)),
                          logits=logits, positions=positions,
                          logit_mse_reduction=check_reduction(name, cfg, "logit_mse_reduction"),
                          soft_ce_reduction=check_reduction(name, cfg, "soft_ce_reduction"))


def check_reduction(name: str, cfg, field: str) -> str:
    """A prediction term's reduction field: "mean" (the library's) or "official" (the paper code's)."""
    value = str(config_value(cfg, field, "mean"))
    if value not in ("mean", "official"):
        raise ConfigError(f"recipe {name!r}: {field} must be 'mean' or 'official', got {value!r}")
    return value


def check_match_names(name: str, matches: List[MatchPlan]) -> None:
    names = [m.name for m in matches]
    dup = {n for n in names if names.count(n) > 1}
    clash = set(names) & set(PREDICTION_TERMS + ("distill",))
    if dup or clash:
        raise ConfigError(f"recipe {name!r}: match names must be unique and differ from {PREDICTION_TERMS}, "
                          f"got duplicates/clashes {sorted(dup or clash)}")


def check_progressive(name: str, cfg, matches: List[MatchPlan], sc: BertConfig) -> Optional[ProgressiveTransfer]:
    """`progressive` (MobileBERT): on only when enabled and the recipe has matches; needs steps_per_layer > 0."""
    prog = as_dict(config_value(cfg, "progressive", {}))
    if not (bool(prog.get("enabled", False)) and matches):
        return None
    steps = int(prog.get("steps_per_layer", 0) or 0)
    if steps <= 0:
        raise ConfigError(f"recipe {name!r}: progressive transfer needs progressive.steps_per_layer > 0")
    return ProgressiveTransfer(steps_per_layer=steps, num_layers=sc.num_hidden_layers,
                               lower_scale=float(prog.get("lower_scale", 0.1)),
                               upper_scale=float(prog.get("upper_scale", 0.0)),
                               embeddings_layer=int(prog.get("embeddings_layer", 1)))


# ------------------------------------------------------------------------------------------- match level
def match_layer_pairs(m: dict, where: str, feature: str, cfg, tc: BertConfig, sc: BertConfig) -> List[Tuple[int, int]]:
    """The (student, teacher) hidden-state indices of a match: from `layers` (a layer_map preset or explicit
    pairs) or from `student_layer`/`teacher_layer` (defaults: the recipe's); attention features need m >= 1."""
    M, N = sc.num_hidden_layers, tc.num_hidden_layers
    min_index = 0 if feature in ("hidden", "cls") else 1
    try:
        if m.get("layers") is not None:
            pairs = lm.make_layer_map(m["layers"], M, N, min_index)
        else:
            s_l = m.get("student_layer", config_value(cfg, "student_layer", -1))
            t_l = m.get("teacher_layer", config_value(cfg, "teacher_layer", -1))
            s_l = list(s_l) if isinstance(s_l, (list, tuple)) else [s_l]
            t_l = list(t_l) if isinstance(t_l, (list, tuple)) else [t_l]
            if len(s_l) != len(t_l):
                raise ConfigError(f"student_layer and teacher_layer have different lengths {len(s_l)}, {len(t_l)}")
            pairs = lm.explicit(list(zip(s_l, t_l)), M, N, min_index)
    except ValueError as e:
        raise ConfigError(f"{where} ({feature}): {e}") from None
    if not pairs:
        raise ConfigError(f"{where}: the layer map is empty for a {M}-layer student and {N}-layer teacher")
    return pairs


def check_shapes(where: str, name: str, feature: str, loss: str, projection, tc: BertConfig, sc: BertConfig) -> None:
    """Head counts and widths the loss needs; projections only on hidden/cls features."""
    ws, wt = feature_width(sc, feature), feature_width(tc, feature)
    if projection is not None and feature not in ("hidden", "cls"):
        raise ConfigError(f"{where}: projections apply to hidden/cls features only, not {feature!r}")
    if loss in EQUAL_HEAD_LOSSES and ws[0] != wt[0]:
        raise ConfigError(f"{where}: loss {loss!r} needs equal head counts, got student {ws[0]} vs teacher "
                          f"{wt[0]}; use the minilmv2_relation_kl loss (multi-head relations) instead")
    if loss in EQUAL_WIDTH_LOSSES and ws != wt and projection is None:
        raise ConfigError(f"{where}: loss {loss!r} needs equal widths, got student {ws} vs teacher {wt}; add a "
                          f"projection (e.g. projection='{name}_proj') to map the student width to the teacher's")


def check_relation_heads(where: str, feature: str, kwargs: dict, cfg, tc: BertConfig, sc: BertConfig) -> None:
    """MiniLMv2: R = loss_kwargs.num_relation_heads (default: the recipe's relation_heads) must divide both
    widths H x d_h. Sets kwargs["num_relation_heads"]."""
    R = int(kwargs.setdefault("num_relation_heads", config_value(cfg, "relation_heads", 0)))
    if R <= 0:
        raise ConfigError(f"{where}: minilmv2_relation_kl needs num_relation_heads > 0 (set relation_heads)")
    for who, (h, dh) in (("student", feature_width(sc, feature)), ("teacher", feature_width(tc, feature))):
        if (h * dh) % R:
            raise ConfigError(f"{where}: the {who} {feature} width {h * dh} is not divisible by "
                              f"num_relation_heads={R}; choose R dividing both widths")


def projection_names(where: str, projection, pairs, tc: BertConfig, sc: BertConfig,
                     projection_dims: Dict[str, Tuple[int, int]]) -> Tuple[Optional[str], ...]:
    """One projection name per pair (`{layer}` -> the student index); records (d_s, d_t) per name in
    `projection_dims` and refuses a name used with two different shapes."""
    if projection is None:
        return tuple(None for _ in pairs)
    names = []
    dims = (sc.hidden_size, tc.hidden_size)
    for s, _ in pairs:
        pname = str(projection).replace("{layer}", str(s))
        if projection_dims.setdefault(pname, dims) != dims:
            raise ConfigError(f"{where}: projection {pname!r} is used with dims {dims} and {projection_dims[pname]}")
        names.append(pname)
    return tuple(names)


def check_match(m: dict, index: int, cfg, tc: BertConfig, sc: BertConfig,
                projection_dims: Dict[str, Tuple[int, int]]) -> Optional[MatchPlan]:
    """One entry of `matches` -> its MatchPlan, or None when its weight is the constant 0."""
    name = m.get("name") or f"match{index}"
    where = f"recipe {config_value(cfg, 'name')!r}, match {name!r}"
    unknown = set(m) - MATCH_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}")
    feature, loss = m.get("feature"), m.get("loss")
    if feature not in FEATURES:
        raise ConfigError(f"{where}: feature {feature!r} is not one of {FEATURES}")
    try:
        fn = L.get(loss)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    weight_spec = m.get("weight", 1.0)
    if is_off(weight_spec):
        return None
    pairs = match_layer_pairs(m, where, feature, cfg, tc, sc)
    kwargs = as_dict(m.get("loss_kwargs") or {})
    projection = m.get("projection")
    check_shapes(where, name, feature, loss, projection, tc, sc)
    if loss == "minilmv2_relation_kl":
        check_relation_heads(where, feature, kwargs, cfg, tc, sc)
    names = projection_names(where, projection, pairs, tc, sc, projection_dims)
    stacked = bool(m.get("stack", loss in STACKED_LOSSES))
    if stacked and feature != "cls":
        raise ConfigError(f"{where}: stacking layers ([B, K, D]) needs feature 'cls', got {feature!r}")
    return MatchPlan(name=name, feature=feature, loss=loss, fn=fn, weight=schedules.make_schedule(weight_spec),
                     pairs=tuple(pairs), projections=names, activation=m.get("activation"), kwargs=kwargs,
                     stacked=stacked, pass_mask=L.accepts(fn, "mask") and feature in TOKEN_FEATURES)


# ------------------------------------------------------------------------------------------------- all
def check_recipe(recipe_cfg, teacher_config: BertConfig, student_config: BertConfig) -> CheckedRecipe:
    """Every check above, in order; returns the resolved plan (ConfigError on the first problem)."""
    cfg = recipe_cfg
    tc, sc = teacher_config, student_config
    name = check_name(cfg)
    check_depth(name, cfg, tc, sc)
    predictions = check_prediction_terms(name, cfg, tc, sc)
    projection_dims: Dict[str, Tuple[int, int]] = {}
    matches = [plan for i, m in enumerate(config_value(cfg, "matches", []) or [])
               if (plan := check_match(as_dict(m), i, cfg, tc, sc, projection_dims)) is not None]
    check_match_names(name, matches)
    progressive = check_progressive(name, cfg, matches, sc)
    terms = tuple([k for k in PREDICTION_TERMS if k in predictions.weights] + [m.name for m in matches])
    if not terms:
        raise ConfigError(f"recipe {name!r} has no active term: every weight is 0")
    return CheckedRecipe(name=name, predictions=predictions, matches=tuple(matches), projection_dims=projection_dims,
                         projection_std=float(config_value(cfg, "projection_std", 0.02)), progressive=progressive,
                         terms=terms)
