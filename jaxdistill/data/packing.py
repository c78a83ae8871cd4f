"""Tokenize a corpus with the teacher's fast tokenizer, pack it into fixed-length BERT sequences, cache it.

Packing (``data.pack``):
- ``"concat"`` (default): documents are concatenated with a ``[SEP]`` between consecutive documents (the
  boundary is *marked*), and the stream is cut into pieces of ``L - 2`` tokens; each sequence is
  ``[CLS] piece [SEP]``. Only the last sequence is padded.
- ``"document"``: a sequence never holds text of two documents (boundaries *respected*); a document
  longer than ``L - 2`` tokens is cut into several sequences, its tail is padded.

The packed corpus is cached by `jaxdistill.data.cache.prepare` (sharded over processes, committed once).
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from jaxdistill.errors import TokenizerError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

PACK_MODES = ("concat", "document")



@dataclass
class TokenizerInfo:
    """The teacher's tokenizer as the data pipeline needs it.

    ``json`` is the serialized ``tokenizers.Tokenizer`` (padding and truncation off); ``size`` the number of
    ids it can produce (``max id + 1``, added tokens included).
    """

    directory: str
    json: str
    size: int
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    special_ids: List[int]
    vocab: Dict[str, int] = field(repr=False)
    continuing_prefix: str = "##"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.json.encode("utf-8")).hexdigest()[:16]

    def special_table(self, size: Optional[int] = None) -> np.ndarray:
        """bool [V]: ids never used as MLM targets."""
        t = np.zeros(max(size or 0, self.size), dtype=bool)
        t[self.special_ids] = True
        return t

    def continuation_table(self, size: Optional[int] = None) -> np.ndarray:
        """bool [V]: word-piece continuations (tokens that start with the continuing-subword prefix)."""
        t = np.zeros(max(size or 0, self.size), dtype=bool)
        if self.continuing_prefix:
            ids = [i for tok, i in self.vocab.items() if tok.startswith(self.continuing_prefix) and len(tok) > 2]
            t[ids] = True
        t[self.special_ids] = False
        return t

    def backend(self):
        from tokenizers import Tokenizer
        return Tokenizer.from_str(self.json)


def _json_or_empty(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


_SPECIAL_DEFAULTS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
                     "unk_token": "[UNK]"}


def _backend_and_specials(tokenizer_dir: str):
    """(tokenizers.Tokenizer, {"cls_token": id or None, ...}, extra special ids).

    ``tokenizer.json`` is read with ``tokenizers`` directly (fast, no transformers/torch import); the special
    token names come from ``special_tokens_map.json`` / ``tokenizer_config.json`` (BERT names by default).
    A directory with only ``vocab.txt`` goes through ``transformers.AutoTokenizer`` (which builds the fast one).
    """
    from tokenizers import Tokenizer
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    if os.path.exists(path):
        backend = Tokenizer.from_file(path)
        conf = {**_json_or_empty(os.path.join(tokenizer_dir, "tokenizer_config.json")),
                **_json_or_empty(os.path.join(tokenizer_dir, "special_tokens_map.json"))}
        ids = {}
        for key, default in _SPECIAL_DEFAULTS.items():
            name = conf.get(key) or default
            name = name.get("content", default) if isinstance(name, dict) else str(name)
            ids[key] = backend.token_to_id(name)
        extra = [i for i, t in backend.get_added_tokens_decoder().items() if getattr(t, "special", False)]
        return backend, ids, extra
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"the tokenizer in {tokenizer_dir!r} is not a fast tokenizer; add its tokenizer.json")
    ids = {key: getattr(tok, key + "_id", None) for key in _SPECIAL_DEFAULTS}
    return Tokenizer.from_str(backend.to_str()), ids, list(tok.all_special_ids)


def load_tokenizer(tokenizer_dir: str, *, vocab_size: Optional[int] = None) -> TokenizerInfo:
    """Loads the fast tokenizer of ``tokenizer_dir`` (``tokenizer.json`` or ``vocab.txt``) and checks it
    against the teacher's word-embedding rows ``vocab_size``. Raises TokenizerError."""
    if not tokenizer_dir or not os.path.isdir(str(tokenizer_dir)):
        raise TokenizerError(f"tokenizer directory {tokenizer_dir!r} does not exist; pass the teacher's directory "
                             "(with tokenizer.json or vocab.txt)")
    if not any(os.path.exists(os.path.join(tokenizer_dir, f)) for f in ("tokenizer.json", "vocab.txt")):
        raise TokenizerError(f"no tokenizer.json or vocab.txt in {tokenizer_dir!r}; copy the teacher's tokenizer files there")
    try:
        backend, ids, extra = _backend_and_specials(str(tokenizer_dir))
    except TokenizerError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TokenizerError(f"cannot load the tokenizer in {tokenizer_dir!r}: {type(e).__name__}: {e}") from None
    backend.no_padding()
    backend.no_truncation()
    vocab = backend.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1
    missing = [k for k in ("cls_token", "sep_token", "pad_token", "mask_token") if ids.get(k) is None]
    if missing:
        raise TokenizerError(f"the tokenizer in {tokenizer_dir!r} lacks {missing}; MLM distillation needs a BERT-style "
                             "tokenizer with [CLS], [SEP], [PAD] and [MASK]")
    if vocab_size is not None and size > int(vocab_size):
        raise TokenizerError(f"the tokenizer in {tokenizer_dir!r} produces ids up to {size - 1} ({size} ids) but the "
                             f"teacher's word embeddings have only {vocab_size} rows; use the teacher's own tokenizer")
    prefix = getattr(backend.model, "continuing_subword_prefix", None) or ""
    special = sorted({i for i in [*ids.values(), *extra] if i is not None})
    return TokenizerInfo(directory=str(tokenizer_dir), json=backend.to_str(), size=size, cls_id=ids["cls_token"],
                         sep_id=ids["sep_token"], pad_id=ids["pad_token"], mask_id=ids["mask_token"],
                         special_ids=special, vocab=vocab, continuing_prefix=prefix)


# ------------------------------------------------------------------------------------------ tokenization
_WORKER_TOKENIZER = None


def _init_worker(tokenizer_json: str) -> None:
    global _WORKER_TOKENIZER
    from tokenizers import Tokenizer
    _WORKER_TOKENIZER = Tokenizer.from_str(tokenizer_json)


def _encode(tokenizer, texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    """-> (all ids concatenated int32 [T], per-document lengths int64 [D])."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # _fast: no offsets (tokenizers>=0.21)
    encs = encode(texts, add_special_tokens=False)
    arrays = [np.asarray(e.ids, dtype=np.int32) for e in encs]
    lens = np.array([len(a) for a in arrays], dtype=np.int64)
    return (np.concatenate(arrays) if arrays else np.zeros(0, np.int32)), lens


def _encode_in_worker(texts: List[str]):
    return _encode(_WORKER_TOKENIZER, texts)


def encode_documents(batches: Iterable[List[str]], tok: TokenizerInfo, num_proc: int = 1,
                     ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Tokenizes batches of documents, in order, in ``num_proc`` processes (a bounded window of batches
    in flight, so memory stays flat for any corpus size)."""
    if num_proc <= 1:
        backend = tok.backend()
        for texts in batches:
            yield _encode(backend, texts)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold JAX / Rust threads
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(tok.json,)) as pool:
        window: collections.deque = collections.deque()
        for texts in batches:
            window.append(pool.apply_async(_encode_in_worker, (texts,)))
            if len(window) >= 4 * num_proc:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()


# ----------------------------------------------------------------------------------------------- packing
class Packer:
    """Streams tokenized documents into fixed-length rows written to a raw file."""

    def __init__(self, f, seq_len: int, tok: TokenizerInfo, mode: str, dtype):
        self.f, self.L, self.mode, self.dtype = f, seq_len, mode, dtype
        self.cls, self.sep, self.pad = tok.cls_id, tok.sep_id, tok.pad_id
        self.carry = np.zeros(0, dtype=np.int32)
        self.lengths: List[np.ndarray] = []
        self.rows = 0
        self.docs = 0

    def _emit(self, content: np.ndarray, n_real: np.ndarray) -> None:
        """content [R, L-2] (padded with pad), n_real [R] content tokens per row."""
        R = content.shape[0]
        if R == 0:
            return
        out = np.full((R, self.L), self.pad, dtype=self.dtype)
        out[:, 0] = self.cls
        out[:, 1:-1] = content
        out[np.arange(R), n_real + 1] = self.sep
        out.tofile(self.f)
        self.lengths.append((n_real + 2).astype(np.int32))
        self.rows += R

    def add(self, ids: np.ndarray, doc_lens: np.ndarray) -> None:
        C = self.L - 2
        keep = doc_lens > 0
        docs = np.split(ids, np.cumsum(doc_lens)[:-1]) if len(doc_lens) else []
        docs = [d for d, k in zip(docs, keep) if k]
        if not docs:
            return
        if self.mode == "concat":
            parts = [self.carry]
            for d in docs:
                if self.docs:
                    parts.append(np.array([self.sep], dtype=np.int32))
                parts.append(d)
                self.docs += 1
            buf = np.concatenate(parts)
            n = len(buf) // C
            self._emit(buf[: n * C].reshape(n, C), np.full(n, C))
            self.carry = buf[n * C:]
        else:
            for d in docs:
                n = -(-len(d) // C)
                padded = np.full(n * C, self.pad, dtype=np.int32)
                padded[: len(d)] = d
                real = np.full(n, C)
                real[-1] = len(d) - (n - 1) * C
                self._emit(padded.reshape(n, C), real)
                self.docs += 1

    def finish(self) -> np.ndarray:
        if len(self.carry):
            C = self.L - 2
            padded = np.full(C, self.pad, dtype=np.int32)
            padded[: len(self.carry)] = self.carry
            self._emit(padded[None], np.array([len(self.carry)]))
            self.carry = np.zeros(0, dtype=np.int32)
        return np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int32)
