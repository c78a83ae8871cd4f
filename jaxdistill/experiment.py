"""A distillation config, validated once into an `Experiment`: everything a run needs to know before it loads.

`resolve(config)` checks every section (train, teacher and student shapes, recipe and layer maps, pruning
targets, data, mesh and batch divisibility, sharding rules, export) without loading weights or reading the
corpus, and raises the first problem as a `ConfigError` (exit 2) naming the field and the fix, or a
`ModelError`/`FileNotFoundError` (exit 3) for a teacher that is not there. A hub teacher's shape comes from
its config.json (fetched alone, or from the Hugging Face cache). `jaxdistill distill --dry-run`,
`train.build_run` and `train.train_and_evaluate` all take the `Experiment` it returns, so no check runs twice
and none is written twice: each section's checks live in the module that owns it (`optimizer`,
`layer_map`, `objectives`, `pruning`, `data`, `sharding`), and this module only composes them.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Tuple

import jax

from jaxdistill import label_names, layer_map, objectives, pruning, task_distill
from jaxdistill import sharding as shard_lib
from jaxdistill import storage
from jaxdistill.data import check_data_config
from jaxdistill.errors import ConfigError
from jaxdistill.models import BertConfig, bilstm, hf
from jaxdistill.models.layer_stack import REMAT_POLICIES, remat_policy_name
from jaxdistill.models.standard_bert import has_standard_form
from jaxdistill.vocab_chunks import check_chunk_tokens
from jaxdistill.optimizer import OptimizerConfig

DTYPES = ("float32", "bfloat16", "float16")
STUDENT_INITS = ("copy", "layers", "random", "compact_random")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A validated distillation config (see the module docstring); build it with `resolve(config)`.

    teacher_config / student_config: the models as the run builds them (compute dtype and remat applied).
    teacher_source: where the teacher's shape came from (for messages). student_init: "copy", "layers" or
    "random"; student_layers: the copied teacher layers for "layers". recipe: the built `objectives.Recipe`.
    pruning: a `pruning.PruningConfig`, or None when nothing is pruned. data: `data.check_data_config`'s
    parsed settings. optimizer: the `OptimizerConfig`. mesh_sizes: the config's axis sizes (-1 = the rest);
    mesh_shape: resolved against `num_devices` when that was given, else None. rules: the logical-axis
    rules. tokenizer_dir, export_dir (None: no export; relative to the workdir unless absolute),
    export_overwrite, export_own_format (`export.own_format`: write a student without a standard BERT form
    in jaxdistill's own format). vocab_chunk_tokens: `train.vocab_chunk_tokens` (0 = whole MLM logits).
    """

    config: Any
    teacher_config: BertConfig
    teacher_source: str
    student_config: BertConfig
    student_init: str
    student_layers: Tuple[int, ...]
    recipe: Any
    pruning: Optional[pruning.PruningConfig]
    data: dict
    optimizer: OptimizerConfig
    mesh_sizes: dict
    mesh_shape: Optional[Tuple[int, ...]]
    rules: Any
    tokenizer_dir: str
    export_dir: Optional[str]
    export_overwrite: bool
    data_kind: str = "pretraining"   # "task": labeled task batches (jaxdistill.task_distill)
    student_kind: str = "bert"       # "bert" or "bilstm" (task data only)
    student_path: str = ""           # student.init "pretrained": the BERT directory it starts from
    teacher_labels: Tuple[str, ...] = ()  # a task teacher's label names, in id order
    vocab_chunk_tokens: int = 0      # tokens per block of the chunked vocabulary losses (0 = unchunked)
    export_own_format: bool = False  # a student with no standard BERT form is exported in our own format

    @property
    def steps(self) -> int:
        return self.optimizer.steps

    @property
    def batch_size(self) -> int:
        return int(self.config.train.batch_size)

    def describe(self) -> str:
        """One line for logs and --dry-run."""
        s = self.student_config
        shape = (f"BiLSTM, embeddings {s.embedding_size}, hidden {s.hidden_size} x 2, dense {s.dense_size}"
                 if self.student_kind == "bilstm" else f"{s.num_hidden_layers} layers, hidden {s.hidden_size}")
        line = (f"teacher {self.teacher_source}; student ({self.student_init}) {shape}; recipe {self.recipe.name} "
                f"({', '.join(self.recipe.terms)})")
        if self.data_kind == "task":
            line += f"; task data, labels {list(self.teacher_labels)}"
        if self.pruning is not None:
            w = self.pruning.final_widths()
            line += (f"; pruned to hidden {w['hidden']}, {w['heads']} heads x {w['head_dim']}, FFN {w['ffn']} "
                     f"by step {self.pruning.prune_end}")
        return line


def check_train_section(t) -> None:
    """The `train` fields the optimizer does not own: positive counts, accumulation, dtype."""
    problems = []
    for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
        if int(t.get(name, 1)) <= 0:
            problems.append(f"train.{name} must be positive (got {t.get(name)})")
    accum = int(t.get("accum_steps", 1))
    if accum <= 0 or int(t.batch_size) % accum:
        problems.append(f"train.accum_steps {accum} must be positive and divide train.batch_size {t.batch_size}")
    if t.get("dtype", "float32") not in DTYPES:
        problems.append(f"train.dtype {t.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


SCAN_LAYERS_FROM = 12  # train.scan_layers="auto" scans models with at least this many layers


def scan_layers_of(t, num_layers: int) -> bool:
    """`train.scan_layers`: True, False or "auto" (scan when the teacher has >= SCAN_LAYERS_FROM layers)."""
    value = t.get("scan_layers", False)
    if value == "auto":
        return num_layers >= SCAN_LAYERS_FROM
    if isinstance(value, bool):
        return value
    raise ConfigError(f"train.scan_layers must be true, false or 'auto', got {value!r}; "
                      "e.g. --config.train.scan_layers=auto")


def remat_of(t) -> str:
    """`train.remat` as a policy name: false/"none", true/"full" or "dots_saveable"."""
    value = t.get("remat", False)
    name = remat_policy_name(value)
    if name not in REMAT_POLICIES:
        raise ConfigError(f"train.remat {value!r} is not a remat policy; use one of {', '.join(REMAT_POLICIES)} "
                          "(or true = full, false = none), e.g. --config.train.remat=dots_saveable")
    return name


def check_vocab_chunking(chunk_tokens: int, recipe) -> None:
    """Vocabulary chunking applies to MLM logits: a recipe whose terms read classifier logits needs 0."""
    p = recipe.plan.predictions
    if chunk_tokens and p.logit_terms and p.logits != "mlm_logits":
        raise ConfigError(f"train.vocab_chunk_tokens={chunk_tokens} chunks MLM logits, but recipe {recipe.name!r} "
                          f"reads `{p.logits}`; set --config.train.vocab_chunk_tokens=0")
    if chunk_tokens and "hard" in p.weights:
        raise ConfigError(f"recipe {recipe.name!r} has a hard-label term, which is not chunked; "
                          "set --config.train.vocab_chunk_tokens=0")


def teacher_config_of(path: str) -> Tuple[BertConfig, str]:
    """The teacher's BertConfig without loading weights, and where it came from.

    A local directory -> its config.json; a hub id (`name[@revision]`) -> its config.json alone, fetched
    from the hub or found in the Hugging Face cache, so the run is validated against the teacher's real
    shape; a hub id that cannot be had (offline and not cached) -> ModelError (exit 3) naming the download
    command; a missing local path -> FileNotFoundError.
    """
    if not path:
        raise ConfigError("teacher.path is empty: give a Hugging Face BERT directory (or hub id when online)")
    if os.path.isdir(path) or storage.is_remote(path):  # a gs:// directory is mirrored locally first
        return hf.load_config(hf.resolve_path(path), with_mlm_head=True, with_pooler=True), path
    if hf.looks_like_hub_id(path):
        return hf.config_of(path, with_mlm_head=True, with_pooler=True), f"{path} (hub)"
    raise FileNotFoundError(f"teacher directory {path!r} does not exist; set --config.teacher.path to a Hugging "
                            "Face BERT directory (config.json + model.safetensors) or a hub id")


def local_tokenizer_dir(teacher_section) -> str:
    """The teacher's tokenizer directory (`teacher.tokenizer`, else `teacher.path`) as a local path: a gs://
    directory is mirrored locally (the tokenizer library reads local files); others are returned as given."""
    path = str(teacher_section.get("tokenizer") or "") or str(teacher_section.path)
    return hf.resolve_path(path) if storage.is_remote(path) else path


def student_config_of(teacher: BertConfig, student_section) -> Tuple[BertConfig, str, Tuple[int, ...]]:
    """(student config, init, copied layers) from the `student` section: "copy" (the teacher, exactly),
    "layers" (the teacher layers `student.layers`, 0-based), "random" (the teacher's config with
    `student.overrides`) or "compact_random" (randomly initialised at the compact shape; `resolve` sets the
    shape from the pruning section)."""
    init = student_section.get("init", "copy")
    overrides = dict(student_section.get("overrides", None) or {})
    if init not in STUDENT_INITS:
        raise ConfigError(f"student.init {init!r} is not one of {', '.join(map(repr, STUDENT_INITS))}")
    if init == "layers":
        layers = tuple(int(i) for i in (student_section.get("layers", ()) or ()))
        return layer_map.student_config_from_layers(teacher, layers, **overrides), init, layers
    return teacher.replace(**overrides), init, ()


def compact_random_student(config, teacher_like: BertConfig, steps: int) -> BertConfig:
    """student.init "compact_random": the shape HomoDistil would end at under the `pruning` section (its
    widths, or those `target_params` solves), initialised randomly and trained unpruned; the section must
    be disabled, since it only gives the shape here."""
    section = config.get("pruning")
    if not section:
        raise ConfigError("student.init='compact_random' takes its shape from the pruning section; set its widths "
                          "or target_params")
    if section.get("enabled", False):
        raise ConfigError("student.init='compact_random' trains a compact random student without pruning; set "
                          "pruning.enabled=False (the pruning section then only gives the student's shape)")
    enabled = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    return pruning.PruningConfig.from_config(dict(enabled, enabled=True), teacher_like, steps).compact_shape(
        teacher_like)


def check_standard_export(final: BertConfig) -> None:
    """ConfigError, at start-up, when the student's final shape has no standard BERT form, so that the export
    at the end of the run (a standard BERT by default) would fail after all the training."""
    heads, head_dim, hidden = final.num_attention_heads, final.attention_head_size, final.hidden_size
    if not has_standard_form(final):
        raise ConfigError(
            f"the student ends with {heads} heads x {head_dim} dimensions in hidden {hidden}, which has no standard "
            "BERT form, so the export at the end of the run would fail; set --config.export.own_format=True "
            "(jaxdistill's own format, read by jaxdistill.models.hf.load and by `finetune`), or "
            "--config.export.enabled=False, or choose pruning targets whose hidden width holds the heads")


def resolve(config, num_devices: Optional[int] = None, process_count: int = 1) -> Experiment:
    """Validates a distillation config into an `Experiment` (see the module docstring).

    num_devices / process_count: when given, the mesh is resolved against them and the global batch is
    checked to split over data x fsdp and over the processes (the engine passes its real device count;
    --dry-run on a laptop for a pod config leaves it None and checks only the mesh's form).
    """
    t = config.train
    check_train_section(t)
    optimizer = OptimizerConfig.from_section(t)
    dtype, remat = str(t.get("dtype", "float32")), remat_of(t)
    chunk_tokens = check_chunk_tokens(t.get("vocab_chunk_tokens", 0))
    data_kind = str(config.data.get("kind", "pretraining"))
    if data_kind == "task":
        teacher_path = str(config.teacher.get("path") or "")
        teacher, source = task_distill.teacher_classifier_config(teacher_path), teacher_path
        scan = scan_layers_of(t, teacher.num_hidden_layers)
        teacher = teacher.replace(dtype=dtype, remat=False, scan_layers=scan)
        student, init, layers, student_path = task_distill.task_student_config(teacher, config.student)
        labels = label_names.label_names_of(teacher_path)
        if student_path:
            label_names.check_model_labels(labels, label_names.label_names_of(student_path), student_path)
    else:
        teacher, source = teacher_config_of(str(config.teacher.get("path") or ""))
        scan = scan_layers_of(t, teacher.num_hidden_layers)
        teacher = teacher.replace(dtype=dtype, remat=False, scan_layers=scan)
        (student, init, layers), student_path, labels = student_config_of(teacher, config.student), "", ()
    student_kind = "bilstm" if isinstance(student, bilstm.BiLSTMConfig) else "bert"
    if init == "compact_random":
        student = compact_random_student(config, student, optimizer.steps)
    student = student.replace(remat=remat, scan_layers=scan) if student_kind == "bert" else student
    recipe = objectives.build_recipe(config.recipe, teacher, task_distill.recipe_view(student, teacher, config.recipe))
    check_vocab_chunking(chunk_tokens, recipe)
    pcfg = None
    if config.get("pruning") and config.pruning.get("enabled", False):
        if student_kind == "bilstm":
            raise ConfigError("pruning.enabled: a BiLSTM student cannot be pruned (HomoDistil prunes BERTs)")
        pcfg = pruning.PruningConfig.from_config(config.pruning, student, optimizer.steps)
    max_positions = teacher.max_position_embeddings if student_kind == "bilstm" else \
        min(teacher.max_position_embeddings, student.max_position_embeddings)
    data = check_data_config(config.data, int(t.batch_size), max_positions)
    sizes = dict(config.get("mesh", {}) or {})
    shard_lib.check_mesh_sizes(sizes)
    shape = None
    if num_devices is not None:
        shape = shard_lib.mesh_shape(sizes, num_devices)
        shard_lib.check_batch_divisible(int(t.batch_size), shape, process_count)
    rules = shard_lib.rules_from_config(config.get("sharding_rules"))
    export = config.get("export") or {}
    export_dir = str(export.get("dir", "export")) if export.get("enabled", True) else None
    own_format = bool(export.get("own_format", False))
    if export_dir is not None and not own_format and student_kind == "bert" and data_kind != "task":
        check_standard_export(student if pcfg is None else pcfg.compact_shape(student))
    return Experiment(config=config, teacher_config=teacher, teacher_source=source, student_config=student,
                      student_init=init, student_layers=layers, recipe=recipe, pruning=pcfg, data=data,
                      optimizer=optimizer, mesh_sizes=sizes, mesh_shape=shape, rules=rules,
                      tokenizer_dir=local_tokenizer_dir(config.teacher),
                      export_dir=export_dir, export_overwrite=bool(export.get("overwrite", False)),
                      data_kind=data_kind, student_kind=student_kind, student_path=student_path,
                      teacher_labels=tuple(labels), vocab_chunk_tokens=chunk_tokens, export_own_format=own_format)


def resolve_here(config) -> Experiment:
    """`resolve` against this machine's devices and processes (what the engine runs on)."""
    return resolve(config, num_devices=jax.device_count(), process_count=jax.process_count())
