"""Hugging Face BERT checkpoints in and out.

`load(path_or_id)` reads a directory with `config.json` and `model.safetensors` (or `pytorch_model.bin`
through torch's weights-only loader, when torch is installed) into `(BertConfig, params)`.
`export(config, params, out_dir)` writes a directory that `transformers.BertForMaskedLM` (or
`BertForSequenceClassification` / `BertModel`, by the heads present) loads with no missing or unexpected
weights. Models whose shapes a standard `BertConfig` cannot express (attention inner width != hidden, or a
kept attention scale) are written in jaxdistill's own format: the same tensor names, plus `head_dim` and
`attention_scale_dim` in `config.json` and `model_type: "jaxdistill-bert"`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import numpy as np

from jaxdistill.models.bert import BertConfig, init_params
from jaxdistill.errors import CheckpointError, OutputExistsError, StorageError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

BERT_MODEL_TYPES = ("bert",)
OWN_MODEL_TYPE = "jaxdistill-bert"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")



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
    """`name` or `org/name` that is not a local path (no leading ./, /, ~; nothing of that name exists)."""
    return path.count("/") <= 1 and not path.startswith((".", "/", "~")) and not os.path.exists(path)


def resolve_path(path_or_id: str) -> str:
    """A local model directory for `path_or_id`: the directory itself, or a hub id's snapshot when online."""
    if os.path.isdir(path_or_id):
        return path_or_id
    if os.path.exists(path_or_id):
        raise CheckpointError(f"{path_or_id!r} is a file; pass the directory that holds config.json")
    if not looks_like_hub_id(path_or_id):
        raise CheckpointError(f"checkpoint directory {path_or_id!r} does not exist")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(path_or_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.bin"])
    except Exception as e:  # offline, unknown id, no network
        raise CheckpointError(
            f"{path_or_id!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(e).__name__}: {e}). Pass a local directory with config.json and model.safetensors, "
            "or unset HF_HUB_OFFLINE when online.") from e


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
    tied to the word embeddings) when `with_mlm_head`; a missing pooler likewise. Both are logged.
    """
    directory = resolve_path(path_or_id)
    overrides = dict(config_overrides)
    if num_labels is not None:
        overrides["num_labels"] = num_labels
    config = load_config(directory, with_mlm_head=with_mlm_head, with_pooler=with_pooler, **overrides)
    tensors = {_normalize_key(k): v for k, v in _read_tensors(directory).items()}
    expected = expected_shapes(config)
    created, fresh_tensors = [], None
    for group, prefix in (("MLM head", "cls.predictions."), ("pooler", "bert.pooler."), ("classifier", "classifier.")):
        needed = [k for k in expected if k.startswith(prefix)]
        if needed and not any(k in tensors for k in needed):
            if fresh_tensors is None:
                fresh_tensors = _hf_tensors(config, init_params(config, jax.random.key(seed)))
            tensors.update({k: fresh_tensors[k] for k in needed})
            created.append(group)
    if created:
        log.warning("%s has no %s; created new one(s) (MLM decoder tied to the word embeddings).",
                    path_or_id, " / ".join(created))
    return config, params_from_hf_tensors(config, tensors)


# ----------------------------------------------------------------------------------------------- export
def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Raises OutputExistsError when `out_dir` is a file, or a non-empty directory and not `overwrite`."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"export target {out_dir!r} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise OutputExistsError(
            f"export directory {out_dir!r} exists and is not empty; choose a new directory or pass "
            "overwrite=True (--overwrite) to replace its files")


def export(config: BertConfig, params: Mapping[str, Any], out_dir: str, tokenizer_from: Optional[str] = None,
           overwrite: bool = False) -> str:
    """Writes `params` as a Hugging Face checkpoint directory and returns its format.

    Returns "hf" for a standard BERT directory, or "jaxdistill" for jaxdistill's own format (non-standard
    attention shapes, see module doc; a message says why). An MLM model is written as `BertForMaskedLM`
    (which has no pooler, so the pooler is left out); a classifier as `BertForSequenceClassification`;
    otherwise `BertModel`. Tokenizer files are copied from `tokenizer_from` when given.
    """
    check_out_dir(out_dir, overwrite)
    from safetensors.numpy import save_file

    tensors = _hf_tensors(config, params)
    hf_cfg = config.to_hf_dict()
    if config.num_labels:
        arch = "BertForSequenceClassification"
    elif config.with_mlm_head:
        arch = "BertForMaskedLM"
        tensors = {k: v for k, v in tensors.items() if not k.startswith("bert.pooler.")}
    else:
        arch = "BertModel"
        tensors = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in tensors.items()}
    fmt = "hf"
    if not config.is_standard:
        fmt = "jaxdistill"
        hf_cfg["model_type"] = OWN_MODEL_TYPE
        log.warning(
            "exporting in jaxdistill's own format: heads x head_dim = %d x %d != hidden %d or attention scale "
            "dim %d differs, which a standard BertConfig cannot express. Load it with jaxdistill.models.hf.load.",
            config.num_attention_heads, config.attention_head_size, config.hidden_size, config.scale_dim)
    hf_cfg["architectures"] = [arch]
    hf_cfg["tie_word_embeddings"] = True
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
        save_file(tensors, weights, metadata={"format": "pt"})
        os.chmod(weights, 0o666 & ~current_umask())  # safetensors writes 0600 through a temp file
        with open(os.path.join(partial, "config.json"), "w") as f:
            json.dump(hf_cfg, f, indent=2, sort_keys=True)
        for name in copied:
            shutil.copyfile(os.path.join(tokenizer_from, name), os.path.join(partial, name))
        publish(partial, out_dir)
    return fmt


def partial_dir(out_dir: str) -> str:
    """Where an export is written before it is renamed to `out_dir` (beside it, on the same filesystem)."""
    return os.path.abspath(out_dir).rstrip(os.sep) + ".partial"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(partial: str, out_dir: str) -> None:
    """Moves the finished export in `partial` to `out_dir`, as the export's last act: a missing or empty
    `out_dir` is replaced by renaming the whole directory, so it exists only complete; into a non-empty one
    (overwrite) each file is renamed over its old version, config.json last, and other files are kept."""
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
    except (OSError, SafetensorError) as e:
        where = getattr(e, "filename", None) or out_dir
        raise StorageError(f"exporting the model to {out_dir} failed writing {where} ({getattr(e, 'strerror', None) or e}); "
                           "nothing was exported: free space or fix permissions there, and rerun the same command"
                           ) from e
