r"""Fine-tune and evaluate a (distilled) BERT on a classification task: `jaxdistill finetune` / `evaluate`.

    jaxdistill finetune --config finetune:glue_sst2 \
        --config.model=runs/homobert-tiny/student --workdir runs/homobert-tiny/sst2
    jaxdistill evaluate --model runs/homobert-tiny/sst2/model --config finetune:glue_sst2
    jaxdistill finetune --config finetune:pang_lee \
        --config.model=jaxdistill-demo/student --workdir runs/pang-lee      # offline, CPU, a few minutes

(From a checkout, `--config configs/finetune.py:pang_lee` names the same file.)

Presets:
- `pang_lee`: the demo's fine-tuning stage (`jaxdistill/configs/demo.py`, `finetune_config`): the 4,000
  Pang & Lee movie-review sentences that `jaxdistill demo` writes to `jaxdistill-demo/data/sentences.csv`
  (columns sentence,label; 20 % held out for validation), max length 64, batch 32, 2 epochs, lr 1e-4, on the
  demo's exported student `jaxdistill-demo/student` unless `--config.model` says otherwise. Offline; CPU
  minutes for a small student.
- `glue_<task>` for cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte: GLUE through Hugging Face datasets (needs
  network on first use), max length 128, batch 32, lr 5e-5 (2e-5 for the large tasks qqp/mnli/qnli),
  3 epochs (10 for the small cola/mrpc/rte/stsb), validation on the dev split (mnli: matched). These are
  common BERT fine-tuning settings, assumed rather than taken from one paper; the HomoDistil paper tunes
  lr per task. Small or compacted students usually want a larger lr (1e-4 .. 3e-4): override it.
  Hardware: one GPU or TPU host; minutes (rte, mrpc) to hours (mnli, qqp) for a BERT-base-size model.
- `pang_lee_teacher`: the teacher of the task distillation presets: all-MiniLM-L6-v2 fine-tuned on the demo's
  sentences (same split), 3 epochs at lr 5e-5 (assumed), saved to `<workdir>/model`:
  `jaxdistill finetune --config finetune:pang_lee_teacher --workdir runs/pang-lee-teacher`.
- `smoke`: a few steps for tests; give `--config.model` and `--config.task.train_file` (a CSV with columns
  sentence,label).

`config.model` is the model directory to fine-tune (a `jaxdistill export` / `distill` export, any Hugging
Face BERT directory, or a hub id when online). See `jaxdistill.finetune.default_finetune_config` for every
field. Expected results: where a paper reports them, they are in the distillation configs' docstrings.
"""
from jaxdistill.configs import common, demo

PRESETS = ("pang_lee", "glue_cola", "glue_sst2", "glue_mrpc", "glue_qqp", "glue_stsb", "glue_mnli", "glue_qnli",
           "glue_rte", "smoke", "pang_lee_teacher")
DEFAULT_PRESET = "pang_lee"
SMALL_GLUE = ("cola", "mrpc", "rte", "stsb")
LARGE_GLUE = ("qqp", "mnli", "qnli")


def get_config(preset: str = DEFAULT_PRESET):
    from jaxdistill.finetune import default_finetune_config

    preset = common.check_preset(preset, PRESETS)
    c = default_finetune_config()
    if preset.startswith("glue_"):
        task = preset[len("glue_"):]
        c.task.name = f"glue/{task}"
        c.task.source = "hf"
        c.max_length = 128
        c.batch_size = 32
        c.eval_batch_size = 128
        c.epochs = 10.0 if task in SMALL_GLUE else 3.0
        c.lr = 2e-5 if task in LARGE_GLUE else 5e-5
        c.warmup_ratio = 0.1
        c.dtype = "float32"
    elif preset == "pang_lee_teacher":  # the task distillation presets' teacher (configs/common.py)
        c = demo.finetune_config(common.offline_teacher_path(), demo.sentences_csv(), epochs=3.0, lr=5e-5)
        c.save_model = True
    elif preset == "pang_lee":  # the demo's fine-tuning stage, defined once in configs/demo.py
        c = demo.finetune_config(demo.student_dir(), demo.sentences_csv())
    else:  # smoke
        c.task.name = "csv"
        c.task.text_fields = ("sentence",)
        c.task.label_field = "label"
        c.task.validation_fraction = 0.25
        c.max_length = 32
        c.batch_size = 8
        c.eval_batch_size = 16
        c.steps = 4
        c.lr = 1e-3
        c.log_every = 2
        c.dropout = False
        c.progress = False
        c.tensorboard = False
        c.save_model = True
    return c
