"""Labeled task batches for task-specific distillation (`data.kind = "task"`).

The `data` section then reads `data.task` (the same task sources as `jaxdistill finetune`: local CSV/TSV/JSONL or
GLUE, see `tasks.default_task_config`), `data.max_length` (tokens per example) and `data.augment` (Tang et al.'s
augmentation, `augment.AugmentSpec`). Batches are dicts of `input_ids`, `attention_mask`, `token_type_ids`
int32 [B, L] and `labels` [B] (int32 class ids, `augment.IGNORE_LABEL` on augmented copies; float32 for
regression). Order: the training rows form an endless stream of epochs, epoch e visits them in the order
`np.random.default_rng([seed, e]).permutation(N)`, global batch s takes stream positions s*B .. s*B+B-1, so
batch s is a pure function of (data, seed, s) and resuming needs only the step. `eval_batch(i, B)` cycles over
the validation split (held-out teacher-student metrics); the task's own metrics come from `task.validation`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from jaxdistill.data.augment import AugmentSpec, augment_split
from jaxdistill.data.tasks import LOCAL_FORMATS, Task, load_task
from jaxdistill.errors import ConfigError, TaskError
from jaxdistill.hosts import process_rows

log = logging.getLogger(__name__)

DATA_KINDS = ("pretraining", "task")
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def check_task_data_config(data_cfg: Any, global_batch_size: int, max_positions: int) -> Dict[str, Any]:
    """Validates a `data.kind = "task"` section without reading the task; returns {"kind", "seq_len"
    (= max_length), "augment" (an AugmentSpec), "task" (the task ConfigDict), "seed"}.

    ConfigError for max_length outside 8..max_positions, a batch below 1, a local task whose train file does
    not exist, or bad augmentation settings."""
    max_length = int(data_cfg.get("max_length", 128))
    if not 8 <= max_length <= int(max_positions):
        raise ConfigError(f"data.max_length={max_length} must be in 8..{max_positions} (the models' "
                          "max_position_embeddings)")
    if int(global_batch_size) < 1:
        raise ConfigError(f"global batch size must be >= 1, got {global_batch_size}")
    task_cfg = data_cfg.get("task")
    if task_cfg is None:
        raise ConfigError("data.kind='task' needs a data.task section (see jaxdistill.data.default_task_config)")
    name = str(task_cfg.get("name", "")).lower()
    train_file = str(task_cfg.get("train_file", "") or "")
    if name in LOCAL_FORMATS and not train_file.startswith("gs://") and not os.path.isfile(train_file):
        raise ConfigError(f"data.task.train_file {train_file!r} does not exist; point it at the task's "
                          f"{name.upper()} file")
    return dict(kind="task", seq_len=max_length, augment=AugmentSpec.from_config(data_cfg.get("augment")),
                task=task_cfg, seed=int(data_cfg.get("seed", 0)))


def stream_rows(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """int64 [batch_size]: the rows of global batch `step` in the epoch stream (see the module docstring)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, offsets = positions // n, positions % n
    rows = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n)
        rows[epochs == e] = perm[offsets[epochs == e]]
    return rows


def generic_label_names(names: Sequence[str]) -> bool:
    """Whether label names are transformers' placeholders LABEL_0, LABEL_1, ... (they say nothing of order)."""
    return all(str(n) == f"LABEL_{i}" for i, n in enumerate(names))


def check_labels(task: Task, model_labels: Optional[Sequence[str]], num_labels: int, who: str) -> None:
    """TaskError unless `who`'s classifier has the task's number of labels and, when both name them, the same
    label names in the same order (ids must mean the same class for teacher, student and data)."""
    if task.num_labels != num_labels:
        raise TaskError(f"the {who} classifier has {num_labels} outputs but task {task.name!r} has "
                        f"{task.num_labels} labels ({task.label_names}); distil on the task it was fine-tuned on")
    if not model_labels or not task.label_names or generic_label_names(model_labels):
        log.warning("the %s's labels are not named (%s): assuming its label ids follow the task's order %s",
                    who, model_labels, task.label_names)
        return
    if [str(n) for n in model_labels] != [str(n) for n in task.label_names]:
        raise TaskError(f"the {who}'s labels {list(model_labels)} (id order) differ from task {task.name!r}'s "
                        f"{task.label_names}; set data.task.label_map so that ids match the {who}'s "
                        f"(e.g. {{{', '.join(f'{n!r}: {i}' for i, n in enumerate(model_labels))}}})")


@dataclasses.dataclass
class TaskBatches:
    """The batch source of a task distillation run (see the module docstring). `task` keeps the tokenized
    splits (train without augmentation); `train` is the training split with its augmented copies."""

    task: Task
    train: Dict[str, np.ndarray]
    global_batch_size: int
    seed: int

    @property
    def num_train(self) -> int:
        return int(self.train["input_ids"].shape[0])

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> Dict[str, np.ndarray]:
        """This process's rows of global batch `step`: arrays [B/P, L] and labels [B/P]."""
        rows = stream_rows(step, self.global_batch_size, self.num_train, self.seed)
        rows = rows[process_rows(self.global_batch_size, process_index, process_count)]
        return {k: self.train[k][rows] for k in BATCH_KEYS}

    def iterator(self, start_step: int = 0, process_index: int = 0, process_count: int = 1,
                 prefetch: int = 0) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """Yields (step, batch) from `start_step` forever (batches are cheap row gathers: no prefetch)."""
        step = start_step
        while True:
            yield step, self.batch(step, process_index, process_count)
            step += 1

    def eval_batch(self, i: int, batch_size: int) -> Dict[str, np.ndarray]:
        """Global validation batch `i` (rows i*B.. of the validation split, cycling): arrays [B, L], labels [B]."""
        n = int(self.task.validation["input_ids"].shape[0])
        rows = (np.int64(i) * batch_size + np.arange(batch_size, dtype=np.int64)) % n
        return {k: self.task.validation[k][rows] for k in BATCH_KEYS}


def build_task_data(checked: Dict[str, Any], tokenizer_dir: str, global_batch_size: int, max_positions: int,
                    teacher_labels: Optional[Sequence[str]], num_labels: int) -> TaskBatches:
    """Loads and tokenizes the task (`checked` = `check_task_data_config`'s result), checks the teacher's
    labels against it (`check_labels`), and adds the augmented copies to the training split."""
    task = load_task(checked["task"], tokenizer_dir, int(checked["seq_len"]), max_positions=max_positions)
    check_labels(task, teacher_labels, num_labels, "teacher")
    train = dict(task.train)
    spec: AugmentSpec = checked["augment"]
    if spec.copies:
        if task.kind != "classification":
            raise TaskError("data.augment needs a classification task: augmented copies carry no hard label, "
                            "which regression cannot express; turn data.augment.enabled off")
        from jaxdistill.data.packing import load_tokenizer
        tok = load_tokenizer(str(tokenizer_dir))
        train = augment_split(train, spec, vocab=tok.vocab, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id,
                              mask_id=tok.mask_id, piece_prefix=tok.continuing_prefix)
        log.info("task %s: %d training examples + %d augmented copies", task.name, len(task.train["labels"]),
                 len(train["labels"]) - len(task.train["labels"]))
    return TaskBatches(task=task, train=train, global_batch_size=int(global_batch_size), seed=int(checked["seed"]))
