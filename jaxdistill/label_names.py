"""The label names of a classifier: read from a model directory's config.json, checked between a teacher and
a student, written into an exported classifier (task-specific distillation and its exports)."""
from __future__ import annotations

import json
import os
from typing import Sequence, Tuple

from jaxdistill import storage
from jaxdistill.errors import ConfigError
from jaxdistill.models import hf


def label_names_of(directory: str) -> Tuple[str, ...]:
    """The id-ordered label names in a model directory's config.json (() when there are none)."""
    path = os.path.join(str(directory), "config.json")
    if not os.path.isfile(path):
        return ()
    with open(path) as f:
        id2label = json.load(f).get("id2label") or {}
    return tuple(str(id2label[k]) for k in sorted(id2label, key=int))


def named(labels: Sequence[str]) -> bool:
    return bool(labels) and not all(str(n) == f"LABEL_{i}" for i, n in enumerate(labels))


def check_model_labels(teacher_labels: Sequence[str], student_labels: Sequence[str], student_path: str) -> None:
    """ConfigError when a pretrained student's classifier names labels differently from the teacher's."""
    if named(teacher_labels) and named(student_labels) and list(teacher_labels) != list(student_labels):
        raise ConfigError(f"the student {student_path!r} has labels {list(student_labels)} but the teacher has "
                          f"{list(teacher_labels)} (in id order); teacher and student classifiers must agree")


def write_label_names(out_dir: str, label_names: Sequence[str]) -> None:
    """Puts the task's label names (id order) into an exported classifier's config.json (local or gs://)."""
    if not label_names:
        return
    path = storage.join(out_dir, "config.json")
    d = storage.read_json(path)
    d["id2label"] = {str(i): str(n) for i, n in enumerate(label_names)}
    d["label2id"] = {str(n): i for i, n in enumerate(label_names)}
    d["problem_type"] = "single_label_classification"
    storage.write_json(path, d, indent=2, sort_keys=True)


def teacher_label_names(teacher_path: str) -> Tuple[str, ...]:
    """The fine-tuned teacher's id-ordered label names (() when it names none or cannot be read): what a task
    student's classifier was checked against, so what an export from its workdir names."""
    path = str(teacher_path)
    try:
        if storage.is_remote(path) or (not os.path.isdir(path) and hf.looks_like_hub_id(path)):
            path = hf.resolve_path(path)
        return label_names_of(path)
    except Exception:  # noqa: BLE001 - unnamed labels are allowed (LABEL_i in the export)
        return ()
