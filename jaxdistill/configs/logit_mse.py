r"""Logit matching (Ba & Caruana 2014; Tang et al. 2019, BERT -> BiLSTM) on pre-training data.

Objective: alpha * CE + (1 - alpha) * mean squared error between student and teacher logits (no temperature).
Student: 6 layers copied from the teacher (DistilBERT's [0, 2, 4, 7, 9, 11]).

    jaxdistill distill --config logit_mse:base6 --workdir runs/logit-mse6
    jaxdistill distill --config logit_mse:cpu --workdir /tmp/logit-mse-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config logit_mse:smoke --workdir /tmp/logit-mse-smoke   # CPU, ~1 min

(From a checkout, `--config configs/logit_mse.py:smoke` names the same file.)

Distilled BiLSTM (Tang et al. 2019), the papers' setting: a fine-tuned teacher, a BiLSTM student
(`models.bilstm`; embeddings projected from the teacher's word embeddings), 0.5 * logit MSE + 0.5 * hard CE on
task data, with Tang et al.'s augmentation in `bilstm_aug_pang_lee` (`data.augment`: p_mask 0.1, p_ng 0.25,
n-grams of 1..5 words, 20 copies: Tang et al.'s, checked against the official code, see `data.augment`;
POS-guided replacement not implemented):

    jaxdistill distill --config logit_mse:bilstm_task_smoke --workdir runs/task-smoke/bilstm   # CPU, seconds
    jaxdistill distill --config logit_mse:bilstm_pang_lee --workdir runs/pang-lee/bilstm
    jaxdistill distill --config logit_mse:bilstm_aug_pang_lee --workdir runs/pang-lee/bilstm-aug

Assumed there: the BiLSTM widths (`task_distill.default_bilstm_config`), Adam at lr 1e-3 instead of the
paper's Adadelta, the epochs and batch of `common.pang_lee_training`. Hard labels only: add
`--config.recipe.weights.logit_mse=0 --config.recipe.weights.hard=1`.

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

PRESETS = ("base6",) + common.CPU_PRESETS + ("bilstm_task_smoke", "bilstm_pang_lee", "bilstm_aug_pang_lee")
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
    if preset.startswith("bilstm_"):  # Distilled BiLSTM (Tang et al.): the papers' own setting
        c.recipe = recipe(data="task")
        common.task_preset(c, preset[len("bilstm_"):].replace("aug_", ""), augment="_aug_" in preset)
        c.student.kind = "bilstm"
        c.train.lr = 1e-3  # assumed: Adam at 1e-3 (the paper trains with Adadelta, lr 1.0)
    elif preset == "base6":
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=100_000, batch_size=256, lr=1e-4, warmup_steps=4000)
        common.layer_student(c, (0, 2, 4, 7, 9, 11))
    else:
        common.cpu_preset(c, preset)
        common.layer_student(c, (0, 3, 5))
    return c
