"""Tokens/s and MFU of the distill step, next to this machine's measured matmul peak and the data pipeline rate
(issue 5's done-criterion; issue 6: the input pipeline must be far above the step rate).

    python bench/throughput.py                                  # MiniLM teacher, HomoDistil, 8 x 128, float32
    python bench/throughput.py --quick                          # tiny random teacher, ~1 minute
    python bench/throughput.py --teacher base-shape-random --batch 4 --steps 3
    python bench/throughput.py --dtype bfloat16
    python bench/throughput.py --vocab-chunk-tokens 256          # chunked vocabulary losses (issue 16)

What it measures, in one process:
  * the distill step of a real run (`train.build_run` -> `Run.step`: the jitted, donating `distill_step`, plus
    `prune_update` on its cadence), on one fixed batch, timed to `block_until_ready`, warm-up excluded;
    the figure is the median step time -> tokens/s = batch * seq / t and model FLOP/s =
    `metrics.distill_step_flops(teacher, student at its effective width)` / t (matmul FLOPs only: teacher
    forward + 3x student forward);
  * the achievable matmul peak: a jitted float32 (and, if different, the run's dtype) `jnp.dot` of two
    N x N matrices (N = --peak-size, 2048), timed between the steps so that both see the same machine load;
    MFU = model FLOP/s / that peak. On a GPU/TPU whose kind is in `metrics.PEAK_FLOPS` MFU uses the vendor
    peak instead (the measured one is printed too);
  * the data pipeline's batches/s at the same batch shape (`bench/data_pipeline.measure`: prepared corpus,
    MLM masking, background prefetch), next to the step's batches/s.

Expected on the 2-core CPU (~120-125 GFLOP/s f32 matmul peak): MiniLM 8 x 128 HomoDistil: ~3-4 s/step,
250-350 tokens/s, MFU ~0.35-0.5 (measured while the machine was shared); data pipeline thousands of
batches/s, i.e. thousands of times the step rate. Run time ~2-3 minutes (~1 with --quick). Figures:
bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from homodistil_step import make_config, set_target_widths, teacher_dir, timed  # noqa: E402
from report import load_text  # noqa: E402


def matmul_peak(n: int = 2048, dtype=jnp.float32, reps: int = 3) -> float:
    """Best-of-`reps` FLOP/s of a jitted n x n @ n x n `jnp.dot` (2 n^3 FLOPs)."""
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (n, n), dtype)
    y = jax.random.normal(k2, (n, n), dtype)
    f = jax.jit(jnp.dot)
    jax.block_until_ready(f(x, y))
    best = min(timed(f, x, y)[0] for _ in range(reps))
    return 2.0 * n ** 3 / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="minilm", help="minilm | tiny | small-random | base-shape-random")
    ap.add_argument("--recipe", default="homodistil", help="homodistil (student = copy, pruning on) or any recipe "
                    "whose student init works without extra settings")
    ap.add_argument("--no-pruning", action="store_true", help="HomoDistil recipe without masks/importance")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--steps", type=int, default=8, help="timed steps after warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps after the compiling one")
    ap.add_argument("--peak-size", type=int, default=2048)
    ap.add_argument("--data-steps", type=int, default=100, help="batches timed for the pipeline (0: skip)")
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--vocab-chunk-tokens", type=int, default=0,
                    help="train.vocab_chunk_tokens (0: whole [B, L, V] logits)")
    ap.add_argument("--quick", action="store_true", help="tiny random teacher, 8 x 64, 5 steps (~1 minute)")
    a = ap.parse_args(argv)
    if a.quick:
        a.teacher, a.seq_len, a.steps, a.data_steps = "tiny", 64, 5, 50

    from jaxdistill import metrics, train
    from jaxdistill.pruning import remaining_widths
    from jaxdistill.models import hf

    dev = jax.devices()[0]
    print(f"jax {jax.__version__} on {dev.device_kind} x{jax.device_count()}, {os.cpu_count()} CPU cores, "
          f"load average {load_text()}")
    pruning = a.recipe == "homodistil" and not a.no_pruning
    cfg = make_config(a.teacher, a.batch, a.seq_len, recipe=a.recipe, pruning=pruning, dtype=a.dtype,
                      dropout=not a.no_dropout)
    cfg.train.vocab_chunk_tokens = a.vocab_chunk_tokens
    if pruning:
        set_target_widths(cfg, hf.load_config(teacher_dir(a.teacher)))
    t0 = time.perf_counter()
    run = train.build_run(cfg)
    tc, sc = run.teacher_config, run.student_config
    print(f"teacher {a.teacher} (hidden {tc.hidden_size}, {tc.num_hidden_layers} layers, FFN {tc.intermediate_size}), "
          f"student hidden {sc.hidden_size}, {sc.num_hidden_layers} layers; recipe {a.recipe}"
          f"{' + pruning' if pruning else ''}; batch {a.batch} x {a.seq_len}, {a.dtype}, "
          f"{f'vocabulary chunks of {a.vocab_chunk_tokens} tokens' if a.vocab_chunk_tokens else 'whole logits'} "
          f"(built in {time.perf_counter() - t0:.1f}s)")
    local = run.data.batch(0)
    tokens = a.batch * a.seq_len

    t0 = time.perf_counter()
    jax.block_until_ready(run.step(local))
    print(f"compile + first step: {time.perf_counter() - t0:.1f}s", flush=True)
    for _ in range(a.warmup):
        jax.block_until_ready(run.step(local))

    peak_dtypes = [jnp.float32] + ([jnp.bfloat16] if a.dtype == "bfloat16" else [])
    step_t, peaks = [], {d: [] for d in peak_dtypes}
    for _ in range(a.steps):
        t0 = time.perf_counter()
        m = run.step(local)
        jax.block_until_ready((m, run.state))
        step_t.append(time.perf_counter() - t0)
        for d in peak_dtypes:
            peaks[d].append(matmul_peak(a.peak_size, d))
    t = statistics.median(step_t)
    widths = remaining_widths(jax.device_get(run.state.masks)) if run.pruning_config else None
    flops = metrics.distill_step_flops(tc, sc, a.batch, a.seq_len, widths)
    peak_meas = {d: max(v) for d, v in peaks.items()}
    vendor = metrics.device_peak_flops(dev) if dev.platform != "cpu" else None
    run_peak_dtype = jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32
    peak = vendor or peak_meas[run_peak_dtype]
    mfu = flops / t / peak

    data_rate = None
    if a.data_steps:
        from data_pipeline import measure
        data_rate = measure(a.batch, a.seq_len, a.data_steps, tokenizer_dir=run.tokenizer_dir, verbose=False)

    print()
    print(f"{'distill step (median of ' + str(len(step_t)) + ')':<40}{t * 1e3:12.1f} ms  "
          f"(min {min(step_t) * 1e3:.1f}, max {max(step_t) * 1e3:.1f})")
    print(f"{'tokens/s':<40}{tokens / t:12.1f}")
    print(f"{'model FLOPs/step (teacher fwd + 3x student)':<40}{flops / 1e9:12.1f} GFLOP")
    print(f"{'model FLOP/s':<40}{flops / t / 1e9:12.1f} GFLOP/s")
    for d, v in peak_meas.items():
        print(f"{f'matmul peak {jnp.dtype(d).name} {a.peak_size}^2 (max of {len(peaks[d])})':<40}"
              f"{v / 1e9:12.1f} GFLOP/s  (median {statistics.median(peaks[d]) / 1e9:.1f})")
    if vendor:
        print(f"{'vendor peak (metrics.PEAK_FLOPS)':<40}{vendor / 1e9:12.1f} GFLOP/s")
    print(f"{'MFU (model FLOP/s / peak)':<40}{mfu:12.3f}   vs {'vendor' if vendor else 'measured'} "
          f"{jnp.dtype(run_peak_dtype).name if not vendor else ''} peak")
    if not vendor:
        med_peak = statistics.median(peaks[run_peak_dtype])
        print(f"{'MFU vs the median peak (load-matched)':<40}{flops / t / med_peak:12.3f}")
    print(f"{'step rate':<40}{1 / t:12.3f} batches/s")
    if data_rate is not None:
        print(f"{'data pipeline (same batch shape)':<40}{data_rate:12.1f} batches/s  "
              f"= {data_rate * t:.0f}x the step rate")
    print(f"load average after: {load_text()}")


if __name__ == "__main__":
    main()
