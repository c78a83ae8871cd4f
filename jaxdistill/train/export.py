"""A distilled student out of the engine: compacted (HomoDistil) and written as a Hugging Face directory.

`export_student(...)` is the last act of a finished run; `export_from_workdir(workdir, out_dir)` does the
same from a run's saved checkpoint (its newest, or `step`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np

from jaxdistill import checkpoint as ckpt_lib
from jaxdistill import pruning
from jaxdistill.models import BertConfig, hf


def export_student(student_config: BertConfig, student_params, masks: Optional[Mapping[str, Any]], out_dir: str,
                   tokenizer_from: Optional[str], overwrite: bool = False) -> dict:
    """Compacts a masked student (when `masks` is non-empty) and exports it with `hf.export`.

    student_params / masks: host NumPy trees. Returns {"format", "out_dir", "params" (exported parameter
    count), and for a pruned student "widths" (`pruning.remaining_widths`) and "param_counts"
    (`pruning.count_params`)}.
    """
    out_cfg = student_config.replace(dtype="float32", remat=False)
    result = {}
    if masks:
        result["widths"] = pruning.remaining_widths(masks)
        result["param_counts"] = pruning.count_params(out_cfg, masks)
        out_cfg, student_params = pruning.compact(out_cfg, student_params, masks)
    result["format"] = hf.export(out_cfg, student_params, out_dir, tokenizer_from=tokenizer_from,
                                 overwrite=overwrite)
    result["out_dir"] = out_dir
    result["params"] = int(sum(np.size(x) for x in jax.tree.leaves(student_params)))
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
                        dtype="float32", remat=False)


def export_from_workdir(workdir: str, out_dir: str, step: Optional[int] = None, overwrite: bool = False) -> dict:
    """Exports the student of a distillation workdir (its newest checkpoint, or `step`) to `out_dir`.

    The masked student is compacted first (HomoDistil), then written as a Hugging Face directory (or in
    jaxdistill's own format when its shapes need it) with the teacher's tokenizer files.
    Returns {"step", "format", "out_dir", "params"}.
    """
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{workdir!r} is not a jaxdistill workdir (no config.json); pass the --workdir "
                                "of a `jaxdistill distill` run")
    hf.check_out_dir(out_dir, overwrite)
    with open(cfg_path) as f:
        config = json.load(f)
    step, state = ckpt_lib.read_state(os.path.join(os.path.abspath(workdir), "checkpoints"), step)
    student = jax.tree.map(np.asarray, state["params"]["student"])
    teacher_path = config["teacher"]["path"]
    tokenizer = config["teacher"].get("tokenizer") or teacher_path
    base = hf.load_config(teacher_path) if os.path.isdir(teacher_path) else BertConfig()
    masks = jax.tree.map(np.asarray, state.get("masks") or {})
    result = export_student(config_from_params(base, student), student, masks, out_dir,
                            tokenizer if os.path.isdir(tokenizer) else None, overwrite=overwrite)
    return {"step": step, "format": result["format"], "out_dir": out_dir, "params": result["params"]}
