r"""MiniLM (Wang et al. 2020): deep self-attention distillation of the last layer only.

Objective: KL between the teacher's and the student's last-layer attention distributions + KL between their
value relations softmax(V V^T / sqrt(d_h)), per head (equal head counts needed; widths may differ). No MLM,
no layer map: the student's depth and width are free. The student is randomly initialised.

    jaxdistill distill --config configs/minilm.py:l12h384 --workdir runs/minilm-l12h384
    jaxdistill distill --config configs/minilm.py:smoke --workdir /tmp/minilm-smoke   # CPU, ~1 min

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
- demo / smoke: teacher all-MiniLM-L6-v2 (offline), student 2 layers, hidden 96, 12 heads (assumed).
"""
from jaxdistill.configs import common

from jaxdistill.defaults import base_config

PRESETS = ("l12h384", "l6h768", "demo", "smoke")
DEFAULT_PRESET = "l12h384"
STUDENTS = {
    "l12h384": dict(num_hidden_layers=12, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "l6h768": dict(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config("minilm")
    if preset in STUDENTS:
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=400_000, batch_size=1024, lr=5e-4, warmup_steps=4000)
        common.random_student(c, **STUDENTS[preset])
    else:
        common.offline(c, preset)
        common.random_student(c, num_hidden_layers=2, hidden_size=96, num_attention_heads=12,
                               intermediate_size=384)
    return c
