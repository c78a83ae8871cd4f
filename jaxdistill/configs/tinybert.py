r"""TinyBERT general distillation (Jiao et al. 2020): attention-score MSE + hidden MSE on a uniform layer map.

The task-agnostic stage: the student (randomly initialised) matches the teacher's pre-softmax attention scores
on every mapped layer and its hidden states (embeddings included) through one shared learned projection
(official code). The task stage (prediction soft CE at T=1 on augmented task data) is
`objectives.default_recipe_config("tinybert", stage="task")` and needs task batches.

    jaxdistill distill --config configs/tinybert.py:general4 --workdir runs/tinybert4
    jaxdistill distill --config configs/tinybert.py:smoke --workdir /tmp/tinybert-smoke   # CPU, ~1 min

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
- demo / smoke: teacher all-MiniLM-L6-v2 (offline), student 2 layers, hidden 96, 12 heads, FFN 384 (assumed).
"""
from jaxdistill.configs import common

from jaxdistill.defaults import base_config

PRESETS = ("general4", "general6", "demo", "smoke")
DEFAULT_PRESET = "general4"
STUDENTS = {
    "general4": dict(num_hidden_layers=4, hidden_size=312, num_attention_heads=12, intermediate_size=1200),
    "general6": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config("tinybert")
    if preset in STUDENTS:
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=300_000, batch_size=256, lr=5e-5, warmup_steps=10_000)
        common.random_student(c, **STUDENTS[preset])
    else:
        common.offline(c, preset)
        common.random_student(c, num_hidden_layers=2, hidden_size=96, num_attention_heads=12,
                               intermediate_size=384)
    return c
