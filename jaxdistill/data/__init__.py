"""Data: pre-training corpora -> packed, deterministic MLM batches; downstream classification tasks.

Public API::

    data = build_pretraining_data(data_cfg, tokenizer_dir, global_batch_size, vocab_size=..., max_positions=...)
    data.batch(step, process_index=0, process_count=1) -> dict of int32 [B/P, L]
    data.iterator(start_step, process_index=0, process_count=1, prefetch=2) -> (step, batch), ...
    data.eval_batch(i, batch_size) -> dict of int32 [batch_size, L]
    default_data_config() -> ConfigDict
    task = load_task(task_cfg, tokenizer_dir, max_length); compute_metrics(task_name_or_kind, predictions, labels)
"""
from jaxdistill.data.corpus import CorpusError, CorpusSpec, open_corpus
from jaxdistill.data.mlm import IGNORE_INDEX, MaskingSpec, mask_tokens
from jaxdistill.data.cache import Prepared, open_prepared, prepare
from jaxdistill.data.packing import TokenizerError, TokenizerInfo, load_tokenizer
from jaxdistill.data.pipeline import (PretrainingData, build_pretraining_data, check_data_config, default_data_config,
                                      epochs_to_steps)
from jaxdistill.data.tasks import GLUE_TASKS, Task, TaskError, compute_metrics, default_task_config, load_task

__all__ = [
    "CorpusError", "CorpusSpec", "open_corpus", "IGNORE_INDEX", "MaskingSpec", "mask_tokens", "TokenizerError",
    "TokenizerInfo", "load_tokenizer", "prepare", "Prepared", "open_prepared", "PretrainingData", "build_pretraining_data", "check_data_config",
    "default_data_config",
    "epochs_to_steps", "GLUE_TASKS", "Task", "TaskError", "compute_metrics", "default_task_config", "load_task",
]
