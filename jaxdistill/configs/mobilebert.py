r"""MobileBERT (Sun et al. 2020) progressive knowledge transfer: layer-wise feature-map and attention transfer.

Objective per student layer: MSE between LayerNorm-standardised hidden states (feature-map transfer) + KL
between attention distributions, on a uniform layer map; stage k trains layer k (layers below at lr x 0.1,
layers above frozen) for `recipe.progressive.steps_per_layer` steps, then all layers train jointly.

    jaxdistill distill --config configs/mobilebert.py:transfer --workdir runs/mobilebert-transfer
    jaxdistill distill --config configs/mobilebert.py:smoke --workdir /tmp/mobilebert-smoke   # CPU, ~1 min

- From the paper: the two transfer losses, progressive transfer with lower layers slowed, the student being
  as deep as the teacher and as wide at the block boundaries (feature maps are compared without projection),
  a batch of 4096 and Wikipedia + BookCorpus.
- Assumed / adapted: MobileBERT's teacher is an inverted-bottleneck BERT-large and its student has
  bottleneck blocks; jaxdistill's BERT has neither, so here the teacher is BERT-base and the student a
  12-layer BERT with the teacher's hidden size (768) and a narrower FFN (1536), randomly initialised. 10k steps
  per layer (12 stages = 120k steps, then 20k joint), seq 128, lr 5e-4, warm-up 4k steps.
- Not covered: the second stage (pre-training distillation, 0.5 MLM + 0.5 KD, recipe stage "pretrain") starts
  from the transferred student, and the engine builds students only from the teacher ("copy", "layers") or
  at random; run it by exporting this stage and using the export as the teacher of a copy-initialised run
  only if you accept distilling from the transferred student instead of the original teacher.
- Hardware: the paper used 256 TPU v3 chips; here a TPU v4-32 slice or one 8-GPU node with
  `train.accum_steps`; runtime not measured. Expected (paper, full MobileBERT): GLUE 77.7, 4.3x smaller and
  5.5x faster than BERT-base. Not expected from this adaptation.
- demo / smoke: teacher all-MiniLM-L6-v2 (offline), student 3 layers at hidden 384 with FFN 384, 2 steps
  per layer in smoke (assumed).
"""
from jaxdistill.configs import common

from jaxdistill.defaults import base_config

PRESETS = ("transfer", "demo", "smoke")
DEFAULT_PRESET = "transfer"


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config("mobilebert")
    if preset == "transfer":
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=140_000, lr=5e-4, warmup_steps=4000, accum_steps=8)
        common.random_student(c, num_hidden_layers=12, intermediate_size=1536)
        c.recipe.progressive.steps_per_layer = 10_000
    else:
        common.offline(c, preset)
        common.random_student(c, num_hidden_layers=3, intermediate_size=384)
        c.recipe.progressive.steps_per_layer = 2 if preset == "smoke" else 60
        if preset == "smoke":
            c.train.update(dict(steps=8, checkpoint_every=8))
    return c
