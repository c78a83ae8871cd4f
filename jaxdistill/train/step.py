"""The distillation step as pure functions, jitted once with shardings from the logical-axis rules.

`distill_step(state, teacher_params, batch) -> (state, metrics)` (metrics: the loss terms, `train/grad_norm`
and `train/param_norm`, the student's parameter norm after the update): teacher forward under stop_gradient, student
forward with the HomoDistil masks, the recipe's objective, gradients (optionally accumulated over micro-batches
with `lax.scan`), the optax update (scaled by the recipe's `update_scale`, e.g. MobileBERT's progressive
transfer) and the importance update from the same gradients. It donates the state (argument 0), never the
teacher. `prune_step(state) -> state` applies `pruning.prune_update`; `eval_step(state, teacher_params, batch)
-> metrics` scores held-out batches with the same forward and objective, without dropout.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jaxdistill import pruning
from jaxdistill import sharding as shard_lib
from jaxdistill.models import Bert, BertConfig
from jaxdistill.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run lives: the mesh, the logical-axis rules, and the shardings of the state and the teacher."""

    mesh: Any
    rules: Any
    state_shardings: Any
    teacher_shardings: Any


@dataclasses.dataclass(frozen=True)
class StepFns:
    """The jitted functions of a run (`prune_step` is None when nothing is pruned)."""

    distill_step: Callable
    prune_step: Optional[Callable]
    eval_step: Callable


def build_step_fns(teacher_config: BertConfig, student_config: BertConfig, recipe, tx, pruning_config,
                   placement: Placement, *, accum_steps: int = 1, dropout: bool = True,
                   nan_at_step: Optional[int] = None, student_model=None, vocab_chunk_tokens: int = 0,
                   fuse_vocab_gradient: bool = True) -> StepFns:
    """Builds and jits distill_step / prune_step / eval_step for one run.

    recipe: an `objectives.Recipe`. tx: the optax optimizer of the state. pruning_config: a
    `pruning.PruningConfig` or None. accum_steps: micro-batches per update (the batch is split row-wise:
    micro-batch i takes rows i, i+k, ..., so every device keeps an equal share). dropout: student dropout
    while training. nan_at_step: fault injection for tests (the loss of that update, counted from 1, is NaN).
    student_model: the student's Flax module when it is not `Bert(student_config)` (e.g. `models.bilstm.BiLSTM`,
    called with Bert's arguments and returning a `BertOutput`).
    vocab_chunk_tokens: > 0 computes the MLM logits and every loss over them a chunk of about this many tokens
    at a time (`jaxdistill.vocab_chunks`), so no [B, L, V] logits exist whole; 0 = whole logits.
    fuse_vocab_gradient: with chunking, the train step takes each chunk's gradient while computing its loss
    (True, the default); False recomputes the chunk's logits in the backward pass (bench/memory_scale.py
    compares the two).
    """
    teacher = Bert(teacher_config)
    student = student_model if student_model is not None else Bert(student_config)
    needs = bool(recipe.needs_intermediates)
    pruning_on = pruning_config is not None
    whole_logits = int(vocab_chunk_tokens) <= 0

    def forward_teacher(teacher_params, batch):
        out = teacher.apply({"params": teacher_params}, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], deterministic=True, output_intermediates=needs,
                            mlm_logits=whole_logits)
        return jax.lax.stop_gradient(out)

    def student_loss(params, masks, teacher_out, batch, step, rng, deterministic, differentiated):
        """(loss, terms): the recipe's loss and terms for the student's forward, plus the teacher-student KL
        on MLM predictions (T=1, mean over real tokens) under "teacher_student_kl" when both have MLM heads."""
        out = student.apply({"params": params["student"]}, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], masks=masks if pruning_on else None,
                            deterministic=deterministic, output_intermediates=needs, rngs={"dropout": rng},
                            mlm_logits=whole_logits)
        return recipe.objective(out, teacher_out, batch, step, params["projections"],
                                vocab_chunk_tokens=int(vocab_chunk_tokens), teacher_student_kl=True,
                                fuse_gradient=differentiated and fuse_vocab_gradient)

    def loss_fn(params, masks, teacher_out, batch, step, rng):
        loss, terms = student_loss(params, masks, teacher_out, batch, step, rng, deterministic=not dropout,
                                   differentiated=True)
        if nan_at_step is not None:
            loss = jnp.where(step + 1 == nan_at_step, jnp.nan, loss)
        kl = terms.pop("teacher_student_kl", jnp.float32(0))
        return loss, dict(terms, **{"train/teacher_student_kl": kl})

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def gradients(state: TrainState, teacher_params, batch, rng):
        if accum_steps == 1:
            return grad_fn(state.params, state.masks, forward_teacher(teacher_params, batch), batch, state.step, rng)
        micro = jax.tree.map(lambda x: x.reshape((-1, accum_steps) + x.shape[1:]).swapaxes(0, 1), batch)

        def micro_step(i):
            mb = jax.tree.map(lambda x: x[i], micro)
            return grad_fn(state.params, state.masks, forward_teacher(teacher_params, mb), mb, state.step,
                           jax.random.fold_in(rng, i))

        def body(carry, i):
            return jax.tree.map(jnp.add, carry, micro_step(i)), None

        total, _ = jax.lax.scan(body, micro_step(0), jnp.arange(1, accum_steps))
        return jax.tree.map(lambda x: x / accum_steps, total)

    def distill_step(state: TrainState, teacher_params, batch):
        rng, step_rng = jax.random.split(state.rng)
        (loss, terms), grads = gradients(state, teacher_params, batch, step_rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        scale = recipe.update_scale(state.params, state.step)
        if scale is not None:
            updates = jax.tree.map(lambda u, s: u * s, updates, scale)
        importance = state.importance
        if pruning_on:
            importance = pruning.update_importance(importance, state.params["student"], grads["student"],
                                                   state.step, pruning_config)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, importance=importance,
                                  rng=rng)
        return new_state, dict(terms, loss=loss, **{"train/grad_norm": optax.tree.norm(grads),
                                                    "train/param_norm": optax.tree.norm(params["student"])})

    def prune_step(state: TrainState):
        masks, params, opt_state = pruning.prune_update(state.masks, state.importance, state.params,
                                                        state.opt_state, state.step, pruning_config)
        return state.replace(masks=masks, params=params, opt_state=opt_state)

    def eval_step(state: TrainState, teacher_params, batch):
        loss, terms = student_loss(state.params, state.masks, forward_teacher(teacher_params, batch), batch,
                                   state.step, state.rng, deterministic=True, differentiated=False)
        res = {"eval/loss": loss}
        if "teacher_student_kl" in terms:
            res["eval/kl"] = terms.pop("teacher_student_kl")
        res.update({"eval/" + k.split("/", 1)[-1]: v for k, v in terms.items()})
        return res

    p = placement
    batch_sh = shard_lib.batch_sharding(p.mesh)
    replicated = jax.sharding.NamedSharding(p.mesh, jax.sharding.PartitionSpec())
    in_sh = (p.state_shardings, p.teacher_shardings, batch_sh)
    return StepFns(
        distill_step=shard_lib.jit_with_rules(distill_step, p.rules, p.mesh, in_shardings=in_sh,
                                              out_shardings=(p.state_shardings, replicated), donate_argnums=(0,)),
        prune_step=(jax.jit(prune_step, in_shardings=(p.state_shardings,), out_shardings=p.state_shardings,
                            donate_argnums=(0,)) if pruning_on else None),
        eval_step=shard_lib.jit_with_rules(eval_step, p.rules, p.mesh, in_shardings=in_sh, out_shardings=replicated))
