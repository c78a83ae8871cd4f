r"""MiniLM (Wang et al. 2020): deep self-attention distillation of the last layer only.

Objective: KL between the teacher's and the student's last-layer attention distributions + KL between their
value relations softmax(V V^T / sqrt(d_h)), per head (equal head counts needed; widths may differ). No MLM,
no layer map: the student's depth and width are free. The student is randomly initialised.

    jaxdistill distill --config minilm:l12h384 --workdir runs/minilm-l12h384
    jaxdistill distill --config minilm:cpu --workdir /tmp/minilm-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config minilm:smoke --workdir /tmp/minilm-smoke   # CPU, ~1 min

(From a checkout, `--config configs/minilm.py:smoke` names the same file.)

| preset | student | params |
|---|---|---|
| l12h384 | 12 layers, hidden 384, 12 heads, FFN 1536 | 33M |
| l6h768 | 6 layers, hidden 768, 12 heads, FFN 3072 | 66M |

- From the paper: teacher BERT-base (uncased), the two student shapes, last-layer attention + value-relation
  transfer, Wikipedia + BookCorpus.
- Assumed (the paper's optimisation details were not consulted here): sequence length 128 (the paper uses
  longer sequences), batch 1024, 400k steps, lr 5e-4 with 4k warm-up steps, weight decay 0.01.
- Hardware: assumed one 8-GPU node or a TPU v4-32 slice; runtime not measured. Expected (paper): the L6-H768
  student keeps above 99 % of BERT-base's accuracy on SQuAD 2.0 and several GLUE tasks. Not reproduced here.
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline), student 2 layers, hidden 96, 12 heads (assumed); `demo`
  is an alias of `cpu` (the demo of `jaxdistill demo` is HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config

PRESETS = ("l12h384", "l6h768") + common.CPU_PRESETS
DEFAULT_PRESET = "l12h384"
STUDENTS = {
    "l12h384": dict(num_hidden_layers=12, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "l6h768": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def recipe():
    """Attention KL + value-relation KL, last teacher layer -> last student layer, weights 1, no MLM."""
    r = objectives.base_recipe_config("minilm")
    r.matches = [objectives.match("at", "attention_probs", "attention_kl", layers="last_only"),
                 objectives.match("vr", "values", "value_relation_kl", layers="last_only")]
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    c.recipe = recipe()
    if preset in STUDENTS:
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=400_000, batch_size=1024, lr=5e-4, warmup_steps=4000)
        common.random_student(c, **STUDENTS[preset])
    else:
        common.cpu_preset(c, preset)
        common.random_student(c, **common.CPU_RANDOM_STUDENT)
    return c
