"""The training engine: the distillation run and the pieces every training loop shares.

- `state`: `TrainState` (step, params {"student", "projections"}, opt_state, masks, importance, rng) and
  `create_state`, which builds it directly in its sharded layout (distillation and fine-tuning use it);
  `state_layout` gives that layout (shapes and shardings) without allocating (bench/pod_plan.py).
- `step`: `build_step_fns` -> the jitted, donating `distill_step(state, teacher_params, batch) ->
  (state, metrics)`, `prune_step(state) -> state` and `eval_step`.
- `models`: the teacher's weights and the student's initial weights of an `Experiment`.
- `loop`: `build_run(config)` places a run on its mesh; `train_and_evaluate(config, workdir)` runs it with
  resume, checkpoints, preemption, logs and the final export.
- `export`: `export_student` (compact + Hugging Face directory) and `export_from_workdir`.

The optimizer (`jaxdistill.optimizer`), validation (`jaxdistill.experiment`), checkpoints
(`jaxdistill.checkpoint`), metrics (`jaxdistill.metrics`) and sharding (`jaxdistill.sharding`) have their
own modules. The names below are re-exported so `from jaxdistill.train import build_run` keeps working.
"""
from jaxdistill.errors import NonFiniteError
from jaxdistill.optimizer import OptimizerConfig, make_lr_schedule, make_optimizer
from jaxdistill.train.export import config_from_params, export_from_workdir, export_student
from jaxdistill.train.loop import Run, build_run, prepare_data, train_and_evaluate
from jaxdistill.train.models import load_models
from jaxdistill.train.state import TrainState, abstract_like, create_state, put_global, state_layout, to_host
from jaxdistill.train.step import Placement, StepFns, build_step_fns

__all__ = ["NonFiniteError", "OptimizerConfig", "Placement", "Run", "StepFns", "TrainState", "abstract_like",
           "build_run", "build_step_fns", "config_from_params", "create_state", "export_from_workdir",
           "export_student", "load_models", "make_lr_schedule", "make_optimizer", "prepare_data", "put_global", "state_layout",
           "to_host",
           "train_and_evaluate"]
