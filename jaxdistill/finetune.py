"""Fine-tune and evaluate a (compacted) student on a downstream classification or regression task.

`finetune_and_evaluate(config, workdir)` loads a BERT directory (Hugging Face or jaxdistill's own export
format), puts a fresh seeded classification head on its pooled output (`num_labels` from the task; 1 =
regression), trains it with cross-entropy (MSE for regression) and AdamW (warm-up, then linear decay; the
optimizer is `jaxdistill.optimizer.make_optimizer`) in one jitted step sharded over a (data, fsdp, tensor) mesh
with the batch split over (data, fsdp), and evaluates on the validation split with the task's metrics.

`evaluate(model_path, task_cfg)` scores a model that already has its head (e.g. one saved by fine-tuning).
`predict_logits(...)` is the jitted, batched forward both use; `benchmark_inference(...)` times it.

Order of examples: the training rows form an endless stream of epochs; epoch `e` visits them in the order
`np.random.default_rng([seed, e]).permutation(N)`, and step `s` takes stream positions `s*B .. s*B+B-1`
(a batch may straddle two epochs; nothing is dropped). Dropout keys come from `PRNGKey(seed)`, the head
from `fold_in(PRNGKey(seed), 1)`: a run is a pure function of (config, data, seed).
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from typing import Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdistill import metrics as metrics_lib
from jaxdistill import sharding as shard_lib
from jaxdistill import storage
from jaxdistill.hosts import process_rows
from jaxdistill.models import Bert, BertConfig, hf
from jaxdistill.models.standard_bert import has_standard_form
from jaxdistill.optimizer import OptimizerConfig, make_lr_schedule, make_optimizer
from jaxdistill.train.state import create_state, to_host
from jaxdistill.errors import ConfigError, ModelError, OutputExistsError

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def default_finetune_config() -> ml_collections.ConfigDict:
    """The fine-tuning config, with documented defaults.

    model: a BERT directory (Hugging Face, or jaxdistill's export format; `hf.load` reads both) or hub id.
    tokenizer: directory with the tokenizer files ("" = the model directory).
    task: see `jaxdistill.data.default_task_config()`.
    num_labels: 0 = take it from the task; otherwise it must equal the task's (a guard for CLI use).
    max_length: tokens per example ([CLS]/[SEP] included), <= the model's max_position_embeddings.
    batch_size / eval_batch_size: global examples per step; the training batch must be a multiple of the
        data x fsdp mesh size (evaluation rounds its batch up to one).
    epochs: passes over the training split; steps > 0 overrides it.
    lr: peak AdamW learning rate. 5e-5 is an assumed default (BERT-base GLUE practice uses 2e-5..5e-5);
        small or compacted students usually want 1e-4..3e-4.
    warmup_ratio: fraction of the steps with linear warm-up; then linear decay to 0.
    weight_decay (not on biases/LayerNorm), grad_clip (global norm; 0 = off), b1, b2, eps: AdamW.
    seed: head init, dropout and shuffling. dropout: use the model's dropout while training.
    log_every: steps between train-loss log lines. eval_every: steps between validation runs (0 = at the
        end of each epoch); the final validation always runs.
    mesh: sizes of the data/fsdp/tensor axes (-1 = the rest). sharding_rules: None = the default table.
    save_model: write the fine-tuned model (with its head) as a Hugging Face directory to `<workdir>/model`;
        overwrite: allow replacing a non-empty `<workdir>/model`.
    dtype: activation dtype ("float32"; "bfloat16" on TPU/GPU). progress/tensorboard: console bar, TB events.
    """
    from jaxdistill.data import default_task_config
    c = ml_collections.ConfigDict()
    c.model = ""
    c.tokenizer = ""
    c.task = default_task_config()
    c.num_labels = 0
    c.max_length = 128
    c.batch_size = 32
    c.eval_batch_size = 128
    c.epochs = 3.0
    c.steps = 0
    c.lr = 5e-5
    c.warmup_ratio = 0.1
    c.weight_decay = 0.01
    c.grad_clip = 1.0
    c.b1, c.b2, c.eps = 0.9, 0.999, 1e-6
    c.seed = 0
    c.dropout = True
    c.log_every = 50
    c.eval_every = 0
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding_rules = ml_collections.FieldReference(None, field_type=list)
    c.save_model = False
    c.overwrite = False
    c.dtype = "float32"
    c.progress = True
    c.tensorboard = False
    return c


# ------------------------------------------------------------------------------------------- validation
def _check_model_dir(path: str) -> str:
    """The local directory of `path` (a hub id is fetched when online); clear errors otherwise."""
    if not path:
        raise ConfigError("config.model is empty; give a BERT directory (Hugging Face or a jaxdistill "
                         "export) or a hub id when online")
    if storage.is_remote(path):
        path = hf.resolve_path(path)  # downloaded once to a local mirror
    if not os.path.isdir(path):
        if not hf.looks_like_hub_id(path) or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise FileNotFoundError(f"model directory {path!r} does not exist; pass the directory that holds "
                                    "config.json and model.safetensors")
        path = hf.resolve_path(path)  # a hub id, when online
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path!r} has no config.json; is it a Hugging Face / jaxdistill model directory?")
    return path


def validate_config(config) -> None:
    """Errors that need neither model nor data, raised before anything is loaded."""
    problems = []
    for name in ("max_length", "batch_size", "eval_batch_size", "log_every"):
        if int(config.get(name, 1)) <= 0:
            problems.append(f"{name} must be positive (got {config.get(name)})")
    if int(config.get("steps", 0) or 0) < 0:
        problems.append(f"steps must be >= 0 (0 = use epochs), got {config.steps}")
    if not int(config.get("steps", 0) or 0) and float(config.epochs) <= 0:
        problems.append(f"epochs must be positive when steps is 0 (got {config.epochs})")
    if float(config.lr) <= 0:
        problems.append(f"lr must be positive (got {config.lr})")
    if not 0.0 <= float(config.warmup_ratio) < 1.0:
        problems.append(f"warmup_ratio must be in [0, 1) (got {config.warmup_ratio})")
    if int(config.get("eval_every", 0) or 0) < 0:
        problems.append(f"eval_every must be >= 0 (0 = every epoch), got {config.eval_every}")
    if config.get("dtype", "float32") not in DTYPES:
        problems.append(f"dtype {config.get('dtype')!r} is not one of {DTYPES}")
    if int(config.get("num_labels", 0) or 0) < 0:
        problems.append(f"num_labels must be >= 0 (0 = from the task), got {config.num_labels}")
    if problems:
        raise ConfigError("invalid finetune config: " + "; ".join(problems))


def optimizer_config(config, total_steps: int) -> OptimizerConfig:
    """The fine-tuning optimizer: AdamW with `warmup_ratio` of `total_steps` warm-up, then linear decay."""
    return OptimizerConfig(lr=float(config.lr), steps=total_steps,
                           warmup_steps=int(round(float(config.warmup_ratio) * total_steps)), decay="linear",
                           b1=float(config.get("b1", 0.9)), b2=float(config.get("b2", 0.999)),
                           eps=float(config.get("eps", 1e-6)), weight_decay=float(config.get("weight_decay", 0.0)),
                           grad_clip=float(config.get("grad_clip", 0.0) or 0.0))


# ---------------------------------------------------------------------------------------------- forward
@functools.lru_cache(maxsize=8)
def _predict_fn(model_config: BertConfig, mesh, rules):
    model = Bert(model_config)

    def forward(params, batch):
        out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                          deterministic=True)
        return out.logits.astype(jnp.float32)

    return shard_lib.jit_with_rules(forward, rules, mesh,
                                    out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def _default_mesh():
    return shard_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})


def predict_logits(model_config: BertConfig, params, arrays: Mapping[str, np.ndarray], batch_size: int, *,
                   mesh=None, rules=None) -> np.ndarray:
    """Classification logits of every row of `arrays`, in batches, with a jitted forward.

    Args:
      model_config: a config with `num_labels > 0`.
      params: the model's params (NumPy or already-placed jax arrays).
      arrays: `input_ids`, `attention_mask`, `token_type_ids` int32 [N, L] (other keys are ignored).
      batch_size: rows per forward; rounded up to a multiple of the mesh's data x fsdp size. The last batch is
        padded by repeating its last row, and pad rows are dropped from the result.
      mesh / rules: the mesh (default: all devices on `data`) and logical-axis rules (default table).
    Returns: float32 [N, num_labels].
    """
    if not model_config.num_labels:
        raise ModelError("this model has no classification head (num_labels=0); fine-tune it first "
                         "(jaxdistill finetune) or load it with num_labels")
    mesh = mesh if mesh is not None else _default_mesh()
    rules = shard_lib.rules_from_config(None) if rules is None else tuple(rules)
    n_dp = mesh.shape["data"] * mesh.shape["fsdp"]
    B = int(math.ceil(int(batch_size) / n_dp) * n_dp)
    fn = _predict_fn(model_config, mesh, rules)
    batch_sh = shard_lib.batch_sharding(mesh)
    n = int(np.shape(arrays["input_ids"])[0])
    out = np.zeros((n, model_config.num_labels), np.float32)
    for start in range(0, n, B):
        rows = np.arange(start, start + B)
        rows = np.minimum(rows, n - 1)  # pad rows repeat the last real row (a finite, masked-right input)
        batch = {k: jax.device_put(np.asarray(arrays[k])[rows].astype(np.int32), batch_sh) for k in INPUT_KEYS}
        logits = np.asarray(jax.device_get(fn(params, batch)))
        take = min(B, n - start)
        out[start:start + take] = logits[:take]
    return out


# --------------------------------------------------------------------------------------------- the step
def _loss(logits, labels, regression: bool):
    """Mean cross-entropy over int labels [B] (logits [B, C]), or MSE of logits[:, 0] vs float labels [B]."""
    logits = logits.astype(jnp.float32)
    if regression:
        return jnp.mean(jnp.square(logits[:, 0] - labels.astype(jnp.float32)))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32)))


def _build_train_step(model_config: BertConfig, tx, regression: bool, dropout: bool, mesh, rules, state_sh):
    model = Bert(model_config)

    def loss_fn(params, batch, rng):
        out = model.apply({"params": params["student"]}, batch["input_ids"], batch["attention_mask"],
                          batch["token_type_ids"], deterministic=not dropout, rngs={"dropout": rng})
        return _loss(out.logits, batch["labels"], regression)

    def train_step(state, batch):
        rng, step_rng = jax.random.split(state.rng)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return shard_lib.jit_with_rules(train_step, rules, mesh, in_shardings=(state_sh, shard_lib.batch_sharding(mesh)),
                                    out_shardings=(state_sh, replicated), donate_argnums=(0,))


def _stream_rows(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Row indices [B] of training batch `step` (see the module docstring)."""
    flat = np.int64(step) * batch_size + np.arange(batch_size, dtype=np.int64)
    epoch, pos = np.divmod(flat, n)
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = np.random.default_rng([seed, int(e)]).permutation(n)[pos[sel]]
    return out


def _fresh_classifier(model_config: BertConfig, num_labels: int, seed: int) -> Dict[str, np.ndarray]:
    """A new head as Bert initializes it: kernel ~ N(0, initializer_range) [d, C], bias zeros [C]."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    kernel = model_config.initializer_range * jax.random.normal(key, (model_config.hidden_size, num_labels),
                                                                jnp.float32)
    return {"kernel": np.asarray(kernel), "bias": np.zeros((num_labels,), np.float32)}


def _load_task(config_or_task_cfg, tokenizer_dir: str, max_length: int, max_positions: int):
    from jaxdistill.data import load_task
    if max_length > max_positions:
        raise ConfigError(f"max_length={max_length} is above the model's max_position_embeddings={max_positions}; "
                         f"set max_length <= {max_positions}")
    return load_task(config_or_task_cfg, tokenizer_dir, max_length, max_positions=max_positions)


def _label_config(path: str, model_config: BertConfig, task) -> None:
    """Writes the task's label names into the saved config.json (id2label/label2id) for readability."""
    if not task.label_names or len(task.label_names) != model_config.num_labels:
        return
    cfg_path = storage.join(path, "config.json")
    d = storage.read_json(cfg_path)
    d["id2label"] = {str(i): str(n) for i, n in enumerate(task.label_names)}
    d["label2id"] = {str(n): i for i, n in enumerate(task.label_names)}
    d["problem_type"] = "single_label_classification"
    storage.write_json(cfg_path, d, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------- the run
def finetune_and_evaluate(config, workdir: str) -> dict:
    """Fine-tunes `config.model` on `config.task` and evaluates it on the validation split.

    Writes `<workdir>/metrics.jsonl` (one line per log/eval step) and, with `save_model`, the fine-tuned
    model as a Hugging Face directory at `<workdir>/model`. Returns
    {"metrics": final validation metrics, "history": [{"step", "epoch", "train/loss", ... "eval/<m>"}],
     "steps": n, "train_time_s": seconds in train steps (compilation included), "num_labels", "task",
     "model_dir" (when saved)}.
    Raises ValueError / FileNotFoundError / FileExistsError / data.TaskError before any compilation for a
    missing model, a non-empty `<workdir>/model`, max_length above the model's positions, a num_labels that
    does not match the task, or a batch that the mesh does not divide.
    """
    validate_config(config)
    model_path = _check_model_dir(str(config.model))
    workdir = storage.absolute(workdir)
    model_out = storage.join(workdir, "model")
    save_model = bool(config.get("save_model", False))
    if save_model and storage.listdir(model_out) and not config.get("overwrite", False):
        raise OutputExistsError(f"{model_out!r} already holds a model; pass overwrite=True (--config.overwrite=True) "
                                "or use a new workdir")
    storage.check_writable(workdir, "the workdir")  # before the training, not after it
    tokenizer_dir = str(config.get("tokenizer") or "") or model_path
    if storage.is_remote(tokenizer_dir):
        tokenizer_dir = hf.resolve_path(tokenizer_dir)
    seed, max_length = int(config.seed), int(config.max_length)
    task = _load_task(config.task, tokenizer_dir, max_length, hf.load_config(model_path).max_position_embeddings)
    want = int(config.get("num_labels", 0) or 0)
    if want and want != task.num_labels:
        raise ConfigError(f"num_labels={want} but task {task.name!r} has {task.num_labels} "
                         f"({'regression' if task.kind == 'regression' else task.label_names}); "
                         "set num_labels=0 to take it from the task")
    regression = task.kind == "regression"
    n_train = int(task.train["input_ids"].shape[0])
    B = int(config.batch_size)
    mesh = shard_lib.make_mesh(dict(config.get("mesh", {}) or {}))
    rules = shard_lib.rules_from_config(config.get("sharding_rules"))
    shard_lib.check_batch_divisible(B, mesh.devices.shape, jax.process_count(), field="batch_size")
    steps_per_epoch = n_train / B
    total = int(config.get("steps", 0) or 0) or int(math.ceil(float(config.epochs) * steps_per_epoch))

    # The encoder (+ pooler; the MLM head is not needed), then a fresh head for the task.
    enc_cfg, params = hf.load(model_path, with_mlm_head=False, with_pooler=True, num_labels=0, seed=seed,
                              dtype=str(config.get("dtype", "float32")), remat=False)
    model_cfg = enc_cfg.replace(num_labels=task.num_labels)
    params = dict(params, classifier=_fresh_classifier(model_cfg, task.num_labels, seed))

    opt_cfg = optimizer_config(config, total)
    tx = make_optimizer(opt_cfg)
    state, state_sh = create_state(model_cfg, params, tx, mesh, rules, seed)
    step_fn = _build_train_step(model_cfg, tx, regression, bool(config.get("dropout", True)), mesh, rules, state_sh)
    lr_at = make_lr_schedule(opt_cfg)
    eval_bs = int(config.eval_batch_size)

    def run_eval() -> Dict[str, float]:
        logits = predict_logits(model_cfg, state.student, task.validation, eval_bs, mesh=mesh, rules=rules)
        return {k: float(v) for k, v in task.compute_metrics(logits, task.validation["labels"]).items()}

    writer = metrics_lib.MetricWriter(workdir, total, 0, tensorboard=bool(config.get("tensorboard", False)),
                                      progress=bool(config.get("progress", True)), desc="finetune")
    log.info("finetune: %s on %s (%d train / %d validation examples, %d labels), %d steps at batch %d",
             model_path, task.name, n_train, task.validation["input_ids"].shape[0], task.num_labels, total, B)
    local_rows = process_rows(B)
    eval_every, log_every = int(config.get("eval_every", 0) or 0), int(config.log_every)
    history, pending, final, eval_time = [], [], {}, 0.0
    t_start = time.perf_counter()
    try:
        for step in range(total):
            rows = _stream_rows(step, B, n_train, seed)[local_rows]
            local = {k: task.train[k][rows] for k in (*INPUT_KEYS, "labels")}
            state, m = step_fn(state, shard_lib.global_batch(local, mesh))
            pending.append(m)
            done = step + 1
            epoch_end = math.floor(done * B / n_train) > math.floor(step * B / n_train)
            is_eval = done == total or (done % eval_every == 0 if eval_every else epoch_end)
            if done % log_every == 0 or is_eval:
                fetched, pending = jax.device_get(pending), []
                for i, m in enumerate(fetched):
                    metrics_lib.check_finite(done - len(fetched) + i + 1, m, "Lower lr or check the labels.")
                loss = float(np.mean([float(x["loss"]) for x in fetched]))
                rec = {"step": done, "epoch": done * B / n_train, "train/loss": loss,
                       "train/grad_norm": float(fetched[-1]["grad_norm"]), "train/lr": float(lr_at(done - 1))}
                if is_eval:
                    t0 = time.perf_counter()
                    final = run_eval()
                    eval_time += time.perf_counter() - t0
                    rec.update({f"eval/{k}": v for k, v in final.items()})
                history.append(rec)
                writer.write(done, {k: v for k, v in rec.items() if k != "step"})
            writer.advance(done)
        jax.block_until_ready(state)
    finally:
        writer.close()
    train_time = time.perf_counter() - t_start - eval_time
    summary = {"metrics": final, "history": history, "steps": total, "train_time_s": train_time,
               "num_labels": task.num_labels, "task": task.name}
    if save_model and jax.process_index() == 0:
        host = to_host(state.student)
        # A shape with no standard BERT form (a pruned student read from jaxdistill's own format) can only be
        # written in that format again.
        hf.export(model_cfg.replace(dtype="float32"), host, model_out, tokenizer_from=tokenizer_dir,
                  overwrite=bool(config.get("overwrite", False)), own_format=not has_standard_form(model_cfg))
        _label_config(model_out, model_cfg, task)
        summary["model_dir"] = model_out
    return summary


def evaluate(model_path: str, task_cfg, max_length: int = 128, batch_size: int = 128,
             tokenizer: Optional[str] = None) -> dict:
    """Scores a model that has its classification head on the task's validation split.

    Returns {"metrics": {name: value}, "num_examples": N, "task": name}. Raises before tokenizing when the
    model has no head, its num_labels differs from the task's, or max_length exceeds its positions.
    """
    model_path = _check_model_dir(str(model_path))
    from jaxdistill.models import bilstm
    if bilstm.is_bilstm_dir(model_path):  # a distilled BiLSTM student (jaxdistill distill, student.kind=bilstm)
        return evaluate_bilstm(model_path, task_cfg, max_length, batch_size, tokenizer)
    cfg = hf.load_config(model_path)
    if not cfg.num_labels:
        raise ModelError(f"{model_path!r} has no classification head (config.json has no id2label / "
                         "*ForSequenceClassification architecture); fine-tune it first with `jaxdistill finetune`")
    task = _load_task(task_cfg, tokenizer or model_path, int(max_length), cfg.max_position_embeddings)
    model_cfg, params = hf.load(model_path, with_mlm_head=False, with_pooler=True)
    if model_cfg.num_labels != task.num_labels:
        raise ModelError(f"the model's head has {model_cfg.num_labels} outputs but task {task.name!r} has "
                         f"{task.num_labels} labels; evaluate it on the task it was fine-tuned on")
    logits = predict_logits(model_cfg, params, task.validation, batch_size)
    metrics = {k: float(v) for k, v in task.compute_metrics(logits, task.validation["labels"]).items()}
    return {"metrics": metrics, "num_examples": int(logits.shape[0]), "task": task.name}


def evaluate_bilstm(model_path: str, task_cfg, max_length: int, batch_size: int, tokenizer: Optional[str]) -> dict:
    """`evaluate` for a saved BiLSTM student (`models.bilstm.save`): same result dict."""
    from jaxdistill.data.task_data import check_labels
    from jaxdistill.models import bilstm
    config, params, labels = bilstm.load(model_path)
    task = _load_task(task_cfg, tokenizer or model_path, int(max_length), int(max_length))
    check_labels(task, labels, config.num_labels, "model")
    logits = bilstm.predict_logits(config, params, task.validation, batch_size)
    metrics = {k: float(v) for k, v in task.compute_metrics(logits, task.validation["labels"]).items()}
    return {"metrics": metrics, "num_examples": int(logits.shape[0]), "task": task.name}


def benchmark_inference(model_path: str, batch_size: int = 32, seq_len: int = 128, iters: int = 10,
                        warmup: int = 2, dtype: str = "float32") -> float:
    """Seconds per batch of a jitted forward (encoder + pooler + head if present) on one device.

    Inputs are random token ids [batch_size, seq_len] with full attention; compilation and `warmup` calls
    are excluded; every timed call is waited for with block_until_ready. Returns the median over `iters`.
    """
    model_path = _check_model_dir(str(model_path))
    if min(batch_size, seq_len, iters) <= 0:
        raise ConfigError(f"batch_size, seq_len and iters must be positive (got {batch_size}, {seq_len}, {iters})")
    cfg, params = hf.load(model_path, with_mlm_head=False, with_pooler=True, dtype=dtype)
    if seq_len > cfg.max_position_embeddings:
        raise ConfigError(f"seq_len={seq_len} is above the model's max_position_embeddings={cfg.max_position_embeddings}")
    model = Bert(cfg)
    dev = jax.devices()[0]
    params = jax.device_put(params, dev)
    ids = jax.device_put(np.random.default_rng(0).integers(1, cfg.vocab_size, (batch_size, seq_len)).astype(np.int32),
                         dev)
    mask = jnp.ones_like(ids)

    @jax.jit
    def forward(p, x, m):
        out = model.apply({"params": p}, x, m)
        return out.logits if out.logits is not None else out.pooled

    for _ in range(max(1, warmup)):
        forward(params, ids, mask).block_until_ready()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        forward(params, ids, mask).block_until_ready()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
