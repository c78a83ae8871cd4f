"""MLM corruption as a pure NumPy function of (tokens, seed, step, global example index).

Every random number is a counter-based hash (SplitMix64 finaliser) of
``(seed, stream, step, global example index, position, purpose)``. Nothing depends on the batch
composition, so a process that corrupts its slice of the global batch gets exactly the rows that a
single process corrupting the whole batch gets, for any process count.

Selection (per example, over *candidate* positions: real tokens that are not special tokens):
- the number of targets is ``floor(p * n_candidates + u)`` (stochastic rounding: its mean is exactly
  ``p * n_candidates``, its spread at most one token);
- which candidates: the ``k`` smallest exponential-race keys ``-log(u) / w``. With ``w = 1`` this is a
  uniform choice without replacement; with DistilBERT's frequency smoothing ``w = max(count, 1) ** -s``
  it samples without replacement proportionally to ``w`` (rare tokens are masked more often);
- whole-word masking ranks *words* (a word-start token and its following ``##`` pieces) by the key of
  their first piece and takes words until ``k`` tokens are reached; the word that crosses ``k`` is taken
  with probability (room left) / (word length), so the expected number of targets stays ``p * n``;
- each target becomes ``[MASK]`` with probability ``mask_replace``, a random non-special token with
  probability ``random_replace``, and stays itself otherwise (80/10/10 by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from jaxdistill.errors import ConfigError

IGNORE_INDEX = -100

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# purposes: independent random streams per position
_P_COUNT, _P_SELECT, _P_ACTION, _P_RANDOM_ID, _P_CROSS = range(5)
STREAM_TRAIN, STREAM_EVAL = 0, 1


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _u64(v: int) -> np.ndarray:
    """A Python int as a 1-element uint64 array (arrays wrap silently; NumPy scalars warn on overflow)."""
    return np.array([int(v) % 2**64], dtype=np.uint64)


def row_keys(seed: int, stream: int, step: int, example_ids: np.ndarray) -> np.ndarray:
    """uint64 [B]: one key per example from (seed, stream, step, global example index)."""
    with np.errstate(over="ignore"):
        k = _mix(_u64(seed) * _GOLDEN + _u64(stream))
        k = _mix(k ^ (_u64(step) * _M1))
        ids = np.asarray(example_ids, dtype=np.int64).astype(np.uint64)
        return _mix(k ^ (ids * _GOLDEN + np.uint64(1)))


def _bits(keys: np.ndarray, length: int, purpose: int) -> np.ndarray:
    """uint64 [B, length] random bits for positions 0..length-1 of every row."""
    with np.errstate(over="ignore"):
        pos = np.arange(length, dtype=np.uint64) * np.uint64(8) + np.uint64(purpose)
        return _mix(keys[:, None] + pos[None, :] * _GOLDEN + np.uint64(purpose) * _M2)


def _uniform(keys: np.ndarray, length: int, purpose: int) -> np.ndarray:
    """float64 [B, length] in (0, 1]."""
    return ((_bits(keys, length, purpose) >> np.uint64(11)).astype(np.float64) + 1.0) * (2.0 ** -53)


@dataclass(frozen=True)
class MaskingSpec:
    """What the corruption needs to know about the vocabulary.

    special: bool [V], True for ids never chosen as targets ([CLS], [SEP], [PAD], [MASK], [UNK], ...).
    continuation: bool [V] or None, True for word-piece continuations ("##..."); needed for whole-word masking.
    weights: float64 [V] or None, per-id selection weight (DistilBERT smoothing), 0 for special ids.
    random_ids: int32 [M], the ids a "random" replacement draws from (the non-special vocabulary).
    """

    special: np.ndarray
    mask_id: int
    random_ids: np.ndarray
    mlm_probability: float = 0.15
    mask_replace: float = 0.8
    random_replace: float = 0.1
    whole_word: bool = False
    continuation: Optional[np.ndarray] = None
    weights: Optional[np.ndarray] = None

    def __post_init__(self):
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mask_replace < 0 or self.random_replace < 0 or self.mask_replace + self.random_replace > 1.0:
            raise ConfigError("mask_replace and random_replace must be >= 0 with a sum <= 1 (the rest is kept), "
                             f"got {self.mask_replace} and {self.random_replace}")
        if self.whole_word and self.continuation is None:
            raise ConfigError("whole-word masking needs the continuation table of the tokenizer")


def smoothing_weights(counts: np.ndarray, smoothing: float, special: np.ndarray) -> np.ndarray:
    """DistilBERT's selection weights: ``max(count, 1) ** -smoothing``, zero for special ids. [V] float64."""
    w = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** (-float(smoothing))
    w[np.asarray(special, dtype=bool)] = 0.0
    return w


def mask_tokens(tokens: np.ndarray, lengths: np.ndarray, example_ids: np.ndarray, spec: MaskingSpec, *,
                seed: int, step: int, stream: int = STREAM_TRAIN) -> Tuple[np.ndarray, np.ndarray]:
    """Corrupt a batch of sequences for MLM.

    Args:
      tokens: int [B, L] original token ids (with [CLS]/[SEP]/padding).
      lengths: int [B] number of real tokens per row (positions >= length are padding).
      example_ids: int [B] global example index of each row within the global batch of this step.
      spec: the vocabulary tables and probabilities.
      seed, step, stream: the rest of the random key (stream separates training from held-out batches).
    Returns:
      (input_ids int32 [B, L], mlm_labels int32 [B, L]) with labels = original id at targets, -100 elsewhere.
    """
    tokens = np.asarray(tokens).astype(np.int32, copy=False)
    B, L = tokens.shape
    keys = row_keys(seed, stream, step, example_ids)
    real = np.arange(L)[None, :] < np.asarray(lengths)[:, None]
    cand = real & ~spec.special[tokens]
    n_cand = cand.sum(axis=1)
    u_count = _uniform(keys, 1, _P_COUNT)[:, 0]
    k = np.floor(spec.mlm_probability * n_cand + u_count).astype(np.int64)
    k = np.minimum(k, n_cand)

    w = spec.weights[tokens] if spec.weights is not None else np.ones((B, L))
    u_sel = _uniform(keys, L, _P_SELECT)
    with np.errstate(divide="ignore"):
        race = np.where(cand & (w > 0), -np.log(u_sel) / np.where(w > 0, w, 1.0), np.inf)

    if spec.whole_word:
        selected = _select_words(tokens, cand, race, k, keys, spec.continuation)
    else:
        order = np.argsort(race, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.broadcast_to(np.arange(L), (B, L)), axis=1)
        selected = (ranks < k[:, None]) & np.isfinite(race)

    u_act = _uniform(keys, L, _P_ACTION)
    to_mask = selected & (u_act < spec.mask_replace)
    to_rand = selected & ~to_mask & (u_act < spec.mask_replace + spec.random_replace)
    rand_ids = spec.random_ids[(_bits(keys, L, _P_RANDOM_ID) % np.uint64(len(spec.random_ids))).astype(np.int64)]
    input_ids = np.where(to_mask, np.int32(spec.mask_id), tokens)
    input_ids = np.where(to_rand, rand_ids.astype(np.int32), input_ids).astype(np.int32)
    labels = np.where(selected, tokens, np.int32(IGNORE_INDEX)).astype(np.int32)
    return input_ids, labels


def word_ids(tokens: np.ndarray, cand: np.ndarray, continuation: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(word index int [B, L], word start bool [B, L]): the word of each candidate token within its row
    (-1 for non-candidates) and whether the token starts its word.

    A word starts at a candidate that is not a continuation piece, or at a continuation piece whose left
    neighbour is not a candidate (a sequence that starts mid-word).
    """
    cont = continuation[tokens] & cand
    prev_cand = np.zeros_like(cand)
    prev_cand[:, 1:] = cand[:, :-1]
    start = cand & ~(cont & prev_cand)
    wid = np.cumsum(start, axis=1) - 1
    return np.where(cand, wid, -1), start


def _select_words(tokens, cand, race, k, keys, continuation) -> np.ndarray:
    B, L = tokens.shape
    wid, start = word_ids(tokens, cand, continuation)
    rows = np.broadcast_to(np.arange(B)[:, None], (B, L))
    flat = rows * L + np.where(wid >= 0, wid, 0)
    wlen = np.bincount(flat[cand], minlength=B * L).reshape(B, L)  # tokens per word (0 = no such word)
    wkey = np.full((B, L), np.inf)
    wkey[rows[start], wid[start]] = race[start]  # a word's key is its first piece's key
    order = np.argsort(wkey, axis=1, kind="stable")
    len_sorted = np.take_along_axis(wlen, order, axis=1)
    key_sorted = np.take_along_axis(wkey, order, axis=1)
    cum_incl = np.cumsum(len_sorted, axis=1)
    cum_before = cum_incl - len_sorted
    kk = k[:, None]
    u_cross = _uniform(keys, L, _P_CROSS)
    room = (kk - cum_before) / np.maximum(len_sorted, 1)
    take_sorted = np.isfinite(key_sorted) & (len_sorted > 0) & (
        (cum_incl <= kk) | ((cum_before < kk) & (u_cross < room)))
    take = np.zeros((B, L), dtype=bool)
    np.put_along_axis(take, order, take_sorted, axis=1)
    return cand & np.take_along_axis(take, np.where(wid >= 0, wid, 0), axis=1)
