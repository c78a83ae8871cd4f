"""A distilled student out of the engine: compacted (HomoDistil) and written as a Hugging Face directory.

`export_student(...)` is the last act of a finished run; `export_from_workdir(workdir, out_dir)` does the
same from a run's saved checkpoint (its newest, or `step`). Both write a standard BERT directory (see
`models.hf.export`) with a model card, or jaxdistill's own format when `own_format=True`. From the workdir of
a task distillation (`data.kind="task"`, `jaxdistill.task_distill`), a BERT student is written as a
`BertForSequenceClassification` directory with the teacher's label names, and a BiLSTM student in its own
format (`models.bilstm.save`), which `jaxdistill evaluate` loads: what the run itself exports.
`card_metadata(...)` gathers what the model card says about the run.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Dict, Mapping, Optional

import jax
import numpy as np

from jaxdistill import checkpoint as ckpt_lib
from jaxdistill import label_names, pruning, storage
from jaxdistill.models import BertConfig, bilstm, hf

HELD_OUT_KL = "eval/kl"  # the metric the model card reports as the held-out teacher-student KL


def command_line(argv=None) -> str:
    """The command line of this process as a user typed it (`jaxdistill ...` for the CLI)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = os.path.basename(argv[0])
    if program in ("__main__.py", "jaxdistill") or program.startswith("jaxdistill"):
        program = "jaxdistill"
    return shlex.join([program] + argv[1:])


def card_metadata(config: Mapping[str, Any], step: Optional[int], metrics: Optional[Mapping[str, Any]] = None,
                  command: Optional[str] = None) -> Dict[str, Any]:
    """What the model card says about a distillation run: teacher, recipe, steps, held-out KL and command.

    config: the run's config (a ConfigDict or its dict). metrics: the last logged scalars (the held-out KL
    is `eval/kl`, present when the run evaluated). command: default this process's command line.
    """
    metrics = dict(metrics or {})
    teacher, recipe = config.get("teacher") or {}, config.get("recipe") or {}
    kl = metrics.get(HELD_OUT_KL)
    return {"teacher": teacher.get("path"), "recipe": recipe.get("name"), "steps": step,
            "held_out_kl": None if kl is None else float(kl),
            "command": command if command is not None else command_line()}


def export_student(student_config: BertConfig, student_params, masks: Optional[Mapping[str, Any]], out_dir: str,
                   tokenizer_from: Optional[str], overwrite: bool = False, *, own_format: bool = False,
                   metadata: Optional[Mapping[str, Any]] = None) -> dict:
    """Compacts a masked student (when `masks` is non-empty) and exports it with `hf.export`.

    student_params / masks: host NumPy trees. metadata: for the model card (`card_metadata`); the kept
    widths and the teacher's parameter count are added here. Returns `hf.export`'s result ("format",
    "params" (exported parameter count), "padding_params", ...) plus, for a pruned student, "widths"
    (`pruning.remaining_widths`) and "param_counts" (`pruning.count_params`).
    """
    out_cfg = student_config.replace(dtype="float32", remat=False)
    result: Dict[str, Any] = {}
    card = dict(metadata or {})
    if masks:
        result["widths"] = pruning.remaining_widths(masks)
        result["param_counts"] = pruning.count_params(out_cfg, masks)
        card.setdefault("widths", result["widths"])
        card.setdefault("teacher_params", result["param_counts"]["full_total"])
        out_cfg, student_params = pruning.compact(out_cfg, student_params, masks)
    result.update(hf.export(out_cfg, student_params, out_dir, tokenizer_from=tokenizer_from, overwrite=overwrite,
                            own_format=own_format, metadata=card))
    return result


def config_from_params(base: BertConfig, params) -> BertConfig:
    """The BertConfig whose shapes are those of `params`; other fields (eps, activation, ...) from `base`."""
    d_vocab = np.shape(params["embeddings"]["word_embeddings"]["embedding"])
    q = np.shape(params["layer_0"]["attention"]["query"]["kernel"])  # [d, H, d_h]
    n = sum(1 for k in params if k.startswith("layer_"))
    head_dim = q[2] if q[1] * q[2] != d_vocab[1] else None
    return base.replace(vocab_size=d_vocab[0], hidden_size=d_vocab[1], num_hidden_layers=n,
                        num_attention_heads=q[1], head_dim=head_dim,
                        intermediate_size=np.shape(params["layer_0"]["intermediate"]["kernel"])[1],
                        with_mlm_head="mlm_bias" in params, with_pooler="pooler" in params,
                        num_labels=int(np.shape(params["classifier"]["kernel"])[1]) if "classifier" in params else 0,
                        dtype="float32", remat=False)


def _run_metrics(workdir: str) -> Dict[str, Any]:
    """The last logged scalars of a run (summary.json, written by `jaxdistill distill`), or {}."""
    path = storage.join(workdir, "summary.json")
    if not storage.exists(path):
        return {}
    return dict(storage.read_json(path).get("metrics") or {})


def export_from_workdir(workdir: str, out_dir: str, step: Optional[int] = None, overwrite: bool = False, *,
                        own_format: bool = False) -> dict:
    """Exports the student of a distillation workdir (its newest checkpoint, or `step`) to `out_dir`.

    The masked student is compacted first (HomoDistil), then written as a standard BERT directory (or in
    jaxdistill's own format with `own_format`) with the teacher's tokenizer files and a model card. A task
    run's student (`data.kind="task"`) is written as the run writes it: a BERT as a classifier directory
    with the teacher's label names, a BiLSTM in its own format (`own_format` does not apply).
    Returns `export_student`'s (or `bilstm.save`'s) result plus "step" and "out_dir".
    """
    cfg_path = storage.join(workdir, "config.json")
    if not storage.exists(cfg_path):
        raise FileNotFoundError(f"{workdir!r} is not a jaxdistill workdir (no config.json); pass the --workdir "
                                "of a `jaxdistill distill` run")
    hf.check_out_dir(out_dir, overwrite)
    storage.check_writable(out_dir, "the export directory")  # before reading and compacting the checkpoint
    config = storage.read_json(cfg_path)
    step, state = ckpt_lib.read_state(storage.join(storage.absolute(workdir), "checkpoints"), step)
    student = jax.tree.map(np.asarray, state["params"]["student"])
    teacher_path = config["teacher"]["path"]
    tokenizer_dir = config["teacher"].get("tokenizer") or teacher_path
    metrics = _run_metrics(workdir) if step == int(config["train"]["steps"]) else {}
    metadata = card_metadata(config, step, metrics)
    task_run = (config.get("data") or {}).get("kind") == "task"
    labels = label_names.teacher_label_names(teacher_path) if task_run else ()
    student_section = config.get("student") or {}
    if student_section.get("kind", "bert") == "bilstm":
        embeddings = (student_section.get("bilstm") or {}).get("embeddings", "teacher")
        result = bilstm.save(bilstm.config_from_params(student, embeddings), student, out_dir,
                             tokenizer_dir, labels, metadata)
    else:
        base = hf.config_of(teacher_path)  # non-shape fields (activation, eps, positions); a hub id from the cache
        masks = jax.tree.map(np.asarray, state.get("masks") or {})
        result = export_student(config_from_params(base, student), student, masks, out_dir, tokenizer_dir,
                                overwrite=overwrite, own_format=own_format, metadata=metadata)
        if task_run:
            label_names.write_label_names(out_dir, labels)
    result.update(step=step, out_dir=out_dir)
    return result
