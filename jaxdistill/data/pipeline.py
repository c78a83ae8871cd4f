"""Packed corpus -> deterministic, resumable, per-process MLM batches with background prefetch.

Order: the training sequences form an endless stream of epochs; epoch ``e`` visits them in the order of
``np.random.default_rng([seed, e]).permutation(N)``. Global batch ``s`` holds stream positions
``s*B .. s*B + B - 1`` (a batch may straddle two epochs, so no sequence is ever dropped or repeated within
an epoch). Row ``j`` of the global batch is corrupted with randomness keyed by ``(seed, s, j)``, and
process ``p`` of ``P`` gets rows ``p*B/P .. (p+1)*B/P - 1``. Hence batch ``s`` is a pure function of
(prepared data, seed, s), and a process slice equals the same rows of the global batch.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from jaxdistill.data import mlm
from jaxdistill.data.corpus import CorpusSpec, open_corpus
from jaxdistill.data.cache import DEFAULT_DOCS_PER_SHARD, Prepared, prepare
from jaxdistill.data.packing import PACK_MODES, TokenizerInfo, load_tokenizer
from jaxdistill.errors import ConfigError, CorpusError
from jaxdistill.hosts import process_rows

log = logging.getLogger(__name__)

HOLDOUT_SEED = 0x5EED  # the held-out split does not move when data.seed changes
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "jaxdistill", "data")


def default_data_config():
    """The data section of a config, with documented defaults.

    corpus.source: "text" (a .txt file or folder, blank lines separate documents), "hf" (datasets: a local
        .txt/.json/.jsonl/.csv/.tsv/.parquet file or folder, or a hub name), or "tfds" (array_record).
    corpus.path / corpus.name: file, folder or hub name / dataset configuration (hf) or TFDS name.
    corpus.text_field, corpus.split: the text column ("text") and the split ("train").
    seq_len: tokens per packed sequence, [CLS] and [SEP] included (<= the teacher's max positions).
    pack: "concat" (documents joined with [SEP], no padding but the last row) or "document" (a row never
        mixes documents).
    seed: order of every epoch and the MLM corruption.
    mlm_probability, mask_replace, random_replace: 15 % of non-special tokens; 80 % [MASK], 10 % random, 10 % kept.
    whole_word_mask: choose whole words (a token and its ## pieces) instead of single pieces.
    frequency_smoothing: 0 = uniform choice; > 0 = DistilBERT's choice weighted by count ** -smoothing (0.7).
    holdout_sequences: sequences kept out of training for eval_batch (held-out teacher-student KL).
    cache_dir: where packed corpora are cached (keyed by corpus, tokenizer, seq_len, pack, docs_per_shard);
        with several hosts, storage they all see: each process packs its share of the shards once.
    docs_per_shard: documents per cache shard (`jaxdistill.data.cache`): process p of P packs shards
        s % P == p. Each shard's last row is padded, so the cache depends on it, not on P.
    num_proc: tokenizer processes (0 = 1: the fast tokenizer is multi-threaded already; more processes
      need the calling script to have a `__main__` guard).
    progress: show a progress bar while preparing.
    kind: "pretraining" (the corpus above, MLM batches) or "task" (labeled task batches for task-specific
        distillation, `jaxdistill.data.task_data`): then `task` (the task, as `finetune`'s
        `default_task_config`), `max_length` (tokens per example) and `augment` (Tang et al.'s augmentation,
        `jaxdistill.data.augment`) are read and the corpus fields are not.
    """
    import ml_collections
    c = ml_collections.ConfigDict()
    c.corpus = ml_collections.ConfigDict(
        {"source": "text", "path": "", "name": "", "text_field": "text", "split": "train"})
    c.seq_len = 128
    c.pack = "concat"
    c.seed = 0
    c.mlm_probability = 0.15
    c.mask_replace = 0.8
    c.random_replace = 0.1
    c.whole_word_mask = False
    c.frequency_smoothing = 0.0
    c.holdout_sequences = 64
    c.cache_dir = DEFAULT_CACHE_DIR
    c.docs_per_shard = DEFAULT_DOCS_PER_SHARD
    c.num_proc = 0
    c.progress = True
    from jaxdistill.data.augment import default_augment_config
    from jaxdistill.data.tasks import default_task_config
    c.kind = "pretraining"
    c.task = default_task_config()
    c.max_length = 128
    c.augment = default_augment_config()
    return c


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if hasattr(cfg, "get"):
        v = cfg.get(key, default)
    else:
        v = getattr(cfg, key, default)
    return default if v is None else v


class PretrainingData:
    """Deterministic MLM batches over a packed corpus. Build it with :func:`build_pretraining_data`."""

    def __init__(self, prepared: Prepared, tok: TokenizerInfo, spec: mlm.MaskingSpec, *, global_batch_size: int,
                 seed: int, holdout_sequences: int):
        self.prepared = prepared
        self.tokenizer = tok
        self.tokenizer_dir = tok.directory
        self.spec = spec
        self.seed = int(seed)
        self.global_batch_size = int(global_batch_size)
        self.seq_len = int(prepared.tokens.shape[1])
        total = prepared.tokens.shape[0]
        order = np.random.default_rng(HOLDOUT_SEED).permutation(total)
        self.holdout_indices = np.sort(order[:holdout_sequences]).astype(np.int64)
        self.train_indices = np.sort(order[holdout_sequences:]).astype(np.int64)
        self.num_sequences = int(len(self.train_indices))
        self.steps_per_epoch = max(1, self.num_sequences // self.global_batch_size)
        self._perms: Dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    # --------------------------------------------------------------------------------------- ordering
    def permutation(self, epoch: int) -> np.ndarray:
        """int64 [N]: the order of training sequences (positions in ``train_indices``) in ``epoch``."""
        with self._lock:
            p = self._perms.get(epoch)
            if p is None:
                p = np.random.default_rng([self.seed, epoch]).permutation(self.num_sequences)
                self._perms[epoch] = p
                for old in sorted(self._perms)[:-2]:
                    del self._perms[old]
            return p

    def sequence_indices(self, step: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """int64 [B/P]: the packed-sequence index (row of ``prepared.tokens``) of each example of the slice."""
        if step < 0:
            raise ConfigError(f"step must be >= 0, got {step}")
        rows = process_rows(self.global_batch_size, process_index, process_count)
        flat = np.int64(step) * self.global_batch_size + rows
        epoch, pos = np.divmod(flat, self.num_sequences)
        out = np.empty(len(rows), dtype=np.int64)
        for e in np.unique(epoch):
            sel = epoch == e
            out[sel] = self.permutation(int(e))[pos[sel]]
        return self.train_indices[out]

    # ---------------------------------------------------------------------------------------- batches
    def _gather(self, seq_idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        order = np.argsort(seq_idx, kind="stable")  # sequential reads from the memmap
        tokens = np.empty((len(seq_idx), self.seq_len), dtype=np.int32)
        tokens[order] = self.prepared.tokens[seq_idx[order]]
        return tokens, self.prepared.lengths[seq_idx]

    def _assemble(self, tokens, lengths, example_ids, step, stream) -> Dict[str, np.ndarray]:
        input_ids, labels = mlm.mask_tokens(tokens, lengths, example_ids, self.spec, seed=self.seed, step=step,
                                            stream=stream)
        attention = (np.arange(self.seq_len)[None, :] < lengths[:, None]).astype(np.int32)
        return {"input_ids": input_ids, "attention_mask": attention,
                "token_type_ids": np.zeros_like(input_ids), "mlm_labels": labels}

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> Dict[str, np.ndarray]:
        """The process's slice of global batch ``step``: int32 arrays [B/P, L] (see docs/contracts.md)."""
        rows = process_rows(self.global_batch_size, process_index, process_count)
        tokens, lengths = self._gather(self.sequence_indices(step, process_index, process_count))
        return self._assemble(tokens, lengths, rows, step, mlm.STREAM_TRAIN)

    def iterator(self, start_step: int = 0, process_index: int = 0, process_count: int = 1, prefetch: int = 2,
                 end_step: Optional[int] = None) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """Yields ``(step, batch)`` from ``start_step`` (up to ``end_step``, exclusive, or forever); a background
        thread keeps ``prefetch`` batches ready. Closing the generator stops the thread."""
        process_rows(self.global_batch_size, process_index, process_count)  # validate now, not in the thread
        if prefetch <= 0:
            step = start_step
            while end_step is None or step < end_step:
                yield step, self.batch(step, process_index, process_count)
                step += 1
            return
        q: "queue.Queue" = queue.Queue(maxsize=prefetch)
        stop = threading.Event()
        done = object()

        def work():
            step = start_step
            try:
                while not stop.is_set() and (end_step is None or step < end_step):
                    item = (step, self.batch(step, process_index, process_count))
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    step += 1
                q.put(done)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                q.put(e)

        thread = threading.Thread(target=work, name="jaxdistill-data-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    @property
    def num_eval_sequences(self) -> int:
        return int(len(self.holdout_indices))

    def eval_batch(self, i: int, batch_size: int) -> Dict[str, np.ndarray]:
        """Held-out batch ``i``: rows ``i*batch_size ..`` of the held-out sequences (cycling), each corrupted
        the same way whatever the batch size (keyed by its held-out index). int32 arrays [batch_size, L]."""
        if self.num_eval_sequences == 0:
            raise ConfigError("no held-out sequences: set data.holdout_sequences > 0 to use eval_batch")
        j = (np.int64(i) * batch_size + np.arange(batch_size, dtype=np.int64)) % self.num_eval_sequences
        tokens, lengths = self._gather(self.holdout_indices[j])
        return self._assemble(tokens, lengths, j, 0, mlm.STREAM_EVAL)


def _num_proc(n: int) -> int:
    """Tokenizer processes: `n` when given, else 1 — the fast tokenizer already spreads a batch over every
    core with its own thread pool, and spawned workers would re-run a user's script that lacks a
    `if __name__ == "__main__":` guard."""
    return int(n) if n and int(n) > 0 else 1


def check_data_config(data_cfg: Any, global_batch_size: int, max_positions: int) -> Dict[str, Any]:
    """Validates the ``data`` section without reading the corpus; returns its parsed settings.

    Raises ConfigError naming the field for a ``seq_len`` outside 8..``max_positions`` (the models'
    ``max_position_embeddings``), a batch below 1, an unknown ``pack`` mode, a negative ``frequency_smoothing``
    or ``holdout_sequences``, bad masking probabilities, or a missing/ill-formed ``corpus`` spec. Returns
    {"seq_len", "pack", "smoothing", "holdout", "probs" (mlm/mask/random probabilities), "whole_word",
    "corpus" (a CorpusSpec)}.
    """
    kind = str(_get(data_cfg, "kind", "pretraining"))
    if kind == "task":  # labeled task batches: jaxdistill.data.task_data
        from jaxdistill.data.task_data import check_task_data_config
        return check_task_data_config(data_cfg, global_batch_size, max_positions)
    if kind != "pretraining":
        raise ConfigError(f"data.kind={kind!r} is not 'pretraining' or 'task'")
    seq_len = int(_get(data_cfg, "seq_len", 128))
    if seq_len > int(max_positions):
        raise ConfigError(f"data.seq_len={seq_len} is above the teacher's max_position_embeddings={max_positions}; "
                          f"set data.seq_len <= {max_positions}")
    if seq_len < 8:
        raise ConfigError(f"data.seq_len={seq_len} is too short for BERT sequences; use at least 8")
    if int(global_batch_size) < 1:
        raise ConfigError(f"global batch size must be >= 1, got {global_batch_size}")
    pack = str(_get(data_cfg, "pack", "concat"))
    if pack not in PACK_MODES:
        raise ConfigError(f"data.pack={pack!r} is not one of {PACK_MODES}")
    smoothing = float(_get(data_cfg, "frequency_smoothing", 0.0))
    if smoothing < 0:
        raise ConfigError(f"data.frequency_smoothing={smoothing} must be >= 0 (DistilBERT uses 0.7; 0 = off)")
    holdout = int(_get(data_cfg, "holdout_sequences", 0))
    if holdout < 0:
        raise ConfigError(f"data.holdout_sequences={holdout} must be >= 0")
    if int(_get(data_cfg, "docs_per_shard", DEFAULT_DOCS_PER_SHARD)) < 1:
        raise ConfigError(f"data.docs_per_shard={_get(data_cfg, 'docs_per_shard')} must be >= 1")
    probs = dict(mlm_probability=float(_get(data_cfg, "mlm_probability", 0.15)),
                 mask_replace=float(_get(data_cfg, "mask_replace", 0.8)),
                 random_replace=float(_get(data_cfg, "random_replace", 0.1)))
    mlm.MaskingSpec(special=np.zeros(1, bool), mask_id=0, random_ids=np.zeros(1, np.int32), **probs)  # validates
    spec_cfg = _get(data_cfg, "corpus", None)
    if spec_cfg is None:
        raise ConfigError("data.corpus is not set; see jaxdistill.data.default_data_config()")
    return dict(kind="pretraining", seq_len=seq_len, pack=pack, smoothing=smoothing, holdout=holdout, probs=probs,
                whole_word=bool(_get(data_cfg, "whole_word_mask", False)), corpus=CorpusSpec.from_config(spec_cfg))


def build_pretraining_data(data_cfg: Any, tokenizer_dir: str, global_batch_size: int, *, vocab_size: int,
                           max_positions: int, process_index: int = 0, process_count: int = 1) -> PretrainingData:
    """Validates the data config (`check_data_config`), the tokenizer and the corpus (in that order, before
    any tokenization), prepares or reuses the packed corpus, and returns the batch source.

    Args:
      data_cfg: the ``data`` ConfigDict (see :func:`default_data_config`).
      tokenizer_dir: the teacher's directory with its tokenizer files.
      global_batch_size: sequences per step over all processes.
      vocab_size: rows of the teacher's word embeddings (the tokenizer must not produce more ids).
      max_positions: the models' ``max_position_embeddings`` (``seq_len`` must not exceed it).
      process_index / process_count: this process among those preparing the cache together (each packs
        its share of the shards; see `jaxdistill.data.cache`).
    """
    checked = check_data_config(data_cfg, global_batch_size, max_positions)
    seq_len, pack, smoothing, holdout, probs, whole_word = (
        checked[k] for k in ("seq_len", "pack", "smoothing", "holdout", "probs", "whole_word"))
    tok = load_tokenizer(tokenizer_dir, vocab_size=vocab_size)
    cache_dir = os.path.expanduser(str(_get(data_cfg, "cache_dir", DEFAULT_CACHE_DIR) or DEFAULT_CACHE_DIR))
    corpus = open_corpus(checked["corpus"], cache_dir)

    prepared = prepare(corpus, tok, seq_len, cache_dir, pack=pack, num_proc=_num_proc(_get(data_cfg, "num_proc", 0)),
                       progress=bool(_get(data_cfg, "progress", True)),
                       docs_per_shard=int(_get(data_cfg, "docs_per_shard", DEFAULT_DOCS_PER_SHARD)),
                       process_index=process_index, process_count=process_count)
    total = prepared.tokens.shape[0]
    if total - holdout < 1:
        raise CorpusError(f"the corpus packs into only {total} sequences of {seq_len} tokens, and "
                         f"data.holdout_sequences={holdout} are held out; use a larger corpus or fewer held out")
    if total - holdout < global_batch_size:
        log.warning("data: only %d training sequences for a global batch of %d; sequences repeat within a batch",
                    total - holdout, global_batch_size)

    special = tok.special_table()
    weights = mlm.smoothing_weights(prepared.token_counts, smoothing, special) if smoothing > 0 else None
    spec = mlm.MaskingSpec(special=special, mask_id=tok.mask_id,
                           random_ids=np.flatnonzero(~special).astype(np.int32), whole_word=whole_word,
                           continuation=tok.continuation_table() if whole_word else None, weights=weights, **probs)
    data = PretrainingData(prepared, tok, spec, global_batch_size=global_batch_size,
                           seed=int(_get(data_cfg, "seed", 0)), holdout_sequences=holdout)
    log.info("data: %d training + %d held-out sequences of %d tokens, %d steps per epoch at batch %d (%s)",
             data.num_sequences, data.num_eval_sequences, seq_len, data.steps_per_epoch, global_batch_size,
             prepared.path)
    return data


def epochs_to_steps(data: PretrainingData, epochs: float) -> int:
    """Number of steps that cover ``epochs`` passes over the training sequences (rounded up)."""
    return int(math.ceil(epochs * data.num_sequences / data.global_batch_size))
