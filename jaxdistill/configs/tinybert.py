r"""TinyBERT general distillation (Jiao et al. 2020): attention-score MSE + hidden MSE on a uniform layer map.

The task-agnostic stage: the student (randomly initialised) matches the teacher's pre-softmax attention scores
on every mapped layer and its hidden states (embeddings included) through one shared learned projection
(official code). The task stage is two runs on (augmented) task data, as the official code
runs it: `recipe(stage="task_intermediate")` (the same attention + hidden terms), then, from that run's
student, `recipe(stage="task_prediction")` (soft cross-entropy at T = 1; `soft_ce_reduction="official"` is the
code's mean over batch x classes). The task presets are in `configs/task_distill.py`.

    jaxdistill distill --config tinybert:general4 --workdir runs/tinybert4
    jaxdistill distill --config tinybert:cpu --workdir /tmp/tinybert-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config tinybert:smoke --workdir /tmp/tinybert-smoke   # CPU, ~1 min

(From a checkout, `--config configs/tinybert.py:smoke` names the same file.)

The task stage, two runs as in the official code (the second starts from the first's export; the teacher and
task file first, see `common.task_smoke_training` / `common.pang_lee_training`); first student = teacher
layers [0, 3, 5] (assumed: no General TinyBERT offline):

    jaxdistill distill --config tinybert:task_smoke_intermediate --workdir runs/task-smoke/tinybert-intermediate
    jaxdistill distill --config tinybert:task_smoke_prediction --workdir runs/task-smoke/tinybert-prediction
    jaxdistill distill --config tinybert:pang_lee_intermediate --workdir runs/pang-lee/tinybert-intermediate
    jaxdistill distill --config tinybert:pang_lee_prediction --workdir runs/pang-lee/tinybert-prediction

| preset | student | params |
|---|---|---|
| general4 | 4 layers, hidden 312, 12 heads (head dim 26), FFN 1200 | 14.5M |
| general6 | 6 layers, hidden 768, 12 heads, FFN 3072 | 67M |

- From the paper / official code: teacher BERT-base (uncased), the two student shapes, the uniform layer map,
  English Wikipedia, sequence length 128, batch 256, lr 5e-5, 3 epochs.
- Assumed: 3 epochs expressed as 300k steps (depends on the corpus size after packing), warm-up 10k steps,
  weight decay 0.01, the projection shared by all layers and trained with the student (official).
- Hardware: not stated in the paper (assumed: one 8-GPU node, a few days for general4). Expected: after the
  task stage, TinyBERT-4 reaches ~96.8 % of BERT-base on GLUE (paper, with data augmentation); the general
  stage alone is a starting point, not a result.
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline), student 2 layers, hidden 96, 12 heads, FFN 384 (assumed);
  `demo` is an alias of `cpu` (the demo of `jaxdistill demo` is HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config
from jaxdistill.errors import ConfigError

PRESETS = ("general4", "general6") + common.CPU_PRESETS + tuple(
    f"{scale}_{phase}" for scale in common.TASK_PRESETS for phase in ("intermediate", "prediction"))
DEFAULT_PRESET = "general4"
STAGES = ("general", "task_intermediate", "task_prediction")
TASK_RUNS = {"task_smoke": common.TASK_SMOKE_DIR, "pang_lee": "runs/pang-lee"}  # where the task presets' runs go
STUDENTS = {
    "general4": dict(num_hidden_layers=4, hidden_size=312, num_attention_heads=12, intermediate_size=1200),
    "general6": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def recipe(stage: str = "general", soft_ce_reduction: str = "mean"):
    """One TinyBERT run. general (task-agnostic) and task_intermediate (the task stage's first run, on task
    batches): attention-score MSE (layers 1..M, uniform map) + hidden MSE (embeddings and layers, uniform map)
    through one shared projection `fit_dense` (official). task_prediction (the task stage's second run, from
    the first run's student): the prediction term at T = 1 on classifier logits, alone (official: the two task
    runs are separate; the intermediate terms are not trained with it). `soft_ce_reduction`: "mean" (the
    paper's soft cross-entropy, mean over the batch of -sum_c p_t log p_s, run as the KL: it differs by the
    teacher entropy, a constant, so the gradient is the same and a copy of the teacher scores 0) or "official"
    (the code's soft cross-entropy, mean over batch x classes: 1/C of the paper's, as `weights.soft_ce`)."""
    if stage == "task":
        raise ConfigError("tinybert stage 'task' is two runs, as in the official code: stage='task_intermediate' "
                          "(attention + hidden) then stage='task_prediction' (soft cross-entropy) from its student")
    if stage not in STAGES:
        raise ConfigError(f"tinybert stage {stage!r} is not one of {STAGES}")
    r = objectives.base_recipe_config("tinybert")
    r.stage = stage
    if stage == "task_prediction":
        r.logits = "logits"
        r.temperature = 1.0
        if soft_ce_reduction == "official":
            r.weights.soft_ce = 1.0
            r.soft_ce_reduction = "official"
        else:
            r.weights.soft = 1.0
        return r
    r.matches = [
        objectives.match("att", "attention_scores", "attention_score_mse", layers="uniform_no_embeddings"),
        objectives.match("hid", "hidden", "hidden_mse", layers="uniform", projection="fit_dense")]
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    c.recipe = recipe(stage="general")
    if preset.startswith(common.TASK_PRESETS):  # the task stage: two runs on task data (official code)
        scale, phase = preset.rsplit("_", 1)
        c.recipe = recipe(stage=f"task_{phase}")
        common.task_preset(c, scale)
        if phase == "intermediate":
            common.layer_student(c, (0, 3, 5))
        else:  # from the intermediate run's exported student
            c.student.init = "pretrained"
            c.student.path = f"{TASK_RUNS[scale]}/tinybert-intermediate/export"
    elif preset in STUDENTS:
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=300_000, batch_size=256, lr=5e-5, warmup_steps=10_000)
        common.random_student(c, **STUDENTS[preset])
    else:
        common.cpu_preset(c, preset)
        common.random_student(c, **common.CPU_RANDOM_STUDENT)
    return c
