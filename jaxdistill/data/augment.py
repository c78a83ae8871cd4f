"""Tang et al. (2019)'s data augmentation for task-specific distillation, on tokenized task examples.

Each augmented copy of an example is made word by word (a word = a WordPiece token and its `##` pieces):
- masking: each word becomes one [MASK] token with probability `p_mask`;
- n-gram sampling: with probability `p_ng`, only a random window of n consecutive words is kept, n uniform in
  1..`max_ngram` (single-sentence examples only; sentence pairs are masked only, assumed).
`copies` augmented copies are made per training example. They carry no hard label: their `labels` are
`IGNORE_LABEL` (-100), which `losses.cross_entropy` leaves out, so the hard-label CE weight of an augmented
copy is 0 while the teacher-matching terms see every row.

Settings, checked against their sources: p_mask = 0.1, p_ng = 0.25, n uniform in 1..5, 20 copies per
example. Sources: Tang et al.'s official code (castorini/d-bert, `dbert/distill/run/augment_data.py`:
`--mask_prob 0.1`, `--random_prob 0.1` (the POS-guided replacement), `--window_lengths 1 2 3 4 5`,
`--n_iter 20`; its `--window_prob` defaults to 0, so p_ng is given on the command line) and public
reimplementations that follow the paper (tacchinotacchi/distil-bilstm, PaddleNLP's distill_lstm: p_mask =
p_pos = 0.1, p_ng = 0.25, n in 1..5, n_iter = 20). The paper's own text could not be opened from this machine;
whether it used fewer copies for the larger tasks is unverified, and 20 is the default for every task here.

Not implemented: the POS-guided word replacement (p_pos = 0.1), which needs a POS tagger. In the official code
one draw per word decides mask (< p_mask) or POS replacement (< p_mask + p_pos), so leaving it out keeps
p_mask as it is and leaves unchanged the ~10 % of words the paper would have replaced: our copies are less
perturbed than the paper's. Also different from the official code (assumed here): augmentation works on the
WordPiece words of the teacher's tokenizer (the paper on NLTK words), the n-gram window may start at any
position (the official `randrange(len - n)` never picks the last one), sentence pairs are masked only, and
copies are not deduplicated (the official code drops a copy equal to a sentence it has seen, or whose every
word was replaced).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from jaxdistill.errors import ConfigError

IGNORE_LABEL = -100


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """Augmentation settings (see the module docstring); `copies` = 0 turns augmentation off."""

    copies: int = 0
    p_mask: float = 0.1
    p_ng: float = 0.25
    max_ngram: int = 5
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> "AugmentSpec":
        """From the `data.augment` section ({enabled, copies, p_mask, p_ng, max_ngram, seed}); ConfigError on
        probabilities outside [0, 1], a negative count or max_ngram < 1."""
        if cfg is None or not bool(cfg.get("enabled", False)):
            return cls(copies=0)
        spec = cls(copies=int(cfg.get("copies", 20)), p_mask=float(cfg.get("p_mask", 0.1)),
                   p_ng=float(cfg.get("p_ng", 0.25)), max_ngram=int(cfg.get("max_ngram", 5)),
                   seed=int(cfg.get("seed", 0)))
        problems = [f"data.augment.{k}={getattr(spec, k)} must be in [0, 1]" for k in ("p_mask", "p_ng")
                    if not 0.0 <= getattr(spec, k) <= 1.0]
        if spec.copies < 1:
            problems.append(f"data.augment.copies={spec.copies} must be >= 1 when augmentation is enabled")
        if spec.max_ngram < 1:
            problems.append(f"data.augment.max_ngram={spec.max_ngram} must be >= 1")
        if problems:
            raise ConfigError("; ".join(problems))
        return spec


def default_augment_config():
    """The `data.augment` section: off; when enabled, Tang et al.'s settings (see the module docstring)."""
    import ml_collections
    return ml_collections.ConfigDict(dict(enabled=False, copies=20, p_mask=0.1, p_ng=0.25, max_ngram=5, seed=0))


def segments_of(ids: np.ndarray, length: int, sep_id: int) -> List[List[int]]:
    """The token ids between [CLS] and each [SEP] of one row (`length` real tokens): one list per sentence."""
    body = [int(t) for t in ids[1:length]]
    segments, current = [], []
    for t in body:
        if t == sep_id:
            segments.append(current)
            current = []
        else:
            current.append(t)
    if current:
        segments.append(current)
    return segments


def words_of(tokens: Sequence[int], is_piece: np.ndarray) -> List[List[int]]:
    """Tokens grouped into words: a new word starts at every token that is not a `##` continuation piece."""
    words: List[List[int]] = []
    for t in tokens:
        if words and is_piece[t]:
            words[-1].append(t)
        else:
            words.append([t])
    return words


def augment_words(words: List[List[int]], rng: np.random.Generator, spec: AugmentSpec, mask_id: int,
                  allow_ngram: bool) -> List[List[int]]:
    """One augmented copy of a sentence's words: masking, then (when allowed) n-gram sampling."""
    out = [[mask_id] if rng.random() < spec.p_mask else w for w in words]
    if allow_ngram and out and rng.random() < spec.p_ng:
        n = min(int(rng.integers(1, spec.max_ngram + 1)), len(out))
        start = int(rng.integers(0, len(out) - n + 1))
        out = out[start:start + n]
    return out


def build_row(segments: List[List[int]], max_length: int, cls_id: int, sep_id: int, pad_id: int):
    """(input_ids, attention_mask, token_type_ids) int32 [max_length] of [CLS] a [SEP] (b [SEP]), each segment
    cut so that the row fits (the last segment first, as longest-first truncation would mostly do)."""
    budget = max_length - 1 - len(segments)
    segments = [list(s) for s in segments]
    while sum(map(len, segments)) > budget:
        longest = max(range(len(segments)), key=lambda i: len(segments[i]))
        segments[longest].pop()
    ids, types = [cls_id], [0]
    for k, seg in enumerate(segments):
        ids += seg + [sep_id]
        types += [k] * (len(seg) + 1)
    n = len(ids)
    pad = max_length - n
    return (np.array(ids + [pad_id] * pad, np.int32), np.array([1] * n + [0] * pad, np.int32),
            np.array(types + [0] * pad, np.int32))


def augment_split(arrays: Dict[str, np.ndarray], spec: AugmentSpec, *, vocab: Dict[str, int], cls_id: int,
                  sep_id: int, pad_id: int, mask_id: int, piece_prefix: str = "##") -> Dict[str, np.ndarray]:
    """The training split followed by `spec.copies` augmented copies of every row (labels `IGNORE_LABEL`).

    arrays: input_ids / attention_mask / token_type_ids int32 [N, L], labels int32 [N]. Returns the same keys
    with N * (1 + copies) rows: rows 0..N-1 the originals, then copy c of row i at N * (1 + c) + i. The copies
    are a pure function of (arrays, spec).
    """
    if spec.copies <= 0:
        return arrays
    ids, mask = np.asarray(arrays["input_ids"]), np.asarray(arrays["attention_mask"])
    n_rows, max_length = ids.shape
    is_piece = np.zeros(max(max(vocab.values()) + 1, int(ids.max()) + 1), bool)
    for token, i in vocab.items():
        is_piece[i] = token.startswith(piece_prefix)
    rng = np.random.default_rng(spec.seed)
    out = {k: [np.asarray(v)] for k, v in arrays.items()}
    for _ in range(spec.copies):
        rows = [[], [], []]
        for i in range(n_rows):
            segments = segments_of(ids[i], int(mask[i].sum()), sep_id)
            new = [sum(augment_words(words_of(s, is_piece), rng, spec, mask_id, allow_ngram=len(segments) == 1), [])
                   for s in segments]
            for part, row in zip(rows, build_row(new, max_length, cls_id, sep_id, pad_id)):
                part.append(row)
        for key, part in zip(("input_ids", "attention_mask", "token_type_ids"), rows):
            out[key].append(np.stack(part))
        out["labels"].append(np.full(n_rows, IGNORE_LABEL, np.int32))
    return {k: np.concatenate(v) for k, v in out.items()}
