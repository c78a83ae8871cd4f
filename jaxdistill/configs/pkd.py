r"""BERT-PKD (Sun et al. 2019): patient knowledge distillation from intermediate [CLS] states.

Objective: soft KL at T (weight 0.5) + the "hard" term (weight 0.5) + 100 * patience, where patience is the
sum over student layers 1..M-1 of the squared distance between L2-normalised [CLS] vectors of mapped student
and teacher layers. PKD-Skip maps 12 -> 6 to teacher layers {2, 4, 6, 8, 10}; PKD-Last to {7, ..., 11}.
Student: the teacher's first M layers (the paper's initialisation).

    jaxdistill distill --config pkd:skip6 --workdir runs/pkd-skip6
    jaxdistill distill --config pkd:cpu --workdir /tmp/pkd-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config pkd:smoke --workdir /tmp/pkd-smoke   # CPU, ~1 min

(From a checkout, `--config configs/pkd.py:smoke` names the same file.)

Task-specific (the paper's setting; the teacher and task file first, see `common.task_smoke_training` /
`common.pang_lee_training`); student = the teacher's first 3 layers (assumed for the 6-layer MiniLM teacher):

    jaxdistill distill --config pkd:task_smoke --workdir runs/task-smoke/pkd         # CPU, seconds
    jaxdistill distill --config pkd:pang_lee_skip --workdir runs/pang-lee/pkd-skip
    jaxdistill distill --config pkd:pang_lee_last --workdir runs/pang-lee/pkd-last

Presets: `skip6` / `last6` (6-layer student from BERT-base, PKD-Skip / PKD-Last), `skip3` (3 layers), `cpu`
(alias `demo`), `smoke`.

- From the paper: the patience loss and its normalisation, beta = 100 and T, alpha in the paper's grid
  (0.5 picked), the skip/last maps, the first-k-layer initialisation, the BERT-base teacher.
- Assumed (task-agnostic adaptation): BERT-PKD distils a fine-tuned teacher on task data
  (`recipe(data="task")`). Here it runs on pre-training data: the soft term reads the MLM predictions over
  real tokens and the hard-label term is the MLM loss (see `common.prediction_targets`). Also assumed: T = 10,
  seq 128, batch 256, 100k steps, lr 1e-4, warm-up 4k steps.
- Hardware: assumed one 8-GPU node (hours); not measured. Expected: none published for this task-agnostic
  form; the paper's task-specific PKD-Skip 6-layer students approach BERT-base on GLUE (Table 1 there).
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline, 6 layers) -> its first 3 layers (assumed); `demo` is an
  alias of `cpu` (the demo of `jaxdistill demo` is HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config

PRESETS = ("skip6", "last6", "skip3") + common.CPU_PRESETS + ("task_smoke", "pang_lee_skip", "pang_lee_last")
DEFAULT_PRESET = "skip6"
STUDENTS = {"skip6": (6, "skip"), "last6": (6, "last"), "skip3": (3, "skip")}


def recipe(data: str = "task", layers: str = "skip"):
    """0.5 * T^2 KL (T = 10) + 0.5 * hard CE + 100 * normalised patience on [CLS] (alpha, T, beta: assumed
    picks from the paper's grid). The patience term uses the official code's reduction, the mean over batch x
    layers x hidden, the one beta = 100 was tuned for (the paper-form sum is layers x hidden times larger). `layers`: "skip" (PKD-Skip) or "last" (PKD-Last). `data`: "task"
    (classifier logits + hard labels, the paper) or "pretraining" (MLM predictions + MLM CE, assumed)."""
    r = objectives.base_recipe_config("pkd")
    r.temperature = 10.0
    r.weights.soft = 0.5
    common.prediction_targets(r, data, hard_weight=0.5)
    r.matches = [objectives.match("patience", "cls", "pkd_patience", weight=100.0, layers=layers,
                                  loss_kwargs=dict(normalize=True, reduction="official"))]
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    if preset.startswith(common.TASK_PRESETS):  # the paper's setting: a fine-tuned teacher on its task
        c.recipe = recipe(data="task", layers="last" if preset.endswith("_last") else "skip")
        common.task_preset(c, preset)
        common.layer_student(c, range(3))
    elif preset in STUDENTS:
        depth, layer_map = STUDENTS[preset]
        c.recipe = recipe(data="pretraining", layers=layer_map)
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=100_000, batch_size=256, lr=1e-4, warmup_steps=4000)
        common.layer_student(c, range(depth))
    else:
        c.recipe = recipe(data="pretraining")
        common.cpu_preset(c, preset)
        common.layer_student(c, range(3))
    return c
