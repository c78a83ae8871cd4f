r"""DistilBERT (Sanh et al. 2019): a 6-layer student initialised from every other teacher layer.

Objective (official train.py defaults): 5.0 * soft KL at T=2 over all real tokens + 2.0 * MLM + 1.0 * cosine
between the last hidden states. Student: BERT-base layers [0, 2, 4, 7, 9, 11] (0-indexed), full width.

    jaxdistill distill --config distilbert:base --workdir runs/distilbert
    jaxdistill distill --config distilbert:cpu --workdir /tmp/distilbert-cpu       # CPU, ~10 min (estimated)
    jaxdistill distill --config distilbert:smoke --workdir /tmp/distilbert-smoke   # CPU, ~1 min

(From a checkout, `--config configs/distilbert.py:smoke` names the same file.)

- From the paper / official code: teacher bert-base-uncased, the layer list, the loss weights and T,
  batch ~4k sequences, lr 5e-4, Adam eps 1e-6, no weight decay, grad-norm clip 5.0, warm-up 5 % of steps,
  MLM 15 % with 80/10/10 and DistilBERT's frequency-smoothed masking (0.7), Wikipedia + BookCorpus.
- Assumed: sequence length 128 (the official code packs up to 512), 28k steps (the HomoDistil budget, for
  comparable runs; the paper trains ~3 epochs), bf16 activations.
- Hardware: the paper used 8 V100 (16 GB) for ~90 hours; one 8-GPU node with `train.accum_steps=8`, or a
  TPU v4-32 slice (launch/tpu_pod.sh). Expected: ~97 % of BERT-base's GLUE dev score (77.0 macro in the
  paper's Table 1), 40 % fewer parameters, 60 % faster. Not reproduced here.
- cpu / smoke: teacher all-MiniLM-L6-v2 (offline, 6 layers) -> a 3-layer student [0, 3, 5] on the built-in
  corpus (assumed, for speed); `demo` is an alias of `cpu` (the demo of `jaxdistill demo` is HomoDistil's).
"""
from jaxdistill import objectives
from jaxdistill.configs import common
from jaxdistill.defaults import base_config

PRESETS = ("base",) + common.CPU_PRESETS
DEFAULT_PRESET = "base"
TEACHER_LAYERS = (0, 2, 4, 7, 9, 11)   # the official student initialisation from BERT-base (0-indexed)


def recipe():
    """5.0 * T^2 KL (T = 2, all real tokens) + 2.0 * MLM + 1.0 * cosine of the last hidden states (official)."""
    r = objectives.base_recipe_config("distilbert")
    r.temperature = 2.0
    r.prediction_positions = "valid"
    r.weights.soft = 5.0
    r.weights.mlm = 2.0
    r.matches = [objectives.match("cos", "hidden", "cosine_embedding", weight=1.0, layers="last_only")]
    return r


def get_config(preset: str = DEFAULT_PRESET):
    preset = common.check_preset(preset, PRESETS)
    c = base_config()
    c.recipe = recipe()
    if preset == "base":
        c.teacher.path = common.BERT_BASE
        common.paper_corpus(c)
        common.paper_training(c, lr=5e-4, warmup_steps=1400, accum_steps=8)
        c.train.update(dict(weight_decay=0.0, grad_clip=5.0))
        common.layer_student(c, TEACHER_LAYERS)
    else:
        common.cpu_preset(c, preset)
        common.layer_student(c, (0, 3, 5))
    c.data.frequency_smoothing = 0.7
    return c
