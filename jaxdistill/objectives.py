"""Distillation recipes: loss terms, weights, schedules and layer matches composed into one pure objective.

`base_recipe_config(name)` is a neutral recipe config: every field present and documented, every term off.
The papers' settings are not here: each recipe states them once, in `jaxdistill/configs/<recipe>.py`
(`jaxdistill.configs.<recipe>.recipe()`, e.g. `jaxdistill.configs.tinybert.recipe(stage="general")`).

`build_recipe(recipe_cfg, teacher_config, student_config) -> Recipe` checks the config against the two model
configs (`jaxdistill.recipe_validation`, ConfigError on any problem) and returns a `Recipe` whose
`objective(student_out, teacher_out, batch, step, projections) -> (loss, metrics)` is jit-safe.

Metrics: "loss" (the total), "loss/<term>" (each term's unweighted value) and "loss/distill" (the weighted
sum of the distillation terms, i.e. everything but `hard` and `mlm`; exactly 0 when the student is a copy).
All are float32 scalars.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from jaxdistill import layer_map as lm
from jaxdistill import losses as L
from jaxdistill import vocab_chunks
from jaxdistill.errors import ConfigError
from jaxdistill.models.bert import BertConfig
from jaxdistill.recipe_validation import NOT_DISTILLATION, CheckedRecipe, MatchPlan, as_dict, check_recipe


def base_recipe_config(name: str = "") -> ml_collections.ConfigDict:
    """A neutral recipe config named `name`: every field below at its neutral value, every term off.

    Prediction-layer terms (read `logits` of both models; weights are numbers or schedule configs of the step,
    `jaxdistill.schedules`; a constant 0 switches a term off):
    - `weights.soft`: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), mean over the selected positions.
    - `weights.soft_ce`: soft cross-entropy -sum p_t log p_s at T (same student gradient as soft), mean over
      positions (`soft_ce_reduction`: "mean", or "official" = TinyBERT's mean over batch x classes).
    - `weights.logit_mse`: sum over classes of (z_s - z_t)^2, mean over positions (`logit_mse_reduction`:
      "mean", or "official" = d-bert's mean over batch x classes).
    - `weights.hard`: CE with `batch["labels"]` [B] on the student's classifier logits (MSE when the labels
      are floats or num_labels == 1).
    - `weights.mlm`: CE with `batch["mlm_labels"]` [B, L] (-100 = not a target), mean over targets.
    - `logits`: "mlm_logits" ([B, L, V], task-agnostic) or "logits" ([B, C], a fine-tuned classifier).
    - `prediction_positions`: the tokens a term over "mlm_logits" averages over: "valid" (real tokens),
      "mlm" (MLM targets) or "all".
    - `temperature`: T, a number or a schedule.

    Intermediate matches (`matches`, TextBrewer-like): a list of dicts with `name` (metric "loss/<name>"),
    `feature` ("hidden", "cls", "attention_scores", "attention_probs", "queries", "keys", "values"), `loss` (a
    name in `losses.LOSSES`), `weight` (number or schedule), the layers — `layers` (a `layer_map` preset or a
    list of (student, teacher) pairs) or `student_layer` / `teacher_layer` — `projection` (None, or a name in
    params["projections"]; `{layer}` in the name gives one per student layer; one name shared by several pairs
    is one shared projection), `activation`, `loss_kwargs` and `stack`. Layer indices are hidden-state indices
    (0 = embeddings, -1 = last); attention features use the layer that produced hidden state m, so m >= 1. A
    match is the sum of its loss over its pairs, except stacked ones (`pkd_patience`), which stack the [CLS]
    vectors of all pairs into [B, K, D].
    - `student_layer`, `teacher_layer`: the default layers of a match without `layers` (-1 = last).
    - `relation_heads`: R of `minilmv2_relation_kl` when its loss_kwargs do not set num_relation_heads.
    - `projection_std`: init scale of projections between different widths (identity when widths are equal).

    Other fields:
    - `progressive` (MobileBERT, `jaxdistill.progressive_transfer`): `enabled`, `steps_per_layer`,
      `lower_scale`, `upper_scale`, `embeddings_layer`.
    - `same_depth`: the student must be as deep as the teacher (HomoDistil prunes width only).
    - `stage`: a label of the paper's stage this recipe is (e.g. TinyBERT "general"/"task"); not read by
      the objective.
    """
    # type_safe=False: a weight or the temperature may be replaced by a schedule config.
    return ml_collections.ConfigDict(dict(
        name=name, stage="",
        logits="mlm_logits", prediction_positions="valid", temperature=1.0,
        weights=dict(soft=0.0, soft_ce=0.0, logit_mse=0.0, hard=0.0, mlm=0.0), logit_mse_reduction="mean",
        soft_ce_reduction="mean",
        matches=[], student_layer=-1, teacher_layer=-1, relation_heads=0, projection_std=0.02,
        progressive=dict(enabled=False, steps_per_layer=0, lower_scale=0.1, upper_scale=0.0, embeddings_layer=1),
        same_depth=False,
    ), type_safe=False)


def match(name: str, feature: str, loss: str, weight=1.0, projection: Optional[str] = None, **fields) -> dict:
    """One entry of a recipe's `matches` (see `base_recipe_config`)."""
    return dict(name=name, feature=feature, loss=loss, weight=weight, projection=projection, **fields)


def model_feature(out, feature: str, index: int, who: str, recipe: str) -> jax.Array:
    """Feature `feature` at hidden-state index `index` of a model output: hidden [B, L, d], cls [B, d],
    attention_scores/probs [B, H, L, L], queries/keys/values [B, L, H, d_h] (attention of layer index - 1)."""
    if out.hidden_states is None:
        raise ConfigError(f"recipe {recipe!r} needs intermediates but the {who} output has none: call Bert with "
                          "output_intermediates=True (recipe.needs_intermediates) for both models")
    if feature in ("hidden", "cls"):
        x = out.hidden_states[index]
        return x[:, 0] if feature == "cls" else x
    return getattr(out, feature)[index - 1]


class Recipe:
    """A built recipe: the objective, its projections and (MobileBERT) its learning-rate scales.

    `name`, `terms` (active term names: prediction terms, then match names), `needs_intermediates` (call both
    models with output_intermediates=True), `config` (the recipe config it was built from), `plan` (the
    `recipe_validation.CheckedRecipe`).
    """

    def __init__(self, plan: CheckedRecipe, config: ml_collections.ConfigDict):
        self.plan = plan
        self.config = config
        self.name = plan.name
        self.terms: Tuple[str, ...] = plan.terms
        self.needs_intermediates = bool(plan.matches)

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, terms={self.terms})"

    def init_projections(self, rng) -> dict:
        """{name: {"kernel": [d_s, d_t], "bias": [d_t]}} for every projection the matches use; identity kernels
        when d_s == d_t (so a copy of the teacher has zero loss)."""
        return {pname: lm.init_projection(jax.random.fold_in(rng, i), din, dout, std=self.plan.projection_std)
                for i, (pname, (din, dout)) in enumerate(sorted(self.plan.projection_dims.items()))}

    def prediction_mask(self, batch) -> Optional[jax.Array]:
        """The [B, L] positions the soft terms over "mlm_logits" average over (None: every position; also for
        classifier logits [B, C])."""
        p = self.plan.predictions
        if p.logits == "logits" or p.positions == "all":
            return None
        if p.positions == "valid":
            return batch["attention_mask"]
        return batch["mlm_labels"] != -100

    def prediction_values(self, student_out, teacher_out, batch, step, *, vocab_chunk_tokens: int = 0,
                          teacher_student_kl: bool = False, fuse_gradient: bool = False) -> Dict[str, jax.Array]:
        """Unweighted float32 scalars of the active prediction-layer terms (soft, soft_ce, logit_mse, hard, mlm),
        plus "teacher_student_kl" (T = 1, no gradient) when asked: on MLM predictions (mean over real tokens) when
        both models have an MLM head, else on their classifier outputs (mean over examples; task distillation).
        Outputs that carry `mlm_predictor` instead of `mlm_logits` (Bert(..., mlm_logits=False)) are scored
        chunk by chunk (`jaxdistill.vocab_chunks`, `vocab_chunk_tokens` tokens per chunk); there
        `fuse_gradient` takes their weighted gradient in the same pass (the values then carry none, and
        `vocab_chunks.GRADIENT_CARRIER` carries it; see `objective`)."""
        if student_out.mlm_logits is None and student_out.mlm_predictor is not None:
            return self.chunked_prediction_values(student_out, teacher_out, batch, step, vocab_chunk_tokens,
                                                  teacher_student_kl, fuse_gradient)
        p = self.plan.predictions
        values: Dict[str, jax.Array] = {}
        if teacher_student_kl and student_out.mlm_logits is not None and teacher_out.mlm_logits is not None:
            values["teacher_student_kl"] = jax.lax.stop_gradient(L.soft_kl(
                student_out.mlm_logits, teacher_out.mlm_logits, temperature=1.0, mask=batch["attention_mask"]))
        elif (teacher_student_kl and getattr(student_out, "logits", None) is not None
              and getattr(teacher_out, "logits", None) is not None
              and student_out.logits.shape == teacher_out.logits.shape):  # task models: their classifiers
            values["teacher_student_kl"] = jax.lax.stop_gradient(L.soft_kl(
                student_out.logits, teacher_out.logits, temperature=1.0))
        if p.logit_terms:
            zs, zt = getattr(student_out, p.logits), getattr(teacher_out, p.logits)
            if zs is None or zt is None:
                raise ConfigError(f"recipe {self.name!r} needs `{p.logits}` from both models")
            mask = self.prediction_mask(batch)
            T = p.temperature(step)
            if "soft" in p.weights:
                values["soft"] = L.soft_kl(zs, zt, T, mask=mask)
            if "soft_ce" in p.weights:
                values["soft_ce"] = L.soft_cross_entropy(zs, zt, T, mask=mask, reduction=p.soft_ce_reduction)
            if "logit_mse" in p.weights:
                values["logit_mse"] = L.logit_mse(zs, zt, mask=mask, reduction=p.logit_mse_reduction)
            if "hard" in p.weights:
                values["hard"] = self.hard_label_loss(zs, batch)
        if "mlm" in p.weights:
            values["mlm"] = L.mlm_cross_entropy(student_out.mlm_logits, batch["mlm_labels"])
        return values

    def chunked_prediction_values(self, student_out, teacher_out, batch, step, chunk_tokens: int,
                                  teacher_student_kl: bool, fuse_gradient: bool = False) -> Dict[str, jax.Array]:
        """`prediction_values` from the models' MLM-head inputs, a block of tokens at a time."""
        p = self.plan.predictions
        if p.logit_terms and p.logits != "mlm_logits":
            raise ConfigError(f"recipe {self.name!r} reads `{p.logits}`: call Bert with mlm_logits=True "
                              "(vocabulary chunking applies to mlm_logits only)")
        terms = [t for t in ("soft", "soft_ce", "logit_mse", "mlm") if t in p.weights]
        if "hard" in p.weights:
            raise ConfigError(f"recipe {self.name!r}: the hard-label term is not computed over vocabulary chunks; "
                              "set train.vocab_chunk_tokens=0")
        if teacher_student_kl and teacher_out.mlm_predictor is not None:
            terms.append("teacher_student_kl")
        if not terms:
            return {}
        weights = ({k: p.weights[k](step) for k in terms if k in vocab_chunks.DIFFERENTIABLE}
                   if fuse_gradient else None)
        return vocab_chunks.prediction_terms(
            student_out.mlm_predictor, teacher_out.mlm_predictor, terms, chunk_tokens=chunk_tokens,
            temperature=p.temperature(step), position_mask=self.prediction_mask(batch),
            attention_mask=batch["attention_mask"], mlm_labels=batch.get("mlm_labels"),
            logit_mse_reduction=p.logit_mse_reduction, gradient_weights=weights)

    def hard_label_loss(self, logits: jax.Array, batch) -> jax.Array:
        """CE of classifier logits [B, C] with int labels [B]; MSE (mean over B) for float labels or C == 1."""
        if "labels" not in batch:
            raise ConfigError(f"recipe {self.name!r} has a hard-label term: the batch needs `labels`")
        labels = batch["labels"]
        if logits.shape[-1] == 1 or jnp.issubdtype(jnp.asarray(labels).dtype, jnp.floating):
            return jnp.mean(jnp.square(logits[..., 0].astype(jnp.float32) - labels))
        return L.cross_entropy(logits, labels)

    def match_value(self, m: MatchPlan, student_out, teacher_out, attention_mask, projections: dict, step) -> jax.Array:
        """The unweighted float32 value of one match: its loss summed over its layer pairs (each pair gated by
        the progressive schedule when there is one), or evaluated once on the stacked pairs."""

        def student_feature(s_idx: int, pname: Optional[str]):
            x = model_feature(student_out, m.feature, s_idx, "student", self.name)
            if pname is not None:
                if pname not in projections:
                    raise ConfigError(f"projection {pname!r} of match {m.name!r} is missing from "
                                      "params['projections']; initialise them with recipe.init_projections")
                x = lm.apply_projection(projections[pname], x, m.activation)
            return x

        def teacher_feature(t_idx: int):
            return model_feature(teacher_out, m.feature, t_idx, "teacher", self.name)

        kwargs = dict(m.kwargs)
        if m.pass_mask:
            kwargs["mask"] = attention_mask
        if m.stacked:
            s = jnp.stack([student_feature(si, p) for (si, _), p in zip(m.pairs, m.projections)], axis=1)
            t = jnp.stack([teacher_feature(ti) for _, ti in m.pairs], axis=1)
            return m.fn(s, t, **kwargs)
        total = jnp.float32(0.0)
        progressive = self.plan.progressive
        for (si, ti), p in zip(m.pairs, m.projections):
            value = m.fn(student_feature(si, p), teacher_feature(ti), **kwargs)
            total = total + (value if progressive is None else progressive.term_gate(si, step) * value)
        return total

    def objective(self, student_out, teacher_out, batch, step, projections: Optional[dict] = None, *,
                  vocab_chunk_tokens: int = 0, teacher_student_kl: bool = False, fuse_gradient: bool = False):
        """(loss, metrics): loss = sum over terms of weight(step) * value, a float32 scalar; metrics as in the
        module doc. `batch` needs attention_mask [B, L] (and mlm_labels / labels for those terms).
        vocab_chunk_tokens / teacher_student_kl: see `prediction_values`; the KL metric is returned under
        "teacher_student_kl" and is not part of the loss. fuse_gradient: with chunking, the prediction terms'
        gradient is taken while their values are (no recomputed logits); set it only for a loss that is
        differentiated, since an undifferentiated call would still pay for the gradient."""
        projections = projections or {}
        values = self.prediction_values(student_out, teacher_out, batch, step, vocab_chunk_tokens=vocab_chunk_tokens,
                                        teacher_student_kl=teacher_student_kl, fuse_gradient=fuse_gradient)
        carrier = values.pop(vocab_chunks.GRADIENT_CARRIER, jnp.float32(0.0))
        extra = {k: values.pop(k) for k in ("teacher_student_kl",) if k in values}
        for m in self.plan.matches:
            values[m.name] = self.match_value(m, student_out, teacher_out, batch["attention_mask"], projections, step)
        weights = {k: w(step) for k, w in self.plan.predictions.weights.items()}
        weights.update({m.name: m.weight(step) for m in self.plan.matches})
        total, distill = carrier, jnp.float32(0.0)
        for k, v in values.items():
            total = total + weights[k] * v
            if k not in NOT_DISTILLATION:
                distill = distill + weights[k] * v
        metrics = {f"loss/{k}": v.astype(jnp.float32) for k, v in values.items()}
        metrics["loss/distill"] = distill
        metrics["loss"] = total
        metrics.update(extra)
        return total, metrics

    def update_scale(self, params: dict, step) -> Optional[dict]:
        """Per-leaf float32 learning-rate multipliers shaped like `params` under progressive transfer
        (`ProgressiveTransfer.update_scale`), else None (no scaling)."""
        if self.plan.progressive is None:
            return None
        return self.plan.progressive.update_scale(params, step)


def build_recipe(recipe_cfg, teacher_config: BertConfig, student_config: BertConfig) -> Recipe:
    """Checks `recipe_cfg` against the two model configs and returns the `Recipe` (ConfigError otherwise)."""
    cfg = ml_collections.ConfigDict(as_dict(recipe_cfg))
    return Recipe(check_recipe(cfg, teacher_config, student_config), cfg)

