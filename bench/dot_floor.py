"""How fast the distill step could be on this CPU with XLA's matmul kernels, and with PyTorch's (issue 16, points 4-5).

    python bench/dot_floor.py                        # MiniLM HomoDistil step, 8 x 128 (bench/throughput.py's)
    python bench/dot_floor.py --batch 16 --reps 5
    python bench/dot_floor.py --quick                # tiny random teacher, ~1 minute

Measured on the 2-core development machine (9ab1cd8+ and 247d99c, quiet; bench/README.md): 18 distinct dots, 221 per
step, 195 GFLOP; XLA's kernels do them in 1.24-1.30 s alone, PyTorch's in 0.96-1.00 s (XLA / PyTorch 1.30-1.31x);
the step takes 2.25-2.52 s, so the dots are 52-55 % of it; MFU now 0.38-0.43, bound 0.74-0.78. Run time ~1 min.

The step's matrix multiplications are most of its work, so their speed bounds the step's. This script compiles
the engine's distill step (`train.build_run` -> `fns.distill_step`, whole logits), reads every `dot` of the
optimized HLO with how often it runs per step (`hlo_text.executions`: loop trip counts included), and times each
distinct dot alone, with all cores, interleaved:
  * XLA: a jitted `lax.dot_general` with the same shapes and dimension numbers (the step's own backend);
  * PyTorch: `torch.einsum` of the same contraction (oneDNN / MKL, `torch.set_num_threads(<cores>)`), the
    kernels both eager PyTorch and `torch.compile` call for matmuls on CPU.
It prints per dot (sorted by time): shapes, executions per step, GFLOP, ms in XLA and in PyTorch, their ratio;
then the sums, the step's median time measured in the same run, and two bounds:
  * the step's dots alone at XLA's standalone speed (the step time if nothing else cost anything and no dot ran
    slower inside the step than alone), as a share of the measured step;
  * the MFU that bound allows: model FLOPs (`metrics.distill_step_flops`) / that time / the 2048^2 matmul peak
    measured in the same run (bench/throughput.py's figure) - issue 16 point 5 asks for 0.5;
  * the PyTorch kernels' sum on the same dots, i.e. the floor under a PyTorch step doing this work.
A 1.3x lead over `torch.compile` (point 4) needs the jaxdistill step at most torch.compile's step / 1.3, and
torch.compile's step is at least the PyTorch kernels' sum.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import os
import statistics
import sys
from typing import Dict, Tuple

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import hlo_text  # noqa: E402
from report import call_times, load_text, machine_info  # noqa: E402
from workers import available_cores  # noqa: E402

DOT_DIMS = ("lhs_batch_dims", "rhs_batch_dims", "lhs_contracting_dims", "rhs_contracting_dims")


@dataclasses.dataclass(frozen=True)
class Dot:
    """One dot's operand shapes and dimension numbers (each a tuple of axis indices)."""
    dtype: str
    lhs: Tuple[int, ...]
    rhs: Tuple[int, ...]
    lhs_batch: Tuple[int, ...] = ()
    rhs_batch: Tuple[int, ...] = ()
    lhs_contracting: Tuple[int, ...] = ()
    rhs_contracting: Tuple[int, ...] = ()

    @property
    def flops(self) -> int:
        """2 x (every lhs element) x (rhs dims that are neither batch nor contracting)."""
        free_rhs = [d for i, d in enumerate(self.rhs) if i not in self.rhs_batch + self.rhs_contracting]
        return 2 * math.prod(self.lhs) * math.prod(free_rhs)

    def label(self) -> str:
        def side(shape, batch, contract):
            return "[" + ",".join(("b" if i in batch else "k" if i in contract else "") + str(d)
                                  for i, d in enumerate(shape)) + "]"
        return (f"{side(self.lhs, self.lhs_batch, self.lhs_contracting)} x "
                f"{side(self.rhs, self.rhs_batch, self.rhs_contracting)}")


def dims_attr(line: str, name: str) -> Tuple[int, ...]:
    key = name + "={"
    at = line.find(key)
    if at < 0:
        return ()
    inner = line[at + len(key):line.index("}", at)]
    return tuple(int(x) for x in inner.split(",") if x.strip())


def dots_of(hlo: str) -> Dict[Dot, int]:
    """Every `dot` of a compiled HLO module -> executions per call (loops counted by their trip counts)."""
    module = hlo_text.parse(hlo)
    counts: Dict[Dot, int] = collections.Counter()
    for op, rest, line, times in hlo_text.executions(module):
        if op != "dot":
            continue
        lhs_name, rhs_name = hlo_text.operands(rest)[:2]
        dtype, lhs = hlo_text.array_dims(module.shapes[lhs_name])
        _, rhs = hlo_text.array_dims(module.shapes[rhs_name])
        counts[Dot(dtype, lhs, rhs, *(dims_attr(line, n) for n in DOT_DIMS))] += times
    if module.unknown_trips:
        raise ValueError(f"{module.unknown_trips} while loop(s) without a known trip count: dots inside them "
                         "cannot be counted")
    return dict(counts)


def einsum_spec(dot: Dot) -> str:
    """The `einsum` subscripts of a dot_general with these dimension numbers (output: batch, lhs free, rhs free)."""
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [None] * len(dot.lhs)
    rhs = [None] * len(dot.rhs)
    for i, j in zip(dot.lhs_batch + dot.lhs_contracting, dot.rhs_batch + dot.rhs_contracting):
        lhs[i] = rhs[j] = next(letters)
    lhs = [c or next(letters) for c in lhs]
    rhs = [c or next(letters) for c in rhs]
    out = ([lhs[i] for i in dot.lhs_batch] + [c for i, c in enumerate(lhs) if i not in dot.lhs_batch + dot.lhs_contracting]
           + [c for i, c in enumerate(rhs) if i not in dot.rhs_batch + dot.rhs_contracting])
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def best_of(fn, reps: int) -> float:
    fn()
    return min(call_times(fn, reps))


def xla_timer(dot: Dot):
    import jax
    import jax.numpy as jnp
    dtype = jnp.bfloat16 if dot.dtype == "bf16" else jnp.float32
    k1, k2 = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(k1, dot.lhs, dtype), jax.random.normal(k2, dot.rhs, dtype)
    dims = ((dot.lhs_contracting, dot.rhs_contracting), (dot.lhs_batch, dot.rhs_batch))
    f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims))
    return lambda: jax.block_until_ready(f(a, b))


def torch_timer(dot: Dot):
    import torch
    dtype = torch.bfloat16 if dot.dtype == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(dot.lhs, generator=g, dtype=dtype), torch.randn(dot.rhs, generator=g, dtype=dtype)
    spec = einsum_spec(dot)
    return lambda: torch.einsum(spec, a, b)


def measure(dots: Dict[Dot, int], reps: int, rounds: int) -> Dict[Dot, Tuple[float, float]]:
    """Per dot: (best XLA seconds, best PyTorch seconds) over `rounds` interleaved rounds of `reps` calls."""
    timers = {d: (xla_timer(d), torch_timer(d)) for d in dots}
    best = {d: [math.inf, math.inf] for d in dots}
    for _ in range(rounds):
        for d, (fx, ft) in timers.items():
            best[d][0] = min(best[d][0], best_of(fx, reps))
            best[d][1] = min(best[d][1], best_of(ft, reps))
    return {d: (x, t) for d, (x, t) in best.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="minilm", help="minilm | tiny | small-random | base-shape-random")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed distill steps (median)")
    ap.add_argument("--reps", type=int, default=3, help="calls per dot per round (best kept)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all dots")
    ap.add_argument("--quick", action="store_true", help="tiny random teacher, 8 x 64, 3 steps, 1 round (~1 minute)")
    a = ap.parse_args(argv)
    if a.quick:
        a.teacher, a.seq_len, a.steps, a.rounds = "tiny", 64, 3, 1

    import jax
    import torch
    from homodistil_step import make_config, set_target_widths, teacher_dir
    from throughput import matmul_peak
    from jaxdistill import metrics, train
    from jaxdistill.models import hf
    from jaxdistill.pruning import remaining_widths

    cores = len(available_cores())
    torch.set_num_threads(cores)
    info = machine_info()
    print(f"{info['cpu']} ({cores} cores), jax {jax.__version__}, torch {torch.__version__}; "
          f"load average before {load_text()}")
    cfg = make_config(a.teacher, a.batch, a.seq_len, recipe="homodistil", pruning=True, dtype="float32", dropout=True)
    set_target_widths(cfg, hf.load_config(teacher_dir(a.teacher)))
    run = train.build_run(cfg)
    local = run.data.batch(0)
    hlo = run.fns.distill_step.lower(run.state, run.teacher_params, run.global_batch(local)).compile().as_text()
    dots = dots_of(hlo)
    for _ in range(2):
        jax.block_until_ready(run.step(local))
    step_times = call_times(lambda: jax.block_until_ready((run.step(local), run.state)), a.steps)
    step = statistics.median(step_times)
    widths = remaining_widths(jax.device_get(run.state.masks))
    model_flops = metrics.distill_step_flops(run.teacher_config, run.student_config, a.batch, a.seq_len, widths)
    timed = measure(dots, a.reps, a.rounds)
    peak = max(matmul_peak(2048) for _ in range(3))
    square = torch.randn(2048, 2048)
    torch_peak_t = best_of(lambda: torch.mm(square, square), 3)

    rows = sorted(dots.items(), key=lambda kv: -kv[1] * timed[kv[0]][0])
    print(f"\nteacher {a.teacher} -> HomoDistil student (a copy), batch {a.batch} x {a.seq_len}, float32, whole "
          f"logits: {len(dots)} distinct dots, {sum(dots.values())} per step")
    print(f"{'dot (b: batch, k: contracted)':<44}{'x/step':>7}{'GFLOP':>8}{'XLA ms':>9}{'torch ms':>10}{'XLA/torch':>10}")
    for d, n in rows:
        x, t = timed[d]
        print(f"{d.label():<44}{n:>7}{n * d.flops / 1e9:>8.2f}{n * x * 1e3:>9.1f}{n * t * 1e3:>10.1f}{x / t:>10.2f}")
    dot_flops = sum(n * d.flops for d, n in dots.items())
    xla = sum(n * timed[d][0] for d, n in dots.items())
    pt = sum(n * timed[d][1] for d, n in dots.items())
    print(f"\n{'dots per step':<52}{dot_flops / 1e9:9.1f} GFLOP (model FLOPs {model_flops / 1e9:.1f})")
    print(f"{'the dots alone, XLA kernels':<52}{xla * 1e3:9.1f} ms  ({dot_flops / xla / 1e9:.1f} GFLOP/s)")
    print(f"{'the dots alone, PyTorch kernels':<52}{pt * 1e3:9.1f} ms  ({dot_flops / pt / 1e9:.1f} GFLOP/s; "
          f"XLA / PyTorch {xla / pt:.2f}x)")
    print(f"{'distill step, median of ' + str(len(step_times)):<52}{step * 1e3:9.1f} ms  (the XLA dots alone: "
          f"{xla / step:.0%} of it)")
    print(f"{'matmul peak 2048^2: XLA / PyTorch':<52}{peak / 1e9:9.1f} / {2 * 2048 ** 3 / torch_peak_t / 1e9:.1f} GFLOP/s")
    print(f"{'MFU now (model FLOPs / step / XLA peak)':<52}{model_flops / step / peak:9.3f}")
    print(f"{'MFU bound: only the dots, at XLA standalone speed':<52}{model_flops / xla / peak:9.3f}")
    print(f"load average after: {load_text()}")


if __name__ == "__main__":
    main()
