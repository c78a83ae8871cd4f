"""The teacher's weights and the student's initial weights of an `Experiment`.

`student.init` (see `experiment.student_config_of`): "copy" (HomoDistil: an exact copy of the teacher),
"layers" (copies of the teacher layers `student.layers`, e.g. DistilBERT's [0, 2, 4, 7, 9, 11]) or "random"
(a fresh model of `student_config`, seeded with `train.seed`).
"""
from __future__ import annotations

import jax
import numpy as np

from jaxdistill.experiment import Experiment
from jaxdistill.layer_map import init_student_from_teacher
from jaxdistill.models import hf, init_params


def load_models(exp: Experiment):
    """(teacher_params, student_params) as float32 NumPy trees, shaped as `exp`'s teacher and student configs."""
    if exp.data_kind == "task":  # a fine-tuned classifier teacher; BERT or BiLSTM student
        from jaxdistill.task_distill import load_task_models
        return load_task_models(exp)
    t = exp.teacher_config
    _, teacher_params = hf.load(exp.config.teacher.path, with_mlm_head=True, with_pooler=True, dtype=t.dtype,
                                remat=False)
    if exp.student_init == "copy":
        student_params = jax.tree.map(np.array, teacher_params)
    elif exp.student_init == "layers":
        _, student_params = init_student_from_teacher(t, teacher_params, layers=list(exp.student_layers))
    else:
        student_params = jax.tree.map(np.asarray, init_params(exp.student_config,
                                                              jax.random.PRNGKey(int(exp.config.train.seed))))
    return teacher_params, student_params
