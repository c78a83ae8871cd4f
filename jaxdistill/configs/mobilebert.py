r"""MobileBERT (Sun et al. 2020) progressive knowledge transfer: layer-wise feature-map and attention transfer.

Objective per student layer: MSE between LayerNorm-standardised hidden states (feature-map transfer) + KL
between attention distributions, on a uniform layer map; stage k trains layer k (layers below at lr x 0.1,
layers above frozen) for `recipe.progressive.steps_per_layer` steps, then all layers train jointly
(`jaxdistill.progressive_transfer`).

    jaxdistill distill --config mobilebert:transfer --workdir runs/mobilebert-transfer
    jaxdistill distill --config mobilebert:cpu --workdir /tmp/mobilebert-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config mobilebert:smoke --workdir /tmp/mobilebert-smoke   # CPU, ~1 min

(From a checkout, `--config configs/mobilebert.py:smoke` names the same file.)

- From the paper: the two transfer losses, progressive transfer with lower layers slowed, the student being
  as deep as the teacher and as wide at the block boundaries (feature maps are compared without projection),
  a batch of 4096 and Wikipedia + BookCorpus.
- Assumed / adapted: MobileBERT's teacher is an inverted-bottleneck BERT-large and its student has
  bottleneck blocks; jaxdistill's BERT has neither, so here the teacher is BERT-base and the student a
  12-layer BERT with the teacher's hidden size (768) and a narrower FFN (1536), randomly initialised. 10k steps
  per layer (12 stages = 120k steps, then 20k joint), seq 128, lr 5e-4, warm-up 4k steps.
- Not covered: the second stage (pre-training distillation, 0.5 MLM + 0.5 KD, `recipe(stage="pretrain")`)
  starts from the transferred student, and the engine builds students only from the teacher ("copy",
  "layers") or at random; run it by exporting this stage and using the export as the teacher of a
  copy-initialised run only if you accept distilling from the transferred student instead of the original
  teacher.
- Hardware: the paper used 256 TPU v3 chips; here a TPU v4-32 slice or one 8-GPU node with
  `train.accum_steps`; runtime not measured. Expected (paper, full MobileBERT): GLUE 77.7, 4.3x smaller and
  5.5x faster than BERT-base. Not expected from this adaptation.
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline), student 3 layers at hidden 384 with FFN 384, 60 steps per
  layer in cpu, 2 in smoke (assumed); `demo` is an alias of `cpu` (the demo of `jaxdistill demo` is
  HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config
from jaxdistill.errors import ConfigError

PRESETS = ("transfer",) + common.CPU_PRESETS
DEFAULT_PRESET = "transfer"
STAGES = ("transfer", "pretrain")


def recipe(stage: str = "transfer", steps_per_layer: int = 10_000):
    """transfer: feature-map MSE + attention KL on every student layer (uniform map, no embeddings), progressive:
    `steps_per_layer` steps per stage (10k assumed), lower layers at lr x 0.1. pretrain: 0.5 * MLM + 0.5 * KL
    over the MLM targets (positions assumed)."""
    if stage not in STAGES:
        raise ConfigError(f"mobilebert stage {stage!r} is not 'transfer' or 'pretrain'")
    r = objectives.base_recipe_config("mobilebert")
    r.stage = stage
    if stage == "transfer":
        r.matches = [objectives.match("fmt", "hidden", "feature_map_mse", layers="uniform_no_embeddings"),
                     objectives.match("at", "attention_probs", "attention_kl", layers="uniform_no_embeddings")]
        r.progressive.update(dict(enabled=True, steps_per_layer=int(steps_per_layer)))
    else:
        r.prediction_positions = "mlm"
        r.weights.mlm = 0.5
        r.weights.soft = 0.5
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    if preset == "transfer":
        c.recipe = recipe(stage="transfer", steps_per_layer=10_000)
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, steps=140_000, lr=5e-4, warmup_steps=4000, accum_steps=8)
        common.random_student(c, num_hidden_layers=12, intermediate_size=1536)
    else:
        c.recipe = recipe(stage="transfer", steps_per_layer=2 if preset == "smoke" else 60)
        common.cpu_preset(c, preset)
        common.random_student(c, num_hidden_layers=3, intermediate_size=384)
        if preset == "smoke":
            c.train.update(dict(steps=8, checkpoint_every=8))
    return c
