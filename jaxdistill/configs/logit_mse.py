r"""Logit matching (Ba & Caruana 2014; Tang et al. 2019, BERT -> BiLSTM) on pre-training data.

Objective: alpha * CE + (1 - alpha) * mean squared error between student and teacher logits (no temperature).
Student: 6 layers copied from the teacher (DistilBERT's [0, 2, 4, 7, 9, 11]).

    jaxdistill distill --config configs/logit_mse.py:base6 --workdir runs/logit-mse6
    jaxdistill distill --config configs/logit_mse.py:smoke --workdir /tmp/logit-mse-smoke   # CPU, ~1 min

- From the papers: the MSE on logits, combined with the hard-label CE; the reduction (mean over batch x
  classes, the official d-bert code's).
- Assumed: alpha = 0.5; the task-agnostic adaptation (the MSE reads the MLM logits over real tokens and the
  hard term is the MLM loss, see `common.task_agnostic_predictions`); a BERT student rather than a BiLSTM;
  seq 128, batch 256, 100k steps, lr 1e-4, warm-up 4k steps.
- Hardware: assumed one 8-GPU node (hours); not measured. Expected results: none published in this form.
- demo / smoke: teacher all-MiniLM-L6-v2 (offline) -> a 3-layer student [0, 3, 5] (assumed).
"""
from jaxdistill.configs import common

from jaxdistill.defaults import base_config

PRESETS = ("base6", "demo", "smoke")
DEFAULT_PRESET = "base6"


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config("logit_mse")
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
