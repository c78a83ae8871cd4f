"""The packed-corpus cache: prepared once, by all processes together, read by every process.

A corpus is cut into shards of `docs_per_shard` consecutive documents (shard s holds documents
s*K .. s*K+K-1, in the corpus's order). Process p of P tokenizes and packs only the shards s with
s % P == p, each into its own folder; the process that sees the last shard finished writes the top-level
`manifest.json`, the committed marker that says the cache is complete. Every process then reads the whole
cache (memory-mapped), so batches are a pure function of (data, seed, step) and do not depend on how many
processes prepared it. Each shard is packed on its own (its last row is padded), so the cache depends on
`docs_per_shard` (part of the cache key), never on the process count.

Layout of one cache folder (`<cache_dir>/<label>-L<seq_len>-<pack>-<key>/`):
  shard-00000/ ... shard-NNNNN/  each: tokens.npy uint16/int32 [N_s, L], lengths.npy int32 [N_s],
                                 token_counts.npy int64 [V], manifest.json (written last, atomically)
  manifest.json                  the committed marker: shards, sequences, documents, tokens
A shard folder is written under a temporary name and renamed into place; a process that finds a shard done
(by another process, or an earlier interrupted run) skips it.

A gs:// `cache_dir` works the same way through `jaxdistill.storage`: a shard is packed into a local
temporary folder and uploaded with its manifest.json last (its commit), the top-level manifest.json is one
atomic object write, and a committed cache is read from a local mirror (memory-mapping needs local files).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

from jaxdistill import storage
from jaxdistill.data import packing
from jaxdistill.data.corpus import Corpus
from jaxdistill.errors import CorpusError, DataError, StorageError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
DEFAULT_DOCS_PER_SHARD = 8192


def cache_key(corpus_identity: Dict[str, Any], tok: packing.TokenizerInfo, seq_len: int, pack: str,
              docs_per_shard: int) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, "corpus": corpus_identity, "tokenizer": tok.fingerprint,
                       "seq_len": int(seq_len), "pack": pack, "docs_per_shard": int(docs_per_shard)}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


class ShardedRows:
    """The rows of several [N_s, L] arrays as one [sum N_s, L] array: `shape`, `dtype`, integer-array
    indexing (`rows[idx]` -> [len(idx), L]) and `np.asarray(rows)`."""

    def __init__(self, parts: List[np.ndarray]):
        self.parts = parts
        self.starts = np.cumsum([0] + [p.shape[0] for p in parts])
        self.shape = (int(self.starts[-1]), int(parts[0].shape[1]))
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        """`rows[i]`, `rows[i, cols]`, `rows[int_array]` or `rows[int_array, cols]` (rows as NumPy indexing)."""
        rest = ()
        if isinstance(idx, tuple):
            idx, rest = idx[0], idx[1:]
        if isinstance(idx, (int, np.integer)):
            i = int(idx) + (self.shape[0] if idx < 0 else 0)
            s = int(np.searchsorted(self.starts, i, side="right") - 1)
            return np.asarray(self.parts[s][(i - self.starts[s],) + rest])
        idx = np.arange(self.shape[0])[idx] if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64)
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self.parts[s][idx[sel] - self.starts[s]]
        return out[(slice(None),) + rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self.parts])
        return out if dtype is None else out.astype(dtype)


@dataclass
class Prepared:
    """A packed corpus: ``tokens`` [N, L] (memory-mapped shards), ``lengths`` [N], ``token_counts`` [V]."""

    path: str
    tokens: ShardedRows
    lengths: np.ndarray
    token_counts: np.ndarray
    manifest: Dict[str, Any]


def shard_dir(path: str, shard: int) -> str:
    return storage.join(path, f"shard-{shard:05d}")


def open_prepared(path: str) -> Prepared:
    """Reads a committed cache folder. Raises DataError when a shard disagrees with the manifest."""
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    parts, lengths, counts = [], [], None
    for s in range(manifest["num_shards"]):
        d = shard_dir(path, s)
        parts.append(np.load(os.path.join(d, "tokens.npy"), mmap_mode="r"))
        lengths.append(np.load(os.path.join(d, "lengths.npy")))
        c = np.load(os.path.join(d, "token_counts.npy"))
        counts = c if counts is None else counts + c
    tokens = ShardedRows(parts)
    lengths = np.concatenate(lengths)
    if tokens.shape != (manifest["num_sequences"], manifest["seq_len"]) or len(lengths) != tokens.shape[0]:
        raise DataError(f"prepared data in {path!r} is inconsistent with its manifest; delete the folder")
    return Prepared(path, tokens, lengths, counts, manifest)


def documents_by_shard(corpus: Corpus, docs_per_shard: int, docs_per_batch: int
                       ) -> Iterator[Tuple[int, List[str]]]:
    """(shard index, a batch of its documents) in corpus order; batches never straddle two shards."""
    shard, seen, batch = 0, 0, []
    for docs in corpus.documents(docs_per_batch):
        for doc in docs:
            if seen and seen % docs_per_shard == 0:
                if batch:
                    yield shard, batch
                shard, batch = seen // docs_per_shard, []
            batch.append(doc)
            seen += 1
            if len(batch) >= docs_per_batch:
                yield shard, batch
                batch = []
    if batch:
        yield shard, batch


def write_shard(path: str, batches: List[List[str]], tok: packing.TokenizerInfo, seq_len: int, pack: str,
                num_proc: int) -> Dict[str, Any]:
    """Tokenizes and packs one shard's documents into `path` (temporary folder, renamed into place; for a
    gs:// `path`, a local folder uploaded with its manifest.json last)."""
    if storage.is_remote(path):
        staging = tempfile.mkdtemp(prefix="jaxdistill-shard-")
        try:
            info = write_shard(os.path.join(staging, "shard"), batches, tok, seq_len, pack, num_proc)
            storage.upload_dir(os.path.join(staging, "shard"), path, last="manifest.json")
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=os.path.dirname(path))
    try:
        dtype = np.uint16 if tok.size <= 65536 else np.int32
        counts = np.zeros(tok.size, dtype=np.int64)
        n_tokens = 0
        raw = os.path.join(tmp, "tokens.bin")
        with open(raw, "wb") as f:
            packer = packing.Packer(f, seq_len, tok, pack, dtype)
            for ids, lens in packing.encode_documents(iter(batches), tok, num_proc):
                packer.add(ids, lens)
                counts += np.bincount(ids, minlength=tok.size)[: tok.size]
                n_tokens += len(ids)
            lengths = packer.finish()
        np.save(os.path.join(tmp, "tokens.npy"), np.memmap(raw, dtype=dtype, mode="r", shape=(len(lengths), seq_len)))
        os.remove(raw)
        np.save(os.path.join(tmp, "lengths.npy"), lengths)
        np.save(os.path.join(tmp, "token_counts.npy"), counts)
        info = {"num_sequences": int(len(lengths)), "num_documents": int(packer.docs), "num_tokens": int(n_tokens)}
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(info, f)
        try:
            os.rename(tmp, path)
        except OSError:
            if not os.path.exists(os.path.join(path, "manifest.json")):
                raise
        return info
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def shard_info(path: str):
    """The finished shard's manifest dict, or None."""
    try:
        return storage.read_json(storage.join(path, "manifest.json"))
    except StorageError:  # the storage refuses or does not answer: not "missing", or waiting would never end
        raise
    except (OSError, ValueError):
        return None


def prepare(corpus: Corpus, tok: packing.TokenizerInfo, seq_len: int, cache_dir: str, *, pack: str = "concat",
            num_proc: int = 1, progress: bool = True, docs_per_batch: int = 256,
            docs_per_shard: int = DEFAULT_DOCS_PER_SHARD, process_index: int = 0, process_count: int = 1,
            wait_timeout_s: float = 24 * 3600.0) -> Prepared:
    """Returns the packed corpus, from the cache when committed, else preparing this process's shards first
    and waiting (polling the shared `cache_dir`) for the other processes' shards.

    With several processes, `cache_dir` must be storage they all see (a shared file system); a process that
    waits longer than `wait_timeout_s` for the others raises DataError saying so. The settings are those
    `pipeline.check_data_config` validated.
    """
    key = cache_key(corpus.identity(), tok, seq_len, pack, docs_per_shard)
    final = storage.join(cache_dir, f"{corpus.spec.label()}-L{seq_len}-{pack}-{key}")
    if storage.exists(storage.join(final, "manifest.json")):
        log.info("data: using cached packed corpus %s", final)
        return open_committed(final)
    storage.check_writable(cache_dir, "the data cache (data.cache_dir)")  # before the expensive part
    corpus.load()  # full validation (datasets / TFDS) before the expensive part
    t0 = time.time()
    mine, docs_seen, num_shards = prepare_my_shards(corpus, tok, seq_len, final, pack, num_proc, progress,
                                                    docs_per_batch, docs_per_shard, process_index, process_count)
    if docs_seen == 0:
        raise CorpusError(f"corpus {corpus.spec.path or corpus.spec.name!r} is empty: it has no documents; "
                          "point data.corpus at real text")
    owned = len(range(process_index, num_shards, process_count))
    log.info("data: process %d/%d tokenized %d of %d documents (%d of %d shards) in %.1fs", process_index,
             process_count, mine, docs_seen, owned, num_shards, time.time() - t0)
    infos = wait_for_shards(final, num_shards, wait_timeout_s, process_count)
    totals = {k: sum(i[k] for i in infos) for k in ("num_sequences", "num_documents", "num_tokens")}
    if totals["num_tokens"] == 0:
        raise CorpusError(f"corpus {corpus.spec.path or corpus.spec.name!r} is empty: it has no tokens after "
                          "tokenization; point data.corpus at real text")
    commit(final, dict(totals, format=FORMAT_VERSION, key=key, corpus=corpus.identity(), spec=vars(corpus.spec),
                       tokenizer_dir=os.path.abspath(tok.directory), tokenizer_fingerprint=tok.fingerprint,
                       seq_len=seq_len, pack=pack, num_shards=num_shards, docs_per_shard=docs_per_shard,
                       created=time.strftime("%Y-%m-%dT%H:%M:%S")))
    log.info("data: packed %d documents, %d tokens into %d sequences of %d -> %s", totals["num_documents"],
             totals["num_tokens"], totals["num_sequences"], seq_len, final)
    return open_committed(final)


def open_committed(final: str) -> Prepared:
    """`open_prepared` on a committed cache folder; a gs:// one is first mirrored locally."""
    if not storage.is_remote(final):
        return open_prepared(final)
    prepared = open_prepared(storage.local_copy(final))
    return dataclasses.replace(prepared, path=final)


def prepare_my_shards(corpus, tok, seq_len, final, pack, num_proc, progress, docs_per_batch, docs_per_shard,
                      process_index, process_count) -> Tuple[int, int, int]:
    """Packs the shards this process owns that are not finished yet; returns (documents it tokenized,
    documents in the corpus, number of shards)."""
    from tqdm.auto import tqdm
    bar = tqdm(total=corpus.num_documents, unit="doc", desc=f"tokenizing {corpus.spec.label()}",
               disable=not progress or process_index != 0, mininterval=1.0)
    mine = seen = 0
    current, batches = -1, []

    def flush():
        if current >= 0 and current % process_count == process_index and batches:
            if shard_info(shard_dir(final, current)) is None:
                write_shard(shard_dir(final, current), batches, tok, seq_len, pack, num_proc)

    for shard, docs in documents_by_shard(corpus, docs_per_shard, docs_per_batch):
        if shard != current:
            flush()
            current, batches = shard, []
        if shard % process_count == process_index:
            batches.append(docs)
            mine += len(docs)
        seen += len(docs)
        bar.update(len(docs))
    flush()
    bar.close()
    return mine, seen, current + 1


def wait_for_shards(final: str, num_shards: int, timeout_s: float, process_count: int) -> List[Dict[str, Any]]:
    """The manifests of every shard, polling until the other processes have written theirs."""
    start, last_log = time.time(), time.time()
    while True:
        infos = [shard_info(shard_dir(final, s)) for s in range(num_shards)]
        missing = [s for s, i in enumerate(infos) if i is None]
        if not missing:
            return infos
        if time.time() - start > timeout_s:
            raise DataError(f"waited {timeout_s:.0f}s for shards {missing[:8]} of {final!r} from the other "
                            f"{process_count - 1} process(es); with several hosts data.cache_dir must be shared "
                            "storage they all see, or run `jaxdistill prepare-data` first")
        if time.time() - last_log > 60:
            log.info("data: waiting for %d shard(s) from other processes: %s", len(missing), missing[:8])
            last_log = time.time()
        time.sleep(0.2)


def commit(final: str, manifest: Dict[str, Any]) -> None:
    """Writes the top-level manifest (the committed marker) atomically (each process may; the last wins)."""
    storage.write_json(storage.join(final, "manifest.json"), manifest, indent=1, sort_keys=True)
