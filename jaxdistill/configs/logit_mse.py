r"""Logit matching (Ba & Caruana 2014; Tang et al. 2019, BERT -> BiLSTM) on pre-training data.

Objective: alpha * CE + (1 - alpha) * mean squared error between student and teacher logits (no temperature).
Student: 6 layers copied from the teacher (DistilBERT's [0, 2, 4, 7, 9, 11]).

    jaxdistill distill --config logit_mse:base6 --workdir runs/logit-mse6
    jaxdistill distill --config logit_mse:cpu --workdir /tmp/logit-mse-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config logit_mse:smoke --workdir /tmp/logit-mse-smoke   # CPU, ~1 min

(From a checkout, `--config configs/logit_mse.py:smoke` names the same file.)

- From the papers: the MSE on logits, combined with the hard-label CE; the reduction (mean over batch x
  classes, the official d-bert code's: `recipe.logit_mse_reduction="official"`).
- Assumed: alpha = 0.5; the task-agnostic adaptation (the MSE reads the MLM logits over real tokens and the
  hard term is the MLM loss, see `common.prediction_targets`; `recipe(data="task")` is the papers' form on
  classifier logits); a BERT student rather than a BiLSTM; seq 128, batch 256, 100k steps, lr 1e-4,
  warm-up 4k steps.
- Hardware: assumed one 8-GPU node (hours); not measured. Expected results: none published in this form.
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline) -> a 3-layer student [0, 3, 5] (assumed); `demo` is an
  alias of `cpu` (the demo of `jaxdistill demo` is HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config

PRESETS = ("base6",) + common.CPU_PRESETS
DEFAULT_PRESET = "base6"


def recipe(data: str = "task"):
    """0.5 * logit MSE (official reduction: mean over batch x classes) + 0.5 * hard CE (alpha = 0.5 assumed). `data`: "task" (classifier logits + hard labels,
    the papers) or "pretraining" (MLM logits + MLM CE, assumed adaptation)."""
    r = objectives.base_recipe_config("logit_mse")
    r.weights.logit_mse = 0.5
    r.logit_mse_reduction = "official"  # d-bert: PyTorch MSELoss, the mean over batch x classes
    common.prediction_targets(r, data, hard_weight=0.5)
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    c.recipe = recipe(data="pretraining")
    if preset == "base6":
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=100_000, batch_size=256, lr=1e-4, warmup_steps=4000)
        common.layer_student(c, (0, 2, 4, 7, 9, 11))
    else:
        common.cpu_preset(c, preset)
        common.layer_student(c, (0, 3, 5))
    return c
