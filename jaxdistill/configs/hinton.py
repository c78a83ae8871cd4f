r"""Hinton knowledge distillation (Hinton et al. 2015) on pre-training data: soft targets at temperature T.

Objective: w_soft * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + w_hard * CE. Student: 6 layers copied
from the teacher (DistilBERT's [0, 2, 4, 7, 9, 11]).

    jaxdistill distill --config hinton:base6 --workdir runs/hinton6
    jaxdistill distill --config hinton:cpu --workdir /tmp/hinton-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config hinton:smoke --workdir /tmp/hinton-smoke   # CPU, ~1 min

(From a checkout, `--config configs/hinton.py:smoke` names the same file.)

Task-specific (the paper's form: T^2 soft KL + hard CE on a fine-tuned teacher's classifier logits; the
teacher and the task file come first, see `common.task_smoke_training` / `common.pang_lee_training`):

    jaxdistill distill --config hinton:task_smoke --workdir runs/task-smoke/hinton   # CPU, seconds
    jaxdistill distill --config hinton:pang_lee --workdir runs/pang-lee/hinton       # CPU, minutes (estimated)

task_smoke / pang_lee: student = teacher layers [0, 3, 5] (assumed), T = 4, 0.9 soft / 0.1 hard (assumed).

- From the paper: the loss and the T^2 scaling; the hard term with a "considerably lower weight".
- Assumed: T = 4, w_soft = 0.9, w_hard = 0.1 (the paper tunes them per task); the task-agnostic adaptation
  (the soft term reads the MLM predictions over real tokens and the hard term is the MLM loss, see
  `common.prediction_targets`; `recipe(data="task")` is the paper's form on classifier logits); the
  student; seq 128, batch 256, 100k steps, lr 1e-4, warm-up 4k.
- Hardware: assumed one 8-GPU node (hours); not measured. Expected results: none published for BERT in this
  form; it is the baseline the other recipes add terms to.
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline) -> a 3-layer student [0, 3, 5] (assumed); `demo` is an
  alias of `cpu` (the demo of `jaxdistill demo` is HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config

PRESETS = ("base6",) + common.CPU_PRESETS + common.TASK_PRESETS
DEFAULT_PRESET = "base6"


def recipe(data: str = "task"):
    """Hinton KD: 0.9 * T^2 KL at T = 4 + 0.1 * hard CE (all three assumed). `data`: "task" (classifier
    logits + hard labels, the paper) or "pretraining" (MLM predictions + MLM CE, assumed adaptation)."""
    r = objectives.base_recipe_config("hinton")
    r.temperature = 4.0
    r.weights.soft = 0.9
    common.prediction_targets(r, data, hard_weight=0.1)
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    c.recipe = recipe(data="pretraining")
    if preset in common.TASK_PRESETS:  # the paper's setting: a fine-tuned teacher on its task
        c.recipe = recipe(data="task")
        common.task_preset(c, preset)
        common.layer_student(c, (0, 3, 5))
    elif preset == "base6":
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=100_000, batch_size=256, lr=1e-4, warmup_steps=4000)
        common.layer_student(c, (0, 2, 4, 7, 9, 11))
    else:
        common.cpu_preset(c, preset)
        common.layer_student(c, (0, 3, 5))
    return c
