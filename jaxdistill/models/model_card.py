"""The model card (`README.md`) written into every export: what the model is and how it was made.

`render(config, export_info, metadata)` takes the exported `BertConfig`, what `hf.export` knows about the
files it wrote (`export_info`: format, architecture, parameter count, padding overhead) and what the caller
knows about the run (`metadata`, all optional): `teacher`, `recipe`, `steps`, `held_out_kl` (teacher-student
KL on held-out MLM predictions), `command` (the command line that made the model), `widths` (the kept widths
of a pruned student, as `pruning.remaining_widths` gives them), `teacher_params`.
"""
from __future__ import annotations

import json
import os
from typing import Any, List, Mapping, Optional

from jaxdistill.models.bert import BertConfig

CARD_NAME = "README.md"


def _millions(n: Any) -> str:
    return f"{n / 1e6:.2f}M ({n:,})" if isinstance(n, (int, float)) else str(n)


def _front_matter(config: BertConfig, export_info: Mapping[str, Any]) -> List[str]:
    lines = ["---", "library_name: transformers" if export_info.get("format") == "hf" else "library_name: jaxdistill",
             "tags:", "- bert", "- distillation", "- jaxdistill"]
    if config.with_mlm_head and not config.num_labels:
        lines.append("pipeline_tag: fill-mask")
    elif config.num_labels:
        lines.append("pipeline_tag: text-classification")
    return lines + ["---", ""]


def _shape_rows(config: BertConfig, export_info: Mapping[str, Any]) -> List[str]:
    kept = export_info.get("kept_head_dim", config.attention_head_size)
    added = int(export_info.get("added_heads", 0) or 0)
    heads = f"{config.num_attention_heads} x {config.attention_head_size}"
    if export_info.get("padding_params"):
        heads += (f" (of which {config.num_attention_heads - added} heads x {kept} dimensions are real; the rest "
                  "is zero padding that makes it a standard BERT)")
    return [f"| layers | {config.num_hidden_layers} |", f"| hidden size | {config.hidden_size} |",
            f"| attention heads x head dim | {heads} |", f"| FFN size | {config.intermediate_size} |",
            f"| vocabulary | {config.vocab_size} |"]


def _run_rows(metadata: Mapping[str, Any]) -> List[str]:
    rows = []
    for key, label in (("teacher", "teacher"), ("recipe", "recipe"), ("steps", "training steps")):
        if metadata.get(key) is not None:
            rows.append(f"| {label} | {metadata[key]} |")
    if metadata.get("teacher_params") is not None:
        rows.append(f"| teacher parameters | {_millions(metadata['teacher_params'])} |")
    kl = metadata.get("held_out_kl")
    if kl is not None:
        rows.append(f"| held-out teacher-student KL | {kl:.4f} |" if isinstance(kl, (int, float)) else
                    f"| held-out teacher-student KL | {kl} |")
    widths = metadata.get("widths")
    if widths:
        rows.append(f"| kept widths (per layer) | `{json.dumps(widths, sort_keys=True)}` |")
    return rows


def _usage(config: BertConfig, export_info: Mapping[str, Any]) -> List[str]:
    if export_info.get("format") != "hf":
        return ["This directory is in jaxdistill's own format (non-standard attention shapes); load it with",
                "`jaxdistill.models.hf.load(path)`. Export without `--own-format` for a standard BERT.", ""]
    if config.with_mlm_head and not config.num_labels:
        code = ["from transformers import pipeline", "fill = pipeline(\"fill-mask\", model=\"PATH\")",
                "fill(\"The capital of France is [MASK].\")"]
    else:
        code = ["from transformers import AutoModel", "model = AutoModel.from_pretrained(\"PATH\")"]
    return ["A standard BERT: `transformers` loads it with `AutoModel`, `AutoModelForMaskedLM` and pipelines.",
            "", "```python", *code, "```", ""]


def render(config: BertConfig, export_info: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None) -> str:
    """The card's Markdown text (see the module docstring)."""
    metadata = dict(metadata or {})
    lines = _front_matter(config, export_info)
    title = "Distilled BERT" if metadata.get("teacher") else "BERT"
    lines += [f"# {title} ({export_info.get('architecture', 'BertModel')}, exported by jaxdistill)", ""]
    lines += _usage(config, export_info)
    lines += ["## Model", "", "| | |", "|---|---|", *_shape_rows(config, export_info),
              f"| parameters | {_millions(export_info.get('params'))} |"]
    if export_info.get("padding_params"):
        lines.append(f"| of which zero padding | {_millions(export_info['padding_params'])} "
                     f"({export_info.get('padding_fraction', 0):.1%}) |")
    if export_info.get("query_scale", 1.0) != 1.0:
        lines.append(f"| attention scale folded into the query | x {export_info['query_scale']:.6g} |")
    lines.append("")
    run = _run_rows(metadata)
    if run:
        lines += ["## How it was made", "", "| | |", "|---|---|", *run, ""]
    if metadata.get("command"):
        lines += ["Command:", "", "```bash", str(metadata["command"]), "```", ""]
    return "\n".join(lines)


def write(out_dir: str, config: BertConfig, export_info: Mapping[str, Any],
          metadata: Optional[Mapping[str, Any]] = None) -> str:
    """Writes `render(...)` to `out_dir/README.md`; returns its path."""
    path = os.path.join(out_dir, CARD_NAME)
    with open(path, "w") as f:
        f.write(render(config, export_info, metadata))
    return path
