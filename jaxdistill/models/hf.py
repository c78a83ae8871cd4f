"""Hugging Face BERT checkpoints in and out.

`load(path_or_id)` reads a directory (or a hub id, `name[@revision]`, see `hub`) with `config.json` and
`model.safetensors` (or `pytorch_model.bin` through torch's weights-only loader, when torch is installed) into
`(BertConfig, params)`; `config_of(path_or_id)` reads only the config (for a hub id, only config.json is
fetched). `export(config, params, out_dir)` writes a standard BERT directory for every model jaxdistill
builds: non-standard attention shapes of compacted students are rewritten exactly (`standard_bert`), the
pooler is kept, and a model card (`model_card`) is written. transformers loads it with `AutoModel`,
`AutoModelForMaskedLM` and `pipeline("fill-mask")` with no missing weights and equal outputs; the only keys
one class leaves unused are the other class's head (the pooler for `BertForMaskedLM`, the MLM head for
`BertModel`), as with `bert-base-uncased`. With `own_format=True`, non-standard models are written unpadded
in jaxdistill's own format instead: the same tensor names, plus `head_dim` and `attention_scale_dim` in
`config.json` and `model_type: "jaxdistill-bert"`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import numpy as np

from jaxdistill import storage
from jaxdistill.models import hub, model_card, standard_bert
from jaxdistill.models.bert import BertConfig, init_params
from jaxdistill.errors import CheckpointError, OutputExistsError, StorageError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

BERT_MODEL_TYPES = ("bert",)
OWN_MODEL_TYPE = "jaxdistill-bert"
TOKENIZER_FILES = hub.TOKENIZER_FILES
# Parts `load` creates when a checkpoint lacks them: (name in messages, tensor-name prefix).
CREATED_PARTS = (("MLM head", "cls.predictions."), ("pooler", "bert.pooler."), ("classifier", "classifier."))



# ----------------------------------------------------------------------------------------------- naming
def _hf_tensors(config: BertConfig, params: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Our params -> HF state-dict names with PyTorch layouts (Linear weights are [out, in])."""
    d, H, dh = config.hidden_size, config.num_attention_heads, config.attention_head_size
    p = jax.tree.map(lambda a: np.asarray(a, dtype=np.float32), params)
    out: Dict[str, np.ndarray] = {}
    e = p["embeddings"]
    out["bert.embeddings.word_embeddings.weight"] = e["word_embeddings"]["embedding"]
    out["bert.embeddings.position_embeddings.weight"] = e["position_embeddings"]
    out["bert.embeddings.token_type_embeddings.weight"] = e["token_type_embeddings"]
    out["bert.embeddings.LayerNorm.weight"] = e["LayerNorm"]["scale"]
    out["bert.embeddings.LayerNorm.bias"] = e["LayerNorm"]["bias"]
    for i in range(config.num_hidden_layers):
        lp, pre = p[f"layer_{i}"], f"bert.encoder.layer.{i}."
        a = lp["attention"]
        for name in ("query", "key", "value"):
            out[pre + f"attention.self.{name}.weight"] = a[name]["kernel"].reshape(d, H * dh).T
            out[pre + f"attention.self.{name}.bias"] = a[name]["bias"].reshape(H * dh)
        out[pre + "attention.output.dense.weight"] = a["output"]["kernel"].reshape(H * dh, d).T
        out[pre + "attention.output.dense.bias"] = a["output"]["bias"]
        out[pre + "attention.output.LayerNorm.weight"] = a["LayerNorm"]["scale"]
        out[pre + "attention.output.LayerNorm.bias"] = a["LayerNorm"]["bias"]
        out[pre + "intermediate.dense.weight"] = lp["intermediate"]["kernel"].T
        out[pre + "intermediate.dense.bias"] = lp["intermediate"]["bias"]
        out[pre + "output.dense.weight"] = lp["output"]["kernel"].T
        out[pre + "output.dense.bias"] = lp["output"]["bias"]
        out[pre + "output.LayerNorm.weight"] = lp["LayerNorm"]["scale"]
        out[pre + "output.LayerNorm.bias"] = lp["LayerNorm"]["bias"]
    if "pooler" in p:
        out["bert.pooler.dense.weight"] = p["pooler"]["kernel"].T
        out["bert.pooler.dense.bias"] = p["pooler"]["bias"]
    if "mlm_transform" in p:
        out["cls.predictions.transform.dense.weight"] = p["mlm_transform"]["kernel"].T
        out["cls.predictions.transform.dense.bias"] = p["mlm_transform"]["bias"]
        out["cls.predictions.transform.LayerNorm.weight"] = p["mlm_LayerNorm"]["scale"]
        out["cls.predictions.transform.LayerNorm.bias"] = p["mlm_LayerNorm"]["bias"]
        out["cls.predictions.bias"] = p["mlm_bias"]
    if "classifier" in p:
        out["classifier.weight"] = p["classifier"]["kernel"].T
        out["classifier.bias"] = p["classifier"]["bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _normalize_key(key: str) -> str:
    """Maps the spellings found in the wild onto `_hf_tensors` names."""
    key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
    for prefix in ("model.", "module."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    return key


def expected_shapes(config: BertConfig) -> Dict[str, Tuple[int, ...]]:
    """HF tensor name -> shape for `config`, computed abstractly (nothing is allocated)."""
    template = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    zeros = jax.tree.map(lambda s: np.lib.stride_tricks.as_strided(np.zeros((), np.float32), s.shape,
                                                                    (0,) * len(s.shape)), template)
    return {k: tuple(v.shape) for k, v in _hf_tensors(config, zeros).items()}


def params_from_hf_tensors(config: BertConfig, tensors: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """HF state dict -> our params, checking every tensor's shape against `config` (names the tensor)."""
    tensors = {_normalize_key(k): v for k, v in tensors.items()}
    expected = expected_shapes(config)
    d, H, dh = config.hidden_size, config.num_attention_heads, config.attention_head_size
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise CheckpointError(
            f"checkpoint is missing {len(missing)} tensor(s) that the config needs, e.g. {missing[:3]}; "
            "is config.json the one that belongs to these weights?")
    for k, want in expected.items():
        got = tuple(np.shape(tensors[k]))
        if got != want:
            raise CheckpointError(
                f"tensor {k!r} has shape {got} but config.json implies {want}; "
                "the weights and config.json do not belong together")
    t = {k: np.asarray(tensors[k], dtype=np.float32) for k in expected}
    p: Dict[str, Any] = {"embeddings": {
        "word_embeddings": {"embedding": t["bert.embeddings.word_embeddings.weight"]},
        "position_embeddings": t["bert.embeddings.position_embeddings.weight"],
        "token_type_embeddings": t["bert.embeddings.token_type_embeddings.weight"],
        "LayerNorm": {"scale": t["bert.embeddings.LayerNorm.weight"], "bias": t["bert.embeddings.LayerNorm.bias"]},
    }}
    for i in range(config.num_hidden_layers):
        pre = f"bert.encoder.layer.{i}."
        att = {name: {"kernel": t[pre + f"attention.self.{name}.weight"].T.reshape(d, H, dh),
                      "bias": t[pre + f"attention.self.{name}.bias"].reshape(H, dh)}
               for name in ("query", "key", "value")}
        att["output"] = {"kernel": t[pre + "attention.output.dense.weight"].T.reshape(H, dh, d),
                         "bias": t[pre + "attention.output.dense.bias"]}
        att["LayerNorm"] = {"scale": t[pre + "attention.output.LayerNorm.weight"],
                            "bias": t[pre + "attention.output.LayerNorm.bias"]}
        p[f"layer_{i}"] = {
            "attention": att,
            "intermediate": {"kernel": t[pre + "intermediate.dense.weight"].T, "bias": t[pre + "intermediate.dense.bias"]},
            "output": {"kernel": t[pre + "output.dense.weight"].T, "bias": t[pre + "output.dense.bias"]},
            "LayerNorm": {"scale": t[pre + "output.LayerNorm.weight"], "bias": t[pre + "output.LayerNorm.bias"]},
        }
    if config.with_pooler:
        p["pooler"] = {"kernel": t["bert.pooler.dense.weight"].T, "bias": t["bert.pooler.dense.bias"]}
    if config.with_mlm_head:
        p["mlm_transform"] = {"kernel": t["cls.predictions.transform.dense.weight"].T,
                              "bias": t["cls.predictions.transform.dense.bias"]}
        p["mlm_LayerNorm"] = {"scale": t["cls.predictions.transform.LayerNorm.weight"],
                              "bias": t["cls.predictions.transform.LayerNorm.bias"]}
        p["mlm_bias"] = t["cls.predictions.bias"]
    if config.num_labels:
        p["classifier"] = {"kernel": t["classifier.weight"].T, "bias": t["classifier.bias"]}
    return p


# ------------------------------------------------------------------------------------------------- load
def looks_like_hub_id(path: str) -> bool:
    """`name` or `org/name`, optionally `@revision`, that is not a local path (see `hub.looks_like_hub_id`)."""
    return hub.looks_like_hub_id(path)


def resolve_path(path_or_id: str) -> str:
    """A local model directory for `path_or_id`: the directory itself, or a hub id's snapshot (safetensors
    only when the repository has them; from the cache offline). Raises CheckpointError for a missing
    directory and ModelError (exit 3, naming the download command) for an unreachable hub id. A gs:// model
    directory is downloaded to a local mirror (`storage.local_copy`) and that is returned."""
    if storage.is_remote(path_or_id):
        try:
            return storage.local_copy(path_or_id)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint directory {path_or_id!r} does not exist") from None
    if os.path.isdir(path_or_id):
        return path_or_id
    if os.path.exists(path_or_id):
        raise CheckpointError(f"{path_or_id!r} is a file; pass the directory that holds config.json")
    if not looks_like_hub_id(path_or_id):
        raise CheckpointError(f"checkpoint directory {path_or_id!r} does not exist")
    return hub.download_model(path_or_id)


def config_of(path_or_id: str, **overrides) -> BertConfig:
    """The BertConfig of a local directory or a hub id without loading weights: for a hub id only its
    config.json is fetched (or read from the cache). Raises like `resolve_path`."""
    if os.path.isdir(path_or_id) or not looks_like_hub_id(path_or_id):
        return load_config(resolve_path(path_or_id), **overrides)
    return load_config(os.path.dirname(hub.fetch_config(path_or_id)), **overrides)


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """The tensors of one safetensors file; an unreadable or corrupt file is a CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return dict(load_file(path))
    except PermissionError as e:
        raise CheckpointError(f"cannot read {path}: permission denied; fix its permissions") from e
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:160]}); it is "
                              "truncated or corrupt: download or export it again") from e


def read_torch_weights(path: str) -> Dict[str, np.ndarray]:
    """A `pytorch_model.bin` read with torch's weights-only loader. A file it rejects (it holds pickled objects
    other than tensors) is refused, never unpickled unsafely; a corrupt one is named."""
    import pickle
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds pickled Python objects besides tensors, which jaxdistill does not load (unpickling "
            "them can run arbitrary code). Use a checkpoint with model.safetensors, or convert this one to "
            "safetensors on a machine and with code you trust") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0][:160]}); it "
                              "is truncated or corrupt: download it again") from e
    return {k: v.float().numpy() for k, v in state.items()}


def _read_tensors(directory: str) -> Dict[str, np.ndarray]:
    st = os.path.join(directory, "model.safetensors")
    if os.path.exists(st):
        return read_safetensors(st)
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors: Dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(read_safetensors(os.path.join(directory, shard)))
        return tensors
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(binary):
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{directory} has only pytorch_model.bin, which needs torch to read; install torch==2.13.0 "
                "or convert the checkpoint to model.safetensors") from e
        return read_torch_weights(binary)
    raise CheckpointError(
        f"no weights in {directory}: expected model.safetensors (or model.safetensors.index.json, or "
        "pytorch_model.bin)")


def load_config(directory: str, **overrides) -> BertConfig:
    cfg_path = os.path.join(directory, "config.json")
    if not os.path.exists(cfg_path):
        raise CheckpointError(f"no config.json in {directory}; a Hugging Face checkpoint directory needs one")
    with open(cfg_path) as f:
        raw = json.load(f)
    model_type = raw.get("model_type")
    if model_type not in BERT_MODEL_TYPES + (OWN_MODEL_TYPE,):
        raise CheckpointError(
            f"model_type {model_type!r} in {cfg_path} is not BERT; jaxdistill reads BERT checkpoints "
            f"(model_type one of {BERT_MODEL_TYPES + (OWN_MODEL_TYPE,)})")
    return BertConfig.from_hf_dict(raw, **overrides)


def load(path_or_id: str, *, with_mlm_head: bool = True, with_pooler: bool = True, num_labels: Optional[int] = None,
         seed: int = 0, **config_overrides) -> Tuple[BertConfig, Dict[str, Any]]:
    """Loads a BERT checkpoint as `(BertConfig, params)` (float32 NumPy arrays in our layout).

    A checkpoint without `cls.predictions.*` gets a fresh MLM head (transform and bias from `seed`, decoder
    tied to the word embeddings) when `with_mlm_head`; a missing pooler or classifier likewise. Each created
    part is logged by name.
    """
    directory = resolve_path(path_or_id)
    overrides = dict(config_overrides)
    if num_labels is not None:
        overrides["num_labels"] = num_labels
    config = load_config(directory, with_mlm_head=with_mlm_head, with_pooler=with_pooler, **overrides)
    tensors = {_normalize_key(k): v for k, v in _read_tensors(directory).items()}
    expected = expected_shapes(config)
    fresh_tensors = None
    for group, prefix in CREATED_PARTS:
        needed = [k for k in expected if k.startswith(prefix)]
        if needed and not any(k in tensors for k in needed):
            if fresh_tensors is None:
                fresh_tensors = _hf_tensors(config, init_params(config, jax.random.key(seed)))
            tensors.update({k: fresh_tensors[k] for k in needed})
            log.warning("%s has no %s (%s*); created a new one from seed %d%s.", path_or_id, group, prefix, seed,
                        " (its decoder is tied to the word embeddings)" if group == "MLM head" else "")
    return config, params_from_hf_tensors(config, tensors)


# ----------------------------------------------------------------------------------------------- export
def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Raises OutputExistsError when `out_dir` is a file, or a non-empty directory and not `overwrite`."""
    if storage.isfile(out_dir):
        raise OutputExistsError(f"export target {out_dir!r} exists and is not a directory")
    if storage.listdir(out_dir) and not overwrite:
        raise OutputExistsError(
            f"export directory {out_dir!r} exists and is not empty; choose a new directory or pass "
            "overwrite=True (--overwrite) to replace its files")


def host_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    """`params` as host NumPy arrays, unboxing the `nn.with_logical_partitioning` boxes that `Bert.init` (and
    `init_params(..., unbox=False)`) return."""
    import flax.linen as nn
    return jax.tree.map(np.asarray, nn.meta.unbox(params))


def parts_of(config: BertConfig, params: Mapping[str, Any]) -> Dict[str, Any]:
    """`params` without the heads `config` does not have (a pooler, MLM head or classifier left in the tree)."""
    absent = set()
    if not config.with_pooler:
        absent.add("pooler")
    if not config.with_mlm_head:
        absent.update(("mlm_transform", "mlm_LayerNorm", "mlm_bias"))
    if not config.num_labels:
        absent.add("classifier")
    return {k: v for k, v in params.items() if k not in absent}


def architecture_of(config: BertConfig) -> str:
    """The transformers class an export is written as: a classifier, an MLM model, or the bare encoder."""
    if config.num_labels:
        return "BertForSequenceClassification"
    return "BertForMaskedLM" if config.with_mlm_head else "BertModel"


def write_files(out_dir: str, hf_config: dict, tensors: Mapping[str, np.ndarray], tokenizer_from: Optional[str],
                write_extra: Callable[[str], None] = lambda directory: None) -> None:
    """Writes model.safetensors (mode 0644 under the usual umask), config.json, the tokenizer files and
    whatever `write_extra(directory)` adds into `<out_dir>.partial`, then publishes it as `out_dir` as the
    last act (`publish`): an interrupted export leaves no half-written `out_dir`."""
    from safetensors.numpy import save_file
    if tokenizer_from and (storage.is_remote(tokenizer_from) or
                           (not os.path.isdir(tokenizer_from) and looks_like_hub_id(tokenizer_from))):
        tokenizer_from = resolve_path(tokenizer_from)  # a hub teacher's tokenizer from the cache, a gs:// mirror
    copied = []
    if tokenizer_from:
        copied = [n for n in TOKENIZER_FILES if os.path.exists(os.path.join(tokenizer_from, n))]
        if not copied:
            raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {tokenizer_from!r}")
    partial = partial_dir(out_dir)
    with export_storage_errors(out_dir):
        shutil.rmtree(partial, ignore_errors=True)  # left by an export that was interrupted
        os.makedirs(partial)
        weights = os.path.join(partial, "model.safetensors")
        save_file(dict(tensors), weights, metadata={"format": "pt"})
        os.chmod(weights, 0o666 & ~current_umask())  # safetensors writes 0600 through a temp file
        with open(os.path.join(partial, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2, sort_keys=True)
        for name in copied:
            shutil.copyfile(os.path.join(tokenizer_from, name), os.path.join(partial, name))
        write_extra(partial)
        publish(partial, out_dir)


def partial_dir(out_dir: str) -> str:
    """Where an export is written before it is renamed to `out_dir` (beside it, on the same filesystem); for
    a gs:// `out_dir`, a local temporary directory that `publish` uploads."""
    if storage.is_remote(out_dir):
        return tempfile.mkdtemp(prefix="jaxdistill-export-")
    return os.path.abspath(out_dir).rstrip(os.sep) + ".partial"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(partial: str, out_dir: str) -> None:
    """Moves the finished export in `partial` to `out_dir`, as the export's last act: a missing or empty
    `out_dir` is replaced by renaming the whole directory, so it exists only complete; into a non-empty one
    (overwrite) each file is renamed over its old version, config.json last, and other files are kept.
    To a gs:// `out_dir` the files are uploaded, config.json last: an export without config.json is not one."""
    if storage.is_remote(out_dir):
        try:
            storage.upload_dir(partial, out_dir, last="config.json")
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return
    if os.path.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)
    if not os.path.lexists(out_dir):
        os.rename(partial, out_dir)
        return
    names = sorted(os.listdir(partial), key=lambda name: name == "config.json")
    for name in names:
        os.replace(os.path.join(partial, name), os.path.join(out_dir, name))
    os.rmdir(partial)


@contextlib.contextmanager
def export_storage_errors(out_dir: str):
    """A failed write of the export (disk full, permission denied) -> StorageError naming the file and fix."""
    from safetensors import SafetensorError
    try:
        yield
    except StorageError:
        raise
    except (OSError, SafetensorError) as e:
        where = getattr(e, "filename", None) or out_dir
        raise StorageError(f"exporting the model to {out_dir} failed writing {where} ({getattr(e, 'strerror', None) or e}); "
                           "nothing was exported: free space or fix permissions there, and rerun the same command"
                           ) from e


def export(config: BertConfig, params: Mapping[str, Any], out_dir: str, tokenizer_from: Optional[str] = None,
           overwrite: bool = False, *, own_format: bool = False,
           metadata: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Writes `params` as a model directory with a model card (`README.md`); returns what it wrote.

    By default every model is written as a standard BERT (`model_type: "bert"`) that transformers'
    `AutoModel`, `AutoModelForMaskedLM` and pipelines load with equal outputs: a non-standard attention
    shape is rewritten exactly by `standard_bert.to_standard` (attention scale folded into the query, heads
    zero-padded), at the cost reported as `padding_params`. `own_format=True` writes such a model unpadded in
    jaxdistill's own format instead (`model_type: "jaxdistill-bert"`, read by `load`). An MLM model is
    written as `BertForMaskedLM` with its pooler kept (so `AutoModel` misses nothing), a classifier as
    `BertForSequenceClassification`, otherwise `BertModel`; heads the config does not have (`with_pooler`,
    `with_mlm_head`, `num_labels`) are left out even when `params` holds them. `params` may be boxed as `Bert.init` returns
    them. Tokenizer files are copied from `tokenizer_from` (a directory or hub id) when given; `metadata` goes
    into the model card (see `model_card`).

    Returns {"format": "hf" | "jaxdistill", "architecture", "out_dir", "params" (parameters written),
    "padding_params", "padding_fraction", "added_heads", "query_scale", "kept_head_dim"}.
    """
    check_out_dir(out_dir, overwrite)
    params = parts_of(config, host_params(params))
    info: Dict[str, Any] = dict(format="hf", architecture=architecture_of(config), out_dir=out_dir,
                                padding_params=0, added_heads=0, query_scale=1.0,
                                kept_head_dim=config.attention_head_size)
    if own_format and not config.is_standard:
        info["format"] = "jaxdistill"
        log.info("exporting in jaxdistill's own format (heads x head_dim = %d x %d, hidden %d, attention scale "
                 "dim %d); load it with jaxdistill.models.hf.load", config.num_attention_heads,
                 config.attention_head_size, config.hidden_size, config.scale_dim)
    else:
        form = standard_bert.to_standard(config, params)
        config, params = form.config, form.params
        info.update(padding_params=form.padding_params, added_heads=form.added_heads, query_scale=form.query_scale)
        if form.padding_params:
            log.info("exporting as a standard BERT: heads padded from %d x %d to %d x %d (+%d zero parameters)",
                     config.num_attention_heads - form.added_heads, form.kept_head_dim,
                     config.num_attention_heads, config.attention_head_size, form.padding_params)
    info["params"] = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    info["padding_fraction"] = info["padding_params"] / max(info["params"], 1)
    tensors = _hf_tensors(config, params)
    if info["architecture"] == "BertModel":
        tensors = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in tensors.items()}
    hf_config = config.to_hf_dict()
    hf_config.update(architectures=[info["architecture"]], tie_word_embeddings=True)
    if info["format"] == "jaxdistill":
        hf_config["model_type"] = OWN_MODEL_TYPE
    write_files(out_dir, hf_config, tensors, tokenizer_from,
                lambda directory: model_card.write(directory, config, info, metadata))
    return info
