"""Task-specific distillation (`data.kind = "task"`): the fine-tuned teacher, the student, their labels.

The teacher is a classifier fine-tuned on the task: a `jaxdistill finetune` model directory or a Hugging Face
`BertForSequenceClassification` directory (config.json with id2label). The student (`student.kind`):
- "bert" with `student.init` "copy", "layers" (teacher layers, classifier included) or "random" (as for
  pre-training data), or "pretrained": the BERT directory `student.path` (e.g. a HomoDistil export, or the
  first TinyBERT task run's export), given a fresh classifier when it has none;
- "bilstm": `models.bilstm.BiLSTM` with the sizes in `student.bilstm`, on the teacher's tokenizer.
Teacher, student and task must agree on the number of labels and, where they name them, on their order:
a mismatch is an error before anything compiles (`label_names.check_model_labels` at validation, `data.task_data.
check_labels` when the task is read). After the run the student is scored on the task's validation split
(`validation_metrics`) and exported (`export`): a BERT as a standard Hugging Face classifier directory with the
task's label names, a BiLSTM in its own format (`models.bilstm.save`).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from jaxdistill import label_names as labels_lib
from jaxdistill.errors import ConfigError, ModelError
from jaxdistill.layer_map import init_student_from_teacher, student_config_from_layers
from jaxdistill.models import BertConfig, bilstm, hf, init_params

STUDENT_KINDS = ("bert", "bilstm")
TASK_STUDENT_INITS = ("copy", "layers", "random", "pretrained")


def default_bilstm_config() -> ml_collections.ConfigDict:
    """`student.bilstm`: embedding_size 300, hidden_size 150 per direction, dense_size 200, embeddings
    "teacher" (projected teacher word embeddings) or "random". Sizes: assumed (Tang et al. use 300-d word2vec
    vectors and a single-layer BiLSTM; the widths here are our reading, not checked against the paper)."""
    return ml_collections.ConfigDict(dict(embedding_size=300, hidden_size=150, dense_size=200, embeddings="teacher"))


def teacher_classifier_config(path: str) -> BertConfig:
    """The fine-tuned teacher's config (classifier, no MLM head); ModelError when it has no classifier."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"teacher directory {path!r} does not exist; task distillation needs a fine-tuned "
                                "classifier: run `jaxdistill finetune ... --config.save_model=True` and point "
                                "--config.teacher.path at its <workdir>/model")
    config = hf.load_config(path, with_mlm_head=False, with_pooler=True)
    if not config.num_labels:
        raise ModelError(f"the teacher {path!r} has no classification head (config.json has no id2label / "
                         "*ForSequenceClassification architecture); task distillation needs a fine-tuned teacher: "
                         "`jaxdistill finetune` it first")
    return config


def task_student_config(teacher: BertConfig, student_section) -> Tuple[Any, str, Tuple[int, ...], str]:
    """(student config, init, copied layers, pretrained path) for task data: a BertConfig with the teacher's
    num_labels, or a `bilstm.BiLSTMConfig`."""
    kind = str(student_section.get("kind", "bert"))
    if kind not in STUDENT_KINDS:
        raise ConfigError(f"student.kind {kind!r} is not one of {STUDENT_KINDS}")
    if kind == "bilstm":
        b = student_section.get("bilstm") or default_bilstm_config()
        return bilstm.BiLSTMConfig(vocab_size=teacher.vocab_size, num_labels=teacher.num_labels,
                                   embedding_size=int(b.get("embedding_size", 300)),
                                   hidden_size=int(b.get("hidden_size", 150)),
                                   dense_size=int(b.get("dense_size", 200)),
                                   embeddings=str(b.get("embeddings", "teacher"))), "bilstm", (), ""
    init = str(student_section.get("init", "copy"))
    overrides = dict(student_section.get("overrides", None) or {})
    if init not in TASK_STUDENT_INITS:
        raise ConfigError(f"student.init {init!r} is not one of {TASK_STUDENT_INITS}")
    if init == "layers":
        layers = tuple(int(i) for i in (student_section.get("layers", ()) or ()))
        return student_config_from_layers(teacher, layers, **overrides), init, layers, ""
    if init == "pretrained":
        path = str(student_section.get("path", "") or "")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"student.path {path!r} does not exist; give the BERT directory the student "
                                    "starts from (e.g. a HomoDistil export)")
        config = hf.load_config(path, with_mlm_head=False, with_pooler=True, num_labels=teacher.num_labels)
        return config.replace(dtype=teacher.dtype, **overrides), init, (), path
    return teacher.replace(**overrides), init, (), ""


def recipe_view(student_config, teacher: BertConfig, recipe_cfg) -> BertConfig:
    """The BertConfig the recipe checks see for a student: itself, or for a BiLSTM the teacher's config with
    the student's num_labels and no MLM head (prediction terms read only these); a BiLSTM has no layers, so
    a recipe with intermediate matches is refused."""
    if isinstance(student_config, BertConfig):
        return student_config
    if list(recipe_cfg.get("matches", None) or []):
        raise ConfigError(f"recipe {recipe_cfg.get('name')!r} matches intermediate layers, which a BiLSTM student "
                          "does not have; use a prediction-layer recipe (logit_mse, hinton)")
    return teacher.replace(num_labels=student_config.num_labels, with_mlm_head=False)


def load_task_models(exp) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(teacher_params, student_params) as float32 NumPy trees for a task `Experiment`."""
    t = exp.teacher_config
    _, teacher_params = hf.load(exp.config.teacher.path, with_mlm_head=False, with_pooler=True, dtype=t.dtype,
                                remat=False)
    seed = int(exp.config.train.seed)
    s = exp.student_config
    if exp.student_kind == "bilstm":
        embeddings = teacher_params["embeddings"]["word_embeddings"]["embedding"]
        return teacher_params, bilstm.init_params(s, jax.random.PRNGKey(seed), teacher_embeddings=embeddings)
    if exp.student_init == "copy":
        return teacher_params, jax.tree.map(np.array, teacher_params)
    if exp.student_init == "layers":
        _, student = init_student_from_teacher(t, teacher_params, layers=list(exp.student_layers))
        return teacher_params, student
    if exp.student_init == "pretrained":
        _, student = hf.load(exp.student_path, with_mlm_head=False, with_pooler=True, num_labels=s.num_labels,
                             seed=seed)
        return teacher_params, student
    return teacher_params, jax.tree.map(np.asarray, init_params(s, jax.random.PRNGKey(seed)))


def student_logits(exp, student_params, arrays: Dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """float32 [N, C] logits of the trained student on task arrays."""
    if exp.student_kind == "bilstm":
        return bilstm.predict_logits(exp.student_config, student_params, arrays, batch_size)
    from jaxdistill.finetune import predict_logits
    return predict_logits(exp.student_config.replace(remat=False), student_params, arrays, batch_size)


def validation_metrics(exp, task, student_params, batch_size: int = 128) -> Dict[str, float]:
    """The task's metrics (e.g. accuracy) of the student on the task's validation split."""
    logits = student_logits(exp, student_params, task.validation, batch_size)
    return {k: float(v) for k, v in task.compute_metrics(logits, task.validation["labels"]).items()}


def export(exp, student_params, out_dir: str, label_names: Sequence[str],
           metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Exports the distilled student: a BERT as a Hugging Face BertForSequenceClassification directory, a
    BiLSTM with `bilstm.save`; both with the teacher's tokenizer and the task's label names."""
    if exp.student_kind == "bilstm":
        return bilstm.save(exp.student_config, student_params, out_dir, exp.tokenizer_dir, label_names, metadata)
    from jaxdistill.train.export import export_student
    result = export_student(exp.student_config, student_params, {}, out_dir, exp.tokenizer_dir,
                            overwrite=exp.export_overwrite, metadata=metadata)
    labels_lib.write_label_names(out_dir, label_names)
    return result


def student_module(exp):
    """The student's Flax module for the step when it is not a Bert (the BiLSTM), else None."""
    return bilstm.BiLSTM(exp.student_config) if exp.student_kind == "bilstm" else None


def student_param_specs(exp, student_params):
    """Logical PartitionSpecs of a non-BERT student's params (the BiLSTM is small: replicated), else None."""
    if exp.student_kind != "bilstm":
        return None
    return jax.tree.map(lambda _: jax.sharding.PartitionSpec(), student_params)


def step_flops(exp, seq_len: int, widths=None) -> float:
    """FLOPs of one distillation step (teacher forward + 3x student forward) for throughput and MFU."""
    from jaxdistill import metrics as metrics_lib
    mlm_head = exp.data_kind != "task"
    if exp.student_kind != "bilstm":
        return metrics_lib.distill_step_flops(exp.teacher_config, exp.student_config, exp.batch_size, seq_len, widths,
                                              mlm_head=mlm_head)
    teacher = metrics_lib.bert_forward_flops(exp.teacher_config, seq_len, mlm_head=False)
    return exp.batch_size * (teacher + 3 * bilstm.forward_flops(exp.student_config, seq_len))


def finish(exp, data, student_params, export_dir: Optional[str], metadata: Dict[str, Any]) -> Dict[str, Any]:
    """After a task run: the student's validation metrics and, with `export_dir`, its export. Returns the
    summary entries {"validation": metrics, "export_dir", "export_format"}."""
    out: Dict[str, Any] = {"validation": validation_metrics(exp, data.task, student_params)}
    if export_dir and jax.process_index() == 0:
        metadata = dict(metadata, validation=out["validation"])
        result = export(exp, student_params, export_dir, data.task.label_names, metadata)
        out.update(export_dir=export_dir, export_format=result["format"])
    return out
