r"""MiniLMv2 (Wang et al. 2021): multi-head self-attention relation distillation (Q-Q, K-K, V-V).

Objective: for X in {queries, keys, values}, the heads are concatenated and re-split into R relation heads,
and the student's relations softmax(X X^T / sqrt(d/R)) match the teacher's (KL). R is shared, so teacher and
student may differ in head count and width. Teacher layer: the last (base-size teachers); student: the last.

    jaxdistill distill --config minilmv2:l6h384 --workdir runs/minilmv2-l6h384
    jaxdistill distill --config minilmv2:cpu --workdir /tmp/minilmv2-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config minilmv2:smoke --workdir /tmp/minilmv2-smoke   # CPU, ~1 min

(From a checkout, `--config configs/minilmv2.py:smoke` names the same file.)

| preset | student | params |
|---|---|---|
| l6h384 | 6 layers, hidden 384, 12 heads, FFN 1536 | 22M |
| l6h768 | 6 layers, hidden 768, 12 heads, FFN 3072 | 66M |
| l12h384 | 12 layers, hidden 384, 12 heads, FFN 1536 | 33M |

- From the paper: R = 48 relation heads for base-size teachers (64 for large), the last teacher layer for
  base teachers, the student shapes, a randomly initialised student, Wikipedia + BookCorpus.
- Assumed: sequence length 128, batch 1024, 400k steps, lr 6e-4 with 4k warm-up steps, weight decay 0.01
  (the paper's optimisation details were not consulted here).
- Hardware: assumed one 8-GPU node or a TPU v4-32 slice; runtime not measured. Expected (paper): MiniLMv2
  students outperform MiniLM students of the same size on GLUE and SQuAD 2.0. Not reproduced here.
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline, hidden 384), student 2 layers, hidden 96 (R = 48 divides
  both widths), 12 heads (assumed); `demo` is an alias of `cpu` (the demo of `jaxdistill demo` is
  HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config

PRESETS = ("l6h384", "l6h768", "l12h384") + common.CPU_PRESETS
DEFAULT_PRESET = "l6h384"
STUDENTS = {
    "l6h384": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "l6h768": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "l12h384": dict(num_hidden_layers=12, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
}


def recipe(relation_heads: int = 48, teacher_layer: int = -1):
    """Q-Q + K-K + V-V relation KL (weights 1) with `relation_heads` R (48 for base-size teachers, 64 for large
    ones), teacher layer `teacher_layer` (-1 = last; an upper-middle layer for large teachers) -> the last
    student layer."""
    r = objectives.base_recipe_config("minilmv2")
    r.relation_heads = int(relation_heads)
    r.teacher_layer = int(teacher_layer)
    r.matches = [objectives.match(f"{x[0]}{x[0]}", x, "minilmv2_relation_kl") for x in ("queries", "keys", "values")]
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    c.recipe = recipe(relation_heads=48)
    if preset in STUDENTS:
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=400_000, batch_size=1024, lr=6e-4, warmup_steps=4000)
        common.random_student(c, **STUDENTS[preset])
    else:
        common.cpu_preset(c, preset)
        common.random_student(c, **common.CPU_RANDOM_STUDENT)
    return c
