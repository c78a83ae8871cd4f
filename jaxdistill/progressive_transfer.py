"""MobileBERT's progressive knowledge transfer (Sun et al. 2020): one student layer at a time, as pure functions
of the step.

Stage k (1-based, `progressive_stage`) trains student layer k for `steps_per_layer` steps: its layer-wise
transfer terms count, the layers below it keep learning at `lower_scale` x the learning rate (default 0.1, the
paper's "slowed" lower layers), the layers above it are not reached yet (`upper_scale`, default 0: frozen).
The embeddings count as layer `embeddings_layer` (default 1, assumed). After the last stage (k > M) every
layer trains jointly at full rate and every transfer term counts.

`ProgressiveTransfer.update_scale` gives the per-leaf learning-rate multipliers the engine applies to the
optimizer updates (`recipe.update_scale`); `ProgressiveTransfer.term_gate` switches a layer's transfer term
on during its stage.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def progressive_stage(step, steps_per_layer: int) -> jax.Array:
    """The 1-based student layer trained at `step` (int32 scalar): `step // steps_per_layer + 1`; a value
    greater than the student's depth M means every stage is done (all layers train jointly)."""
    return jnp.asarray(step, jnp.int32) // int(steps_per_layer) + 1


@dataclasses.dataclass(frozen=True)
class ProgressiveTransfer:
    """The stage schedule of a student with `num_layers` (M) encoder layers; static (hashable) under jit."""

    steps_per_layer: int
    num_layers: int
    lower_scale: float = 0.1
    upper_scale: float = 0.0
    embeddings_layer: int = 1

    def stage(self, step) -> jax.Array:
        """`progressive_stage(step, steps_per_layer)`: int32 scalar."""
        return progressive_stage(step, self.steps_per_layer)

    def term_gate(self, student_layer: int, step) -> jax.Array:
        """float32 scalar, 1.0 when the transfer term of hidden-state index `student_layer` counts at `step`:
        during its own stage, and for every layer once all stages are done (index 0, the embeddings, counts
        as `embeddings_layer`)."""
        k = self.stage(step)
        layer = student_layer if student_layer > 0 else self.embeddings_layer
        return ((k == layer) | (k > self.num_layers)).astype(jnp.float32)

    def layer_scale(self, layer: int, step) -> jax.Array:
        """float32 scalar learning-rate multiplier of 1-based student layer `layer` at `step`: 1 for the layer
        of the current stage, `lower_scale` below it, `upper_scale` above it, 1 after the last stage."""
        k = self.stage(step)
        scale = jnp.where(layer == k, 1.0, jnp.where(layer < k, self.lower_scale, self.upper_scale))
        return jnp.where(k > self.num_layers, 1.0, scale).astype(jnp.float32)

    def update_scale(self, params: dict, step) -> dict:
        """A pytree shaped like `params` ({"student": ..., "projections": ...}) of float32 scalar multipliers
        (one per leaf, broadcast over it): `layer_<i>` of the student -> `layer_scale(i + 1)`, its
        `embeddings` -> `layer_scale(embeddings_layer)`, every other leaf (pooler, MLM head, projections) -> 1."""

        def scale_student(tree: dict) -> dict:
            out = {}
            for key, sub in tree.items():
                if key.startswith("layer_"):
                    scale = self.layer_scale(int(key.split("_")[1]) + 1, step)
                elif key == "embeddings":
                    scale = self.layer_scale(self.embeddings_layer, step)
                else:
                    scale = jnp.float32(1.0)
                out[key] = jax.tree.map(lambda _, s=scale: s, sub)
            return out

        return {key: scale_student(sub) if key == "student" else jax.tree.map(lambda _: jnp.float32(1.0), sub)
                for key, sub in params.items()}
