"""Distillation recipes: loss terms, weights, schedules and layer matches composed into one pure objective.

`build_recipe(cfg, teacher_config, student_config)` validates a recipe config (an ml_collections ConfigDict,
usually from `default_recipe_config(name)`) and returns a `Recipe` whose
`objective(student_out, teacher_out, batch, step, projections) -> (loss, metrics)` is jit-safe.

A recipe config has (every field optional except `name`):
- `logits`: which output the prediction-layer terms read, `"logits"` (classifier, task data) or
  `"mlm_logits"` (task-agnostic). `prediction_positions`: the tokens a soft term over `mlm_logits` averages
  over, `"valid"` (real tokens), `"mlm"` (MLM targets) or `"all"`.
- `temperature` and `weights.{soft, soft_ce, logit_mse, hard, mlm}`: numbers or schedule configs
  (`jaxdistill.schedules`), functions of the step; a constant 0 switches a term off.
  soft = `soft_kl` (T^2-scaled), soft_ce = `soft_cross_entropy`, logit_mse, hard = CE with `batch["labels"]`
  (MSE for regression), mlm = CE with `batch["mlm_labels"]`.
- `matches`: TextBrewer-like intermediate matches, each a dict with `name`, `feature` (`hidden`, `cls`,
  `attention_scores`, `attention_probs`, `queries`, `keys`, `values`), `loss` (a name in `losses.LOSSES`),
  `weight` (number or schedule), the layers — `layers` (a `layer_map` preset or a list of (student, teacher)
  pairs) or `student_layer` / `teacher_layer` (defaults: the config's `student_layer` / `teacher_layer`) —
  `projection` (None, or a name in params["projections"]; `{layer}` in the name gives one per student layer;
  one name shared by several pairs is one shared projection), `activation`, and `loss_kwargs`.
  Layer indices are hidden-state indices (0 = embeddings, -1 = last); attention features use the layer that
  produced hidden state m, so m >= 1. A match is the sum of its loss over its pairs, except `pkd_patience`,
  which stacks the [CLS] vectors of all pairs into [B, K, D].
- `progressive` (MobileBERT): `enabled`, `steps_per_layer`, `lower_scale`, `upper_scale`,
  `embeddings_layer`; see `progressive_stage`.
- `student_init`: how the engine initialises the student (`layer_map.student_init_layers` preset or None).

Metrics: "loss" (the total), "loss/<term>" (each term's unweighted value) and "loss/distill" (the weighted
sum of the distillation terms, i.e. everything but `hard` and `mlm`; exactly 0 when the student is a copy).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from jaxdistill import layer_map as lm
from jaxdistill import losses as L
from jaxdistill import schedules
from jaxdistill.models.bert import BertConfig
from jaxdistill.errors import ConfigError

RECIPES = ("hinton", "logit_mse", "pkd", "distilbert", "tinybert", "mobilebert", "minilm", "minilmv2",
           "homodistil")
PREDICTION_TERMS = ("soft", "soft_ce", "logit_mse", "hard", "mlm")
FEATURES = ("hidden", "cls", "attention_scores", "attention_probs", "queries", "keys", "values")
_EQUAL_WIDTH = {"hidden_mse", "cosine_embedding", "feature_map_mse", "pkd_patience"}
_EQUAL_HEADS = {"attention_score_mse", "attention_kl", "value_relation_kl"}
_STACKED = {"pkd_patience"}
_TOKEN_FEATURES = ("hidden", "attention_scores", "attention_probs", "queries", "keys", "values")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A built recipe (see module doc). `terms`: the active term names; `config`: the validated config."""

    name: str
    needs_intermediates: bool
    init_projections: Callable[[Any], dict]
    objective: Callable[..., Tuple[jax.Array, Dict[str, jax.Array]]]
    update_scale: Callable[[Any, Any], Optional[Any]]
    terms: Tuple[str, ...]
    config: ml_collections.ConfigDict


# --------------------------------------------------------------------------------------------- defaults
def _match(name, feature, loss, weight=1.0, projection=None, **kw):
    return dict(name=name, feature=feature, loss=loss, weight=weight, projection=projection, **kw)


def default_recipe_config(name: str, **kwargs) -> ml_collections.ConfigDict:
    """The paper defaults of recipe `name` as a ConfigDict (see the README table). `(assumed)` marks defaults
    that the paper does not fix. kwargs: `stage` for tinybert ("general" | "task") and mobilebert
    ("transfer" | "pretrain")."""
    base = dict(name=name, logits="mlm_logits", prediction_positions="valid", temperature=1.0,
                weights=dict(soft=0.0, soft_ce=0.0, logit_mse=0.0, hard=0.0, mlm=0.0), matches=[],
                progressive=dict(enabled=False, steps_per_layer=0, lower_scale=0.1, upper_scale=0.0,
                                 embeddings_layer=1),
                student_init=None, student_layer=-1, teacher_layer=-1, relation_heads=0, stage="")
    w = base["weights"]
    if name == "hinton":  # Hinton et al. 2015: T and weights are tuned per task; these are (assumed).
        base.update(logits="logits", temperature=4.0)
        w.update(soft=0.9, hard=0.1)  # "considerably lower weight" on the hard term (assumed values)
    elif name == "logit_mse":  # Tang et al. 2019: alpha * CE + (1 - alpha) * MSE; alpha = 0.5 (assumed)
        base.update(logits="logits")
        w.update(logit_mse=0.5, hard=0.5)
    elif name == "pkd":  # Sun et al. 2019: (1-a) CE + a * T^2 KL + beta * patience; grid values (assumed picks)
        base.update(logits="logits", temperature=10.0, student_init="first")
        w.update(soft=0.5, hard=0.5)
        base["matches"] = [_match("patience", "cls", "pkd_patience", weight=100.0, layers="skip",
                                  loss_kwargs=dict(normalize=True))]
    elif name == "distilbert":  # Sanh et al. 2019, official train.py defaults
        base.update(temperature=2.0, prediction_positions="valid", student_init="distilbert")
        w.update(soft=5.0, mlm=2.0)
        base["matches"] = [_match("cos", "hidden", "cosine_embedding", weight=1.0, layers="last_only")]
    elif name == "tinybert":  # Jiao et al. 2020; one shared projection as in the official code
        stage = kwargs.get("stage", "general")
        if stage not in ("general", "task"):
            raise ConfigError(f"tinybert stage {stage!r} is not 'general' or 'task'")
        base.update(stage=stage)
        base["matches"] = [
            _match("att", "attention_scores", "attention_score_mse", layers="uniform_no_embeddings"),
            _match("hid", "hidden", "hidden_mse", layers="uniform", projection="fit_dense")]
        if stage == "task":  # the paper's soft cross-entropy at T = 1, as the KL: it differs by the teacher
            base.update(logits="logits", temperature=1.0)  # entropy (a constant: same gradient) and is 0 for a
            w.update(soft=1.0)  # copy; set weights.soft_ce = 1, soft = 0 to log the paper's loss values
    elif name == "mobilebert":  # Sun et al. 2020
        stage = kwargs.get("stage", "transfer")
        if stage not in ("transfer", "pretrain"):
            raise ConfigError(f"mobilebert stage {stage!r} is not 'transfer' or 'pretrain'")
        base.update(stage=stage)
        if stage == "transfer":
            base["matches"] = [
                _match("fmt", "hidden", "feature_map_mse", layers="uniform_no_embeddings"),
                _match("at", "attention_probs", "attention_kl", layers="uniform_no_embeddings")]
            base["progressive"].update(enabled=True, steps_per_layer=10000)  # steps per stage (assumed)
        else:  # pre-training distillation: 0.5 MLM + 0.5 KD over the MLM targets (positions assumed)
            base.update(prediction_positions="mlm")
            w.update(mlm=0.5, soft=0.5)
    elif name == "minilm":  # Wang et al. 2020: last layers, no MLM
        base["matches"] = [_match("at", "attention_probs", "attention_kl", layers="last_only"),
                           _match("vr", "values", "value_relation_kl", layers="last_only")]
    elif name == "minilmv2":  # Wang et al. 2021: R = 48 for base teachers (64 for large)
        base.update(relation_heads=48)
        base["matches"] = [_match(f"{x[0]}{x[0]}", x, "minilmv2_relation_kl") for x in ("queries", "keys", "values")]
    elif name == "homodistil":  # Liang et al. 2023 reconstruction (METHODS.md); weights (assumed) 1
        base.update(student_init="copy", prediction_positions="valid")  # positions (assumed)
        w.update(mlm=1.0, soft=1.0)
        base["matches"] = [
            _match("hid", "hidden", "hidden_mse", weight=1.0, layers="uniform", projection="hidden_{layer}"),
            _match("att", "attention_probs", "attention_kl", weight=0.0, layers="uniform_no_embeddings")]
    else:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {list(RECIPES)}")
    # type_safe=False: a weight or the temperature may be replaced by a schedule config.
    return ml_collections.ConfigDict(base, type_safe=False)


# ----------------------------------------------------------------------------------------------- helpers
def _get(cfg, key, default=None):
    try:
        value = cfg[key]
    except (KeyError, AttributeError):
        return default
    return default if value is None else value


def _to_dict(x) -> dict:
    return dict(x.to_dict()) if hasattr(x, "to_dict") else dict(x)


def _feature_width(config: BertConfig, feature: str):
    if feature in ("hidden", "cls"):
        return config.hidden_size
    if feature in ("attention_scores", "attention_probs"):
        return (config.num_attention_heads,)
    return (config.num_attention_heads, config.attention_head_size)


def _get_feature(out, feature: str, index: int, who: str, recipe: str):
    if out.hidden_states is None:
        raise ConfigError(f"recipe {recipe!r} needs intermediates but the {who} output has none: call Bert with "
                         "output_intermediates=True (recipe.needs_intermediates) for both models")
    if feature in ("hidden", "cls"):
        x = out.hidden_states[index]
        return x[:, 0] if feature == "cls" else x
    return getattr(out, feature)[index - 1]


@dataclasses.dataclass
class _Match:
    name: str
    feature: str
    loss: str
    fn: Callable
    weight: Callable
    pairs: List[Tuple[int, int]]
    projections: List[Optional[str]]
    activation: Optional[str]
    kwargs: dict
    stacked: bool
    pass_mask: bool


def _build_match(m: dict, index: int, cfg, tc: BertConfig, sc: BertConfig, proj_dims: dict) -> Optional[_Match]:
    name = m.get("name") or f"match{index}"
    where = f"recipe {cfg.name!r}, match {name!r}"
    unknown = set(m) - {"name", "feature", "loss", "weight", "layers", "student_layer", "teacher_layer",
                        "projection", "activation", "loss_kwargs", "stack"}
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
    if schedules.is_constant(weight_spec) and schedules.constant_value(weight_spec) == 0.0:
        return None
    M, N = sc.num_hidden_layers, tc.num_hidden_layers
    min_index = 0 if feature in ("hidden", "cls") else 1
    try:
        if m.get("layers") is not None:
            pairs = lm.make_layer_map(m["layers"], M, N, min_index)
        else:
            s_l = m.get("student_layer", _get(cfg, "student_layer", -1))
            t_l = m.get("teacher_layer", _get(cfg, "teacher_layer", -1))
            s_l = list(s_l) if isinstance(s_l, (list, tuple)) else [s_l]
            t_l = list(t_l) if isinstance(t_l, (list, tuple)) else [t_l]
            if len(s_l) != len(t_l):
                raise ConfigError(f"student_layer and teacher_layer have different lengths {len(s_l)}, {len(t_l)}")
            pairs = lm.explicit(list(zip(s_l, t_l)), M, N, min_index)
    except ValueError as e:
        raise ConfigError(f"{where} ({feature}): {e}") from None
    if not pairs:
        raise ConfigError(f"{where}: the layer map is empty for a {M}-layer student and {N}-layer teacher")
    kwargs = _to_dict(m.get("loss_kwargs") or {})
    ws, wt = _feature_width(sc, feature), _feature_width(tc, feature)
    projection = m.get("projection")
    if projection is not None and feature not in ("hidden", "cls"):
        raise ConfigError(f"{where}: projections apply to hidden/cls features only, not {feature!r}")
    if loss in _EQUAL_HEADS and ws[0] != wt[0]:
        raise ConfigError(f"{where}: loss {loss!r} needs equal head counts, got student {ws[0]} vs teacher "
                         f"{wt[0]}; use the minilmv2_relation_kl loss (multi-head relations) instead")
    if loss in _EQUAL_WIDTH and ws != wt and projection is None:
        raise ConfigError(f"{where}: loss {loss!r} needs equal widths, got student {ws} vs teacher {wt}; add a "
                         f"projection (e.g. projection='{name}_proj') to map the student width to the teacher's")
    if loss == "minilmv2_relation_kl":
        R = int(kwargs.setdefault("num_relation_heads", _get(cfg, "relation_heads", 0)))
        if R <= 0:
            raise ConfigError(f"{where}: minilmv2_relation_kl needs num_relation_heads > 0 (set relation_heads)")
        for who, (h, dh) in (("student", ws), ("teacher", wt)):
            if (h * dh) % R:
                raise ConfigError(f"{where}: the {who} {feature} width {h * dh} is not divisible by "
                                 f"num_relation_heads={R}; choose R dividing both widths")
    names = []
    for s, _ in pairs:
        if projection is None:
            names.append(None)
            continue
        pname = str(projection).replace("{layer}", str(s))
        dims = (sc.hidden_size, tc.hidden_size)
        if proj_dims.setdefault(pname, dims) != dims:
            raise ConfigError(f"{where}: projection {pname!r} is used with dims {dims} and {proj_dims[pname]}")
        names.append(pname)
    stacked = bool(m.get("stack", loss in _STACKED))
    if stacked and feature != "cls":
        raise ConfigError(f"{where}: stacking layers ([B, K, D]) needs feature 'cls', got {feature!r}")
    return _Match(name=name, feature=feature, loss=loss, fn=fn, weight=schedules.make_schedule(weight_spec),
                  pairs=pairs, projections=names, activation=m.get("activation"), kwargs=kwargs,
                  stacked=stacked, pass_mask=L.accepts(fn, "mask") and feature in _TOKEN_FEATURES)


def progressive_stage(step, steps_per_layer: int):
    """MobileBERT's progressive transfer: the 1-based student layer trained at `step` (stage k trains layer k
    for `steps_per_layer` steps); a value > M means every stage is done (all layers train jointly)."""
    return jnp.asarray(step, jnp.int32) // int(steps_per_layer) + 1


# ------------------------------------------------------------------------------------------------- build
def build_recipe(recipe_cfg, teacher_config: BertConfig, student_config: BertConfig) -> Recipe:
    """Validates `recipe_cfg` against the two model configs and returns the `Recipe` (ValueError otherwise)."""
    cfg = ml_collections.ConfigDict(_to_dict(recipe_cfg))
    name = _get(cfg, "name")
    if not name:
        raise ConfigError("a recipe config needs a name (start from objectives.default_recipe_config(name))")
    tc, sc = teacher_config, student_config
    M, N = sc.num_hidden_layers, tc.num_hidden_layers
    if name == "homodistil" and M != N:
        raise ConfigError(f"homodistil needs a student as deep as the teacher ({N} layers), got {M}; HomoDistil "
                         "starts from a copy of the teacher and prunes width only")
    weights_cfg = _to_dict(_get(cfg, "weights", {}))
    unknown = set(weights_cfg) - set(PREDICTION_TERMS)
    if unknown:
        raise ConfigError(f"recipe {name!r}: unknown weights {sorted(unknown)}; known terms: {PREDICTION_TERMS}")
    active = {k: schedules.make_schedule(v) for k, v in weights_cfg.items()
              if not (schedules.is_constant(v) and schedules.constant_value(v) == 0.0)}
    temperature = schedules.make_schedule(_get(cfg, "temperature", 1.0))
    logits_key = _get(cfg, "logits", "mlm_logits")
    positions = _get(cfg, "prediction_positions", "valid")
    if logits_key not in ("logits", "mlm_logits"):
        raise ConfigError(f"recipe {name!r}: logits must be 'logits' or 'mlm_logits', got {logits_key!r}")
    if positions not in ("valid", "mlm", "all"):
        raise ConfigError(f"recipe {name!r}: prediction_positions must be 'valid', 'mlm' or 'all', got {positions!r}")
    pred_terms = [k for k in ("soft", "soft_ce", "logit_mse", "hard") if k in active]
    if pred_terms:
        if logits_key == "logits":
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
    if tc.vocab_size != sc.vocab_size and logits_key == "mlm_logits" and {"soft", "soft_ce", "logit_mse"} & set(active):
        raise ConfigError(f"teacher and student vocabularies differ ({tc.vocab_size} vs {sc.vocab_size}); "
                         "distilling MLM predictions needs the same tokenizer")

    proj_dims: Dict[str, Tuple[int, int]] = {}
    matches = [mm for i, m in enumerate(_get(cfg, "matches", []) or [])
               if (mm := _build_match(_to_dict(m), i, cfg, tc, sc, proj_dims)) is not None]
    dup = {m.name for m in matches if [x.name for x in matches].count(m.name) > 1}
    if dup or {m.name for m in matches} & set(PREDICTION_TERMS + ("distill",)):
        raise ConfigError(f"recipe {name!r}: match names must be unique and differ from {PREDICTION_TERMS}, "
                         f"got duplicates/clashes {sorted(dup or {m.name for m in matches} & set(PREDICTION_TERMS))}")
    prog = _to_dict(_get(cfg, "progressive", {}))
    progressive = bool(prog.get("enabled", False)) and bool(matches)
    if progressive and int(prog.get("steps_per_layer", 0)) <= 0:
        raise ConfigError(f"recipe {name!r}: progressive transfer needs progressive.steps_per_layer > 0")
    emb_layer = int(prog.get("embeddings_layer", 1))
    terms = tuple([k for k in PREDICTION_TERMS if k in active] + [m.name for m in matches])
    if not terms:
        raise ConfigError(f"recipe {name!r} has no active term: every weight is 0")
    std = float(_get(cfg, "projection_std", 0.02))

    def init_projections(rng) -> dict:
        out = {}
        for i, (pname, (din, dout)) in enumerate(sorted(proj_dims.items())):
            out[pname] = lm.init_projection(jax.random.fold_in(rng, i), din, dout, std=std)
        return out

    def _gate(student_layer: int, step):
        """1.0 when the pair of `student_layer` trains at `step` (always, unless progressive)."""
        if not progressive:
            return None
        k = progressive_stage(step, prog["steps_per_layer"])
        layer = student_layer if student_layer > 0 else emb_layer
        return ((k == layer) | (k > M)).astype(jnp.float32)

    def _match_value(m: _Match, s_out, t_out, mask, projections, step):
        def student_feature(s_idx, pname):
            x = _get_feature(s_out, m.feature, s_idx, "student", name)
            if pname is not None:
                if pname not in projections:
                    raise ConfigError(f"projection {pname!r} of match {m.name!r} is missing from "
                                     "params['projections']; initialise them with recipe.init_projections")
                x = lm.apply_projection(projections[pname], x, m.activation)
            return x
        kw = dict(m.kwargs)
        if m.pass_mask:
            kw["mask"] = mask
        if m.stacked:
            s = jnp.stack([student_feature(si, p) for (si, _), p in zip(m.pairs, m.projections)], axis=1)
            t = jnp.stack([_get_feature(t_out, m.feature, ti, "teacher", name) for _, ti in m.pairs], axis=1)
            return m.fn(s, t, **kw)
        total = jnp.float32(0.0)
        for (si, ti), p in zip(m.pairs, m.projections):
            value = m.fn(student_feature(si, p), _get_feature(t_out, m.feature, ti, "teacher", name), **kw)
            gate = _gate(si, step)
            total = total + (value if gate is None else gate * value)
        return total

    def objective(student_out, teacher_out, batch, step, projections=None):
        projections = projections or {}
        attention_mask = batch["attention_mask"]
        values: Dict[str, jax.Array] = {}
        if pred_terms:
            zs, zt = getattr(student_out, logits_key), getattr(teacher_out, logits_key)
            if zs is None or zt is None:
                raise ConfigError(f"recipe {name!r} needs `{logits_key}` from both models")
            if logits_key == "logits":
                pmask = None
            elif positions == "valid":
                pmask = attention_mask
            elif positions == "mlm":
                pmask = batch["mlm_labels"] != -100
            else:
                pmask = None
            T = temperature(step)
            if "soft" in active:
                values["soft"] = L.soft_kl(zs, zt, T, mask=pmask)
            if "soft_ce" in active:
                values["soft_ce"] = L.soft_cross_entropy(zs, zt, T, mask=pmask)
            if "logit_mse" in active:
                values["logit_mse"] = L.logit_mse(zs, zt, mask=pmask,
                                                  reduction=_get(cfg, "logit_mse_reduction", "mean"))
            if "hard" in active:
                if "labels" not in batch:
                    raise ConfigError(f"recipe {name!r} has a hard-label term: the batch needs `labels`")
                labels = batch["labels"]
                if zs.shape[-1] == 1 or jnp.issubdtype(jnp.asarray(labels).dtype, jnp.floating):
                    values["hard"] = jnp.mean(jnp.square(zs[..., 0].astype(jnp.float32) - labels))
                else:
                    values["hard"] = L.cross_entropy(zs, labels)
        if "mlm" in active:
            values["mlm"] = L.mlm_cross_entropy(student_out.mlm_logits, batch["mlm_labels"])
        for m in matches:
            values[m.name] = _match_value(m, student_out, teacher_out, attention_mask, projections, step)
        weights = {k: active[k](step) for k in active}
        weights.update({m.name: m.weight(step) for m in matches})
        distill = jnp.float32(0.0)
        total = jnp.float32(0.0)
        for k, v in values.items():
            total = total + weights[k] * v
            if k not in ("hard", "mlm"):
                distill = distill + weights[k] * v
        metrics = {f"loss/{k}": v.astype(jnp.float32) for k, v in values.items()}
        metrics["loss/distill"] = distill
        metrics["loss"] = total
        return total, metrics

    def update_scale(params, step):
        """Per-leaf float32 multipliers (scalars, broadcast over the leaf) for progressive transfer, else None.

        Stage k (see `progressive_stage`): student layer k -> 1, layers below -> lower_scale (default 0.1),
        layers above -> upper_scale (default 0: not yet reached); embeddings count as layer
        `embeddings_layer` (default 1, assumed); other parameters (heads, projections) -> 1. After the last
        stage every multiplier is 1.
        """
        if not progressive:
            return None
        k = progressive_stage(step, prog["steps_per_layer"])
        lower, upper = float(prog.get("lower_scale", 0.1)), float(prog.get("upper_scale", 0.0))

        def layer_scale(layer: int):
            s = jnp.where(layer == k, 1.0, jnp.where(layer < k, lower, upper))
            return jnp.where(k > M, 1.0, s).astype(jnp.float32)

        def scale_student(tree):
            out = {}
            for key, sub in tree.items():
                if key.startswith("layer_"):
                    s = layer_scale(int(key.split("_")[1]) + 1)
                elif key == "embeddings":
                    s = layer_scale(emb_layer)
                else:
                    s = jnp.float32(1.0)
                out[key] = jax.tree.map(lambda _, s=s: s, sub)
            return out

        return {key: scale_student(sub) if key == "student" else jax.tree.map(lambda _: jnp.float32(1.0), sub)
                for key, sub in params.items()}

    return Recipe(name=name, needs_intermediates=bool(matches), init_projections=init_projections,
                  objective=objective, update_scale=update_scale, terms=terms, config=cfg)
