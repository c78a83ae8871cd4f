"""Downstream tasks: GLUE (datasets or TFDS, when online) and local CSV/TSV/JSONL files, plus metrics.

``load_task(task_cfg, tokenizer_dir, max_length)`` returns a :class:`Task` whose ``train`` / ``validation``
(/ ``test``) splits are dicts of NumPy arrays: ``input_ids``, ``attention_mask``, ``token_type_ids`` int32
[N, max_length] and ``labels`` [N] (int32 class ids, or float32 for regression; -1 where a test split has
no labels). Labels are checked before tokenization; the label mapping is logged and kept in ``label_map``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from jaxdistill import storage
from jaxdistill.errors import TaskError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class GlueSpec:
    text_fields: Tuple[str, ...]
    num_labels: int
    metrics: Tuple[str, ...]
    label_names: Tuple[str, ...]
    validation: str = "validation"
    test: str = "test"


GLUE_TASKS: Dict[str, GlueSpec] = {
    "cola": GlueSpec(("sentence",), 2, ("matthews_corr",), ("unacceptable", "acceptable")),
    "sst2": GlueSpec(("sentence",), 2, ("accuracy",), ("negative", "positive")),
    "mrpc": GlueSpec(("sentence1", "sentence2"), 2, ("f1", "accuracy"), ("not_equivalent", "equivalent")),
    "qqp": GlueSpec(("question1", "question2"), 2, ("f1", "accuracy"), ("not_duplicate", "duplicate")),
    "stsb": GlueSpec(("sentence1", "sentence2"), 1, ("pearson", "spearman"), ()),
    "mnli": GlueSpec(("premise", "hypothesis"), 3, ("accuracy",), ("entailment", "neutral", "contradiction"),
                     validation="validation_matched", test="test_matched"),
    "qnli": GlueSpec(("question", "sentence"), 2, ("accuracy",), ("entailment", "not_entailment")),
    "rte": GlueSpec(("sentence1", "sentence2"), 2, ("accuracy",), ("entailment", "not_entailment")),
    "wnli": GlueSpec(("sentence1", "sentence2"), 2, ("accuracy",), ("not_entailment", "entailment")),
}
LOCAL_FORMATS = ("csv", "tsv", "jsonl")


# ----------------------------------------------------------------------------------------------- metrics
def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def f1_binary(pred: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class; 0 when there are no true or predicted positives."""
    pred, labels = np.asarray(pred) == positive, np.asarray(labels) == positive
    tp = float(np.sum(pred & labels))
    denom = float(np.sum(pred) + np.sum(labels))
    return 2.0 * tp / denom if denom else 0.0


def matthews_corr(pred: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004; the usual one for 2 classes); 0 if undefined."""
    pred, labels = np.asarray(pred).astype(np.int64), np.asarray(labels).astype(np.int64)
    classes = np.union1d(pred, labels)
    p = np.searchsorted(classes, pred)
    t = np.searchsorted(classes, labels)
    C = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(C, (t, p), 1.0)
    s, c = C.sum(), np.trace(C)
    tk, pk = C.sum(axis=1), C.sum(axis=0)
    denom = np.sqrt((s * s - pk @ pk) * (s * s - tk @ tk))
    return float((c * s - tk @ pk) / denom) if denom > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    return float(xc @ yc / denom) if denom > 0 else 0.0


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (as scipy.stats.rankdata 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv.ravel(), weights=ranks)
    return sums[inv.ravel()] / counts[inv.ravel()]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


def _task_key(task_name_or_kind: str) -> str:
    key = str(task_name_or_kind).lower()
    return key.split("/", 1)[1] if key.startswith(("glue/", "glue_")) else key


def metric_names(task_name_or_kind: str) -> Tuple[str, ...]:
    key = _task_key(task_name_or_kind)
    if key in GLUE_TASKS:
        return GLUE_TASKS[key].metrics
    if key == "regression":
        return ("pearson", "spearman", "mse")
    if key == "classification":
        return ("accuracy",)
    raise TaskError(f"unknown task {task_name_or_kind!r}: use a GLUE name {sorted(GLUE_TASKS)}, "
                    "'classification' or 'regression'")


def compute_metrics(task_name_or_kind: str, predictions: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Metrics of a task. ``predictions``: logits [N, C] (argmax is taken), class ids [N], or scores [N] / [N, 1]
    for regression (STS-B, 'regression'). ``labels``: [N]."""
    names = metric_names(task_name_or_kind)
    preds = np.asarray(predictions)
    labels = np.asarray(labels)
    regression = "pearson" in names
    if regression:
        preds = preds.reshape(len(preds), -1)[:, 0].astype(np.float64)
    elif preds.ndim == 2:
        preds = preds.argmax(axis=-1)
    if preds.shape[0] != labels.shape[0]:
        raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels")
    fns = {"accuracy": accuracy, "f1": f1_binary, "matthews_corr": matthews_corr, "pearson": pearson,
           "spearman": spearman, "mse": lambda p, t: float(np.mean((p - t) ** 2))}
    return {n: fns[n](preds, labels) for n in names}


# ------------------------------------------------------------------------------------------------ config
def default_task_config():
    """name: "glue/<task>" or "csv"/"tsv"/"jsonl"; source: "hf" or "tfds" (GLUE); train_file / validation_file /
    test_file (local); text_fields: 1 or 2 columns; label_field; label_map: {raw value: id} (optional, else
    the sorted training values); regression; validation_fraction and seed (local, without a validation file)."""
    import ml_collections
    c = ml_collections.ConfigDict()
    c.name = "csv"
    c.source = "hf"
    c.train_file = ""
    c.validation_file = ""
    c.test_file = ""
    c.text_fields = ("sentence",)
    c.label_field = "label"
    c.label_map = ml_collections.ConfigDict()
    c.regression = False
    c.validation_fraction = 0.1
    c.seed = 0
    c.cache_dir = ""
    return c


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    v = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if v is None else v


@dataclass
class Task:
    """A tokenized downstream task (see the module docstring for the split arrays)."""

    name: str
    kind: str  # "classification" | "regression"
    num_labels: int
    label_names: List[str]
    metric_names: Tuple[str, ...]
    train: Dict[str, np.ndarray]
    validation: Dict[str, np.ndarray]
    test: Optional[Dict[str, np.ndarray]] = None
    label_map: Optional[Dict[str, int]] = None
    text_fields: Tuple[str, ...] = field(default_factory=tuple)

    def compute_metrics(self, predictions: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
        key = self.name if _task_key(self.name) in GLUE_TASKS else self.kind
        return compute_metrics(key, predictions, labels)


Rows = Dict[str, List[Any]]


# ----------------------------------------------------------------------------------------------- readers
def _read_local(path: str, fmt: str) -> Rows:
    if path and storage.is_remote(path):
        try:
            path = storage.local_copy(path)  # downloaded once to a local mirror
        except FileNotFoundError:
            raise TaskError(f"task file {path!r} does not exist; set task.train_file / task.validation_file") from None
    if not path or not os.path.isfile(path):
        raise TaskError(f"task file {path!r} does not exist; set task.train_file / task.validation_file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "jsonl":
                records = [json.loads(line) for line in f if line.strip()]
            else:
                records = list(csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ","))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError) as e:
        raise TaskError(f"cannot read task file {path!r} as {fmt}: {e}") from None
    if not records:
        raise TaskError(f"task file {path!r} has no rows")
    cols = list(records[0])
    return {c: [r.get(c) for r in records] for c in cols}


def _check_columns(rows: Rows, needed: Sequence[str], where: str) -> None:
    for c in needed:
        if c not in rows:
            raise TaskError(f"column {c!r} is not in {where}; its columns are {list(rows)}; "
                            "set task.text_fields / task.label_field")


def _sort_key(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _map_labels(values: List[Any], label_map: Dict[str, int], where: str, field_name: str) -> np.ndarray:
    raw = [str(v).strip() if v is not None else "" for v in values]
    bad = sorted({v for v in raw if v not in label_map})
    if bad:
        raise TaskError(f"label column {field_name!r} in {where} has unexpected values {bad[:10]}; expected one of "
                        f"{list(label_map)}; fix the file or set task.label_map")
    return np.array([label_map[v] for v in raw], dtype=np.int32)


def _float_labels(values: List[Any], where: str, field_name: str) -> np.ndarray:
    out, bad = [], []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            bad.append(v)
    if bad:
        raise TaskError(f"label column {field_name!r} in {where} has non-numeric values {bad[:10]} for a "
                        "regression task; fix the file or set task.regression=False")
    return np.asarray(out, dtype=np.float32)


def _tokenize(tok, rows: Rows, text_fields: Sequence[str], max_length: int) -> Dict[str, np.ndarray]:
    """BERT inputs of single sentences or pairs: [CLS] a [SEP] (b [SEP]), truncated longest-first, padded."""
    backend = tok.backend()
    backend.enable_truncation(max_length)
    backend.enable_padding(length=max_length, pad_id=tok.pad_id, pad_type_id=0,
                           pad_token=backend.id_to_token(tok.pad_id))
    a = [str(t) if t is not None else "" for t in rows[text_fields[0]]]
    inputs = list(zip(a, [str(t) if t is not None else "" for t in rows[text_fields[1]]])) if len(text_fields) > 1 \
        else a
    encs = backend.encode_batch(inputs, add_special_tokens=True)
    return {"input_ids": np.array([e.ids for e in encs], dtype=np.int32).reshape(len(encs), max_length),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int32).reshape(len(encs), max_length),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int32).reshape(len(encs), max_length)}


def _split_rows(rows: Rows, fraction: float, seed: int) -> Tuple[Rows, Rows]:
    n = len(next(iter(rows.values())))
    if not 0.0 < fraction < 1.0:
        raise TaskError(f"task.validation_fraction={fraction} must be in (0, 1) when there is no validation file")
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise TaskError(f"only {n} rows: too few to hold out a validation split; add task.validation_file")
    perm = np.random.default_rng(seed).permutation(n)
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return ({c: [v[i] for i in tr] for c, v in rows.items()}, {c: [v[i] for i in val] for c, v in rows.items()})


def _load_glue(name: str, source: str, cache_dir: Optional[str]) -> Dict[str, Rows]:
    spec = GLUE_TASKS[name]
    if source == "tfds":
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise TaskError("task.source='tfds' needs tensorflow-datasets and array-record: "
                            "pip install 'jaxdistill[tfds]', or use task.source='hf'") from None
        out = {}
        for split in ("train", spec.validation, spec.test):
            try:
                ds = tfds.data_source(f"glue/{name}", split=split)
            except Exception as e:  # noqa: BLE001
                raise TaskError(f"cannot open TFDS glue/{name} split {split!r}: {type(e).__name__}: {e}") from None
            recs = [ds[i] for i in range(len(ds))]
            out[split] = {k: [r[k].decode("utf-8") if isinstance(r[k], bytes) else r[k] for r in recs]
                          for k in recs[0]} if recs else {}
        return out
    import datasets
    if cache_dir and storage.is_remote(cache_dir):  # datasets' download cache is a local one (see docs/launch.md)
        log.info("task.cache_dir %s is a gs:// URL; datasets keeps its downloads in its local cache", cache_dir)
        cache_dir = None
    try:
        dd = datasets.load_dataset("nyu-mll/glue", name, cache_dir=cache_dir or None)
    except Exception as e:  # noqa: BLE001
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        raise TaskError(f"cannot load GLUE task {name!r} with datasets"
                        f"{' (offline: HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set)' if offline else ''}: "
                        f"{type(e).__name__}: {e}; go online once to cache it, or use local files "
                        "(task.name='csv' with train_file/validation_file)") from None
    return {s: dd[s].to_dict() for s in ("train", spec.validation, spec.test) if s in dd}


def load_task(task_cfg: Any, tokenizer_dir: str, max_length: int, *, max_positions: Optional[int] = None) -> Task:
    """Loads, validates (columns, labels) and tokenizes a task. Raises TaskError before tokenizing."""
    name = str(_cfg_get(task_cfg, "name", "")).lower()
    if max_positions is not None and max_length > max_positions:
        raise TaskError(f"max_length={max_length} is above the model's max_position_embeddings={max_positions}")
    glue = _task_key(name) if name.startswith(("glue/", "glue_")) or name in GLUE_TASKS else None
    if glue is not None and glue not in GLUE_TASKS:
        raise TaskError(f"unknown GLUE task {name!r}; choose one of {sorted(GLUE_TASKS)}")
    label_field = str(_cfg_get(task_cfg, "label_field", "label"))
    cfg_map = _cfg_get(task_cfg, "label_map", None)
    cfg_map = {str(k): int(v) for k, v in dict(cfg_map).items()} if cfg_map else None

    if glue is not None:
        spec = GLUE_TASKS[glue]
        splits = _load_glue(glue, str(_cfg_get(task_cfg, "source", "hf")), _cfg_get(task_cfg, "cache_dir", None))
        text_fields, label_field = spec.text_fields, "label"
        regression = spec.num_labels == 1
        raw = {"train": splits["train"], "validation": splits[spec.validation], "test": splits.get(spec.test)}
        label_names = list(spec.label_names)
        label_map = None if regression else {str(i): i for i in range(spec.num_labels)}
        kind_name = f"glue/{glue}"
    elif name in LOCAL_FORMATS:
        text_fields = tuple(_cfg_get(task_cfg, "text_fields", ("sentence",)))
        if isinstance(text_fields, str) or not 1 <= len(text_fields) <= 2:
            raise TaskError(f"task.text_fields={text_fields!r} must list 1 or 2 column names")
        regression = bool(_cfg_get(task_cfg, "regression", False))
        train_file = _cfg_get(task_cfg, "train_file", "")
        val_file = _cfg_get(task_cfg, "validation_file", "")
        test_file = _cfg_get(task_cfg, "test_file", "")
        train = _read_local(train_file, name)
        _check_columns(train, [*text_fields, label_field], repr(train_file))
        all_train_labels = train[label_field]  # the label set comes from the whole file, before any split
        if val_file:
            val = _read_local(val_file, name)
            _check_columns(val, [*text_fields, label_field], repr(val_file))
        else:
            train, val = _split_rows(train, float(_cfg_get(task_cfg, "validation_fraction", 0.1)),
                                     int(_cfg_get(task_cfg, "seed", 0)))
        test = None
        if test_file:
            test = _read_local(test_file, name)
            _check_columns(test, text_fields, repr(test_file))
        raw = {"train": train, "validation": val, "test": test}
        if regression:
            label_map, label_names = None, []
        else:
            if cfg_map is None:
                values = sorted({str(v).strip() for v in all_train_labels if v is not None and str(v).strip()},
                                key=_sort_key)
                if len(values) < 2:
                    raise TaskError(f"label column {label_field!r} in {train_file!r} has fewer than 2 distinct values "
                                    f"({values}); a classification task needs at least 2 (or set task.regression=True)")
                label_map = {v: i for i, v in enumerate(values)}
            else:
                label_map = cfg_map
                if sorted(label_map.values()) != list(range(len(label_map))):
                    raise TaskError(f"task.label_map={label_map} must map to the ids 0..{len(label_map) - 1}")
            label_names = [k for k, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
        kind_name = name
    else:
        raise TaskError(f"task.name={name!r}: use 'glue/<task>' ({', '.join(sorted(GLUE_TASKS))}) or a local format "
                        f"{LOCAL_FORMATS} with task.train_file")

    # labels first: errors before any tokenization
    labels: Dict[str, np.ndarray] = {}
    for split, rows in raw.items():
        if rows is None:
            continue
        where = f"the {split} split of {kind_name}"
        vals = rows.get(label_field)
        if vals is None or (glue is not None and split == "test"):
            n = len(rows[text_fields[0]])
            labels[split] = np.full(n, -1, dtype=np.float32 if regression else np.int32)
        elif regression:
            labels[split] = _float_labels(vals, where, label_field)
        else:
            labels[split] = _map_labels(vals, label_map, where, label_field)
    if label_map is not None:
        counts = {name_: int(np.sum(labels["train"] == i)) for name_, i in label_map.items()}
        log.info("task %s: labels %s -> ids %s (train counts %s)", kind_name, list(label_map), list(label_map.values()),
                 counts)

    from jaxdistill.data.packing import load_tokenizer
    tokenizer = load_tokenizer(str(tokenizer_dir))
    splits_out: Dict[str, Dict[str, np.ndarray]] = {}
    for split, rows in raw.items():
        if rows is None:
            continue
        arrays = _tokenize(tokenizer, rows, text_fields, max_length)
        arrays["labels"] = labels[split]
        splits_out[split] = arrays
    return Task(name=kind_name, kind="regression" if regression else "classification",
                num_labels=1 if regression else len(label_map), label_names=label_names,
                metric_names=metric_names(kind_name if glue is not None else
                                          ("regression" if regression else "classification")),
                train=splits_out["train"], validation=splits_out["validation"], test=splits_out.get("test"),
                label_map=label_map, text_fields=tuple(text_fields))
