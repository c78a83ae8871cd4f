"""Which rows of a global batch each process (host) loads: one contiguous block per process.

NumPy only at import (the data pipeline and its tokenizer workers use it without importing JAX); the
defaults ask JAX for this process's index and the process count.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from jaxdistill.errors import ConfigError


def process_rows(global_size: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> np.ndarray:
    """int64 [global_size / P]: the rows of a global batch that process `process_index` of P loads (a
    contiguous block, so that `sharding.global_batch` reassembles them in order). Defaults: this process
    (`jax.process_index()`) of all (`jax.process_count()`)."""
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    pi, pc = int(process_index), int(process_count)
    if pc < 1 or global_size % pc:
        raise ConfigError(f"global batch {global_size} is not divisible by process_count={pc}; make the batch a "
                          "multiple")
    if not 0 <= pi < pc:
        raise ConfigError(f"process_index={pi} is not in [0, {pc})")
    per = global_size // pc
    return np.arange(pi * per, (pi + 1) * per, dtype=np.int64)


def process_slice(batch: Mapping[str, np.ndarray]) -> dict:
    """This process's rows (`process_rows`) of every array of a global host batch."""
    rows = process_rows(len(next(iter(batch.values()))))
    return {k: np.asarray(v)[rows] for k, v in batch.items()}
