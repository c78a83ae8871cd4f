r"""TinyBERT general distillation (Jiao et al. 2020): attention-score MSE + hidden MSE on a uniform layer map.

The task-agnostic stage: the student (randomly initialised) matches the teacher's pre-softmax attention scores
on every mapped layer and its hidden states (embeddings included) through one shared learned projection
(official code). The task stage (prediction soft CE at T=1 on augmented task data) is `recipe(stage="task")`
and needs task batches.

    jaxdistill distill --config tinybert:general4 --workdir runs/tinybert4
    jaxdistill distill --config tinybert:cpu --workdir /tmp/tinybert-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config tinybert:smoke --workdir /tmp/tinybert-smoke   # CPU, ~1 min

(From a checkout, `--config configs/tinybert.py:smoke` names the same file.)

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

PRESETS = ("general4", "general6") + common.CPU_PRESETS
DEFAULT_PRESET = "general4"
STAGES = ("general", "task")
STUDENTS = {
    "general4": dict(num_hidden_layers=4, hidden_size=312, num_attention_heads=12, intermediate_size=1200),
    "general6": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def recipe(stage: str = "general"):
    """general: attention-score MSE (layers 1..M, uniform map) + hidden MSE (embeddings and layers, uniform
    map) through one shared projection `fit_dense` (official). task: the same + the prediction term at T = 1
    on classifier logits, as the KL (the paper's soft CE differs by the teacher entropy, a constant: same
    gradient, 0 for a copy; set weights.soft_ce = 1, soft = 0 to log the paper's loss values)."""
    if stage not in STAGES:
        raise ConfigError(f"tinybert stage {stage!r} is not 'general' or 'task'")
    r = objectives.base_recipe_config("tinybert")
    r.stage = stage
    r.matches = [
        objectives.match("att", "attention_scores", "attention_score_mse", layers="uniform_no_embeddings"),
        objectives.match("hid", "hidden", "hidden_mse", layers="uniform", projection="fit_dense")]
    if stage == "task":
        r.logits = "logits"
        r.temperature = 1.0
        r.weights.soft = 1.0
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    c.recipe = recipe(stage="general")
    if preset in STUDENTS:
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=300_000, batch_size=256, lr=5e-5, warmup_steps=10_000)
        common.random_student(c, **STUDENTS[preset])
    else:
        common.cpu_preset(c, preset)
        common.random_student(c, num_hidden_layers=2, hidden_size=96, num_attention_heads=12,
                               intermediate_size=384)
    return c
