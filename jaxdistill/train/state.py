"""The TrainState every training loop carries (distillation, fine-tuning), built directly in its sharded layout.

`params` is always `{"student": <the trained Bert's params>, "projections": <dict, possibly empty>}`:
projections are parameters only the distillation objective uses (e.g. TinyBERT's d_s -> d_t maps) and are
never exported. `masks` and `importance` are HomoDistil's (`{}` when nothing is pruned).
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdistill import pruning
from jaxdistill import sharding as shard_lib
from jaxdistill.models import BertConfig, logical_axes


@struct.dataclass
class TrainState:
    """Everything a run carries from step to step, as one pytree.

    step: int32 scalar, steps completed. params: {"student": Bert params, "projections": dict}.
    opt_state: optax state of params. masks: HomoDistil masks ({} when not pruning). importance: PLATON
    statistics ({} when not pruning). rng: uint32[2] key for dropout.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    masks: Any
    importance: Any
    rng: jax.Array

    @property
    def student(self):
        """The trained model's Bert params (`params["student"]`)."""
        return self.params["student"]


def put_global(tree, shardings):
    """Host NumPy tree -> global arrays with `shardings` (safe on many hosts: each process writes only the
    shards its devices hold)."""
    def one(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
    return jax.tree.map(one, tree, shardings)


def state_layout(model_config: BertConfig, student_params, tx, mesh, rules, seed: int, *,
                 projections: Optional[dict] = None, pruning_config=None, student_specs=None):
    """(init, abstract, shardings) of the TrainState `create_state` builds, without allocating anything.

    init(student, projections, rng) -> TrainState is the jittable constructor; abstract is its
    `jax.eval_shape` (ShapeDtypeStructs); shardings the NamedShardings of every leaf on `mesh` under `rules`.
    `student_params` may be arrays or ShapeDtypeStructs (a planning tool, e.g. bench/pod_plan.py, passes
    shapes only). The other arguments are `create_state`'s.
    """
    P = jax.sharding.PartitionSpec
    projections = {} if projections is None else projections
    pruning_on = pruning_config is not None

    def init(student, projections, rng):
        params = {"student": student, "projections": projections}
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          masks=pruning.init_masks(model_config) if pruning_on else {},
                          importance=pruning.init_importance(student) if pruning_on else {}, rng=rng)

    abstract = jax.eval_shape(init, student_params, projections, jax.random.PRNGKey(seed))
    student_specs = logical_axes(model_config) if student_specs is None else student_specs
    params_specs = {"student": student_specs, "projections": jax.tree.map(lambda _: P(), projections)}
    specs = TrainState(
        step=P(), params=params_specs,
        opt_state=shard_lib.specs_like(abstract.opt_state, abstract.params, params_specs),
        masks=jax.tree.map(lambda _: P(), abstract.masks),
        importance=shard_lib.specs_like(abstract.importance, abstract.params["student"], student_specs),
        rng=P())
    return init, abstract, shard_lib.logical_to_shardings(specs, abstract, mesh, rules)


def create_state(model_config: BertConfig, student_params, tx, mesh, rules, seed: int, *,
                 projections: Optional[dict] = None, pruning_config=None, student_specs=None):
    """Builds the TrainState directly in its sharded layout; returns (state, state_shardings).

    model_config / student_params: the trained Bert (host NumPy arrays). tx: the optax optimizer.
    mesh / rules: the device mesh and logical-axis rules. seed: the dropout key is PRNGKey(seed).
    projections: the objective's extra parameters ({} by default). pruning_config: a
    `pruning.PruningConfig` to start all-ones masks and zero importance, or None (no pruning).
    student_specs: the logical axis names of `student_params` when they are not a whole Bert's (default
    `logical_axes(model_config)`): a part of the model (the MLM head alone) or another student (the BiLSTM).
    The layout (shapes and shardings) is `state_layout`'s.
    """
    projections = {} if projections is None else projections
    init, _, shardings = state_layout(model_config, student_params, tx, mesh, rules, seed, projections=projections,
                                      pruning_config=pruning_config, student_specs=student_specs)
    student = put_global(student_params, shardings.params["student"])
    projections = put_global(projections, shardings.params["projections"])
    rng = jax.random.PRNGKey(seed)
    state = jax.jit(init, out_shardings=shardings)(student, projections, put_global(rng, shardings.rng))
    return state, shardings


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` carrying `shardings` (a restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def to_host(tree):
    """Fetches a (possibly multi-host sharded) tree to NumPy on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, jax.device_get(tree))
