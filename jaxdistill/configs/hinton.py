r"""Hinton knowledge distillation (Hinton et al. 2015) on pre-training data: soft targets at temperature T.

Objective: w_soft * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + w_hard * CE. Student: 6 layers copied
from the teacher (DistilBERT's [0, 2, 4, 7, 9, 11]).

    jaxdistill distill --config configs/hinton.py:base6 --workdir runs/hinton6
    jaxdistill distill --config configs/hinton.py:smoke --workdir /tmp/hinton-smoke   # CPU, ~1 min

- From the paper: the loss and the T^2 scaling; the hard term with a "considerably lower weight".
- Assumed: T = 4, w_soft = 0.9, w_hard = 0.1 (the paper tunes them per task); the task-agnostic adaptation
  (the soft term reads the MLM predictions over real tokens and the hard term is the MLM loss, see
  `common.task_agnostic_predictions`); the student; seq 128, batch 256, 100k steps, lr 1e-4, warm-up 4k.
- Hardware: assumed one 8-GPU node (hours); not measured. Expected results: none published for BERT in this
  form; it is the baseline the other recipes add terms to.
- demo / smoke: teacher all-MiniLM-L6-v2 (offline) -> a 3-layer student [0, 3, 5] (assumed).
"""
from jaxdistill.configs import common

from jaxdistill.defaults import base_config

PRESETS = ("base6", "demo", "smoke")
DEFAULT_PRESET = "base6"


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config("hinton")
    common.task_agnostic_predictions(c)
    if preset == "base6":
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=100_000, batch_size=256, lr=1e-4, warmup_steps=4000)
        common.layer_student(c, (0, 2, 4, 7, 9, 11))
    else:
        common.offline(c, preset)
        common.layer_student(c, (0, 3, 5))
    return c
