"""The setup of `jaxdistill demo`, defined once (not an experiment itself: no get_config).

The demo (`jaxdistill/demo.py` runs it) distils the offline all-MiniLM-L6-v2 with HomoDistil to half its width
on the Pang & Lee movie reviews, then fine-tunes teacher and student on the Pang & Lee sentences. Everything
else that says "demo" uses this module: `homodistil:demo` is its distillation stage (`apply_distill_settings`),
`finetune:pang_lee` its fine-tuning stage (`finetune_config`). Sizes and step counts are chosen to finish
in about 10 minutes on 2 CPU cores (assumed, not from a paper); `quick=True` gives a ~3-minute pipeline check.

Folder layout of a demo run (default `./jaxdistill-demo`): `data/reviews.txt` (the distillation corpus),
`data/sentences.csv` (the task), `teacher-mlm/` (the teacher with a fitted MLM head), `distill/` and
`student/` (the HomoDistil run and its export), `finetune-teacher/`, `finetune-student/`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from jaxdistill import storage

WORKDIR = "jaxdistill-demo"

# HomoDistil's targets in the demo: half the teacher's width; whole heads (6 of 12, head dim 32) so that the
# compact student is a standard BertConfig (assumed, for speed).
HALF_WIDTH = dict(attn_structure="heads", hidden=192, ffn=768, heads=6)


def settings(quick: bool = False) -> Dict[str, Any]:
    """Step counts and sizes of the demo's stages: the MLM head fit, the distillation, the fine-tuning."""
    return dict(
        mlm_head_steps=40 if quick else 80, mlm_head_batch=16 if quick else 32, mlm_head_lr=5e-3,
        distill_steps=24 if quick else 120, distill_batch=8, seq_len=128,
        finetune_epochs=1.0 if quick else 2.0, finetune_batch=32, finetune_max_length=64,
        finetune_steps=30 if quick else None,
    )


def student_dir(workdir: str = WORKDIR) -> str:
    """Where the demo exports the distilled student."""
    return storage.join(workdir, "student")


def sentences_csv(workdir: str = WORKDIR) -> str:
    """The demo's downstream task file (columns sentence,label), written by its data stage."""
    return storage.join(workdir, "data", "sentences.csv")


def apply_distill_settings(c, teacher: str, corpus: Optional[str] = None, quick: bool = False,
                           workdir: Optional[str] = None):
    """Makes the HomoDistil config `c` (`homodistil.base_experiment()`; `homodistil.demo_config` composes the
    two) the demo's: `teacher` pruned to `HALF_WIDTH` while distilled on `corpus` (a text file; the built-in
    python_docs corpus when None). With `workdir`, the data cache and the export go under it (`cache/`,
    `student/`). Returns `c`."""
    s = settings(quick)
    c.teacher.path = teacher
    if corpus:
        c.data.corpus.update(dict(source="text", path=corpus))
    else:
        c.data.corpus.update(dict(source="builtin", name="python_docs"))
    c.data.seq_len = s["seq_len"]
    c.data.holdout_sequences = 32
    steps = s["distill_steps"]
    c.pruning.update(dict(HALF_WIDTH, warmup_steps=max(steps // 10, 1), final_steps=max(steps // 5, 1), every=4,
                          window=4))
    c.train.update(dict(steps=steps, batch_size=s["distill_batch"], lr=2e-4, warmup_steps=max(steps // 10, 1),
                        decay="linear", dropout=False, log_every=max(steps // 16, 1),
                        eval_every=max(steps // 8, 1), eval_batches=2, checkpoint_every=max(steps // 2, 1)))
    if workdir is not None:
        c.data.cache_dir = storage.join(workdir, "cache")
        c.export.dir = student_dir(workdir)
    return c


def finetune_config(model: str, task_csv: str, seed: int = 0, quick: bool = False, **overrides):
    """The demo's fine-tuning recipe on the sentences CSV (20 % held out), the same for teacher and student;
    `overrides` replace top-level fields (max_length, batch_size, epochs, steps, lr, progress, ...; None
    keeps the demo's value)."""
    from jaxdistill.finetune import default_finetune_config
    s = settings(quick)
    c = default_finetune_config()
    c.model = model
    c.task.name = "csv"
    c.task.train_file = task_csv
    c.task.text_fields = ("sentence",)
    c.task.label_field = "label"
    c.task.validation_fraction = 0.2
    c.max_length = s["finetune_max_length"]
    c.batch_size = s["finetune_batch"]
    c.epochs = s["finetune_epochs"]
    if s["finetune_steps"]:
        c.steps = s["finetune_steps"]
    c.lr = 1e-4
    c.seed = seed
    c.update({k: v for k, v in overrides.items() if v is not None})
    return c
