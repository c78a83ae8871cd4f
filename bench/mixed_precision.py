"""bfloat16 against float32 on the same distill step (issue 16, point 6): loss agreement, speed, memory, MFU.

    python bench/mixed_precision.py --quick        # tiny random teacher, 8 x 64, ~1 minute on the 2-core CPU
    python bench/mixed_precision.py --teacher minilm --batch 8 --seq-len 128 --write docs/results.md
                                                   # real all-MiniLM-L6-v2 weights on CPU, ~4 minutes
    python bench/mixed_precision.py --synthetic --write docs/results.md
                                                   # point 6's setting, for a GPU: BERT-base-shaped teacher ->
                                                   # HomoBERT-base (student = copy, pruning on), 256 x 128

What it measures, in one process. Two runs built by the engine (`train.build_run`, so the jitted, donating
`distill_step` and `prune_update` on its cadence) from one config that differs only in `train.dtype`, the
activations' compute dtype (parameters, optimizer and importance state, losses and softmaxes stay float32):
the same teacher, student initialisation (HomoDistil's copy of the teacher), batches and dropout keys.
  * loss: each run's loss at each of the first --loss-steps steps (batches 0, 1, ...). The verdict is
    |loss_bf16 - loss_f32| <= --rtol * |loss_f32| at every one of those steps; --rtol = 0.02 was fixed before
    any result was seen. Each loss term is printed too.
  * speed: then --steps more steps of each run on one fixed batch, alternating bf16, f32, bf16, ..., each
    timed to `block_until_ready`; medians -> tokens/s and model FLOP/s (`metrics.distill_step_flops`:
    teacher forward + student forward and backward at its effective width, matmuls only) -> MFU against the
    vendor's dense bf16 peak (`metrics.PEAK_FLOPS`) on a GPU/TPU, or on CPU against the best 2048^2 matmul of
    the arm's dtype, measured between the steps.
  * memory: XLA's accounting of each compiled step (`compiled.memory_analysis()`: temporaries + arguments +
    outputs - aliased buffers, i.e. the step's peak device memory) with the time to lower and compile it,
    and, where the device reports it (GPU,
    TPU), the process's peak bytes in use at the end (both runs alive).

`--write PATH` replaces the section between the `mixed_precision` markers of that Markdown file with the
figures, the command, the commit and the machine.

On a GPU machine (e.g. the device tool's H200: 15 minutes, jax 0.11 with its CUDA plugin, flax, optax and
orbax installed, nothing fetchable), `--synthetic` needs nothing beyond the core JAX stack: carry the
ml-collections wheel and run
    python bench/mixed_precision.py --synthetic --write docs/results.md
It writes a random BERT-base-shaped teacher (no tokenizer), feeds random token batches (`SyntheticBatches`),
compiles two BERT-base steps (~1-2 minutes) and runs 2 x (5 + 10) steps; the whole logits at 256 x 128 are
4 GB per float32 copy, well within 80 GB. jax 0.10 is what the project pins and tests; `--quick --synthetic`
also ran on CPU with jax 0.11.2, flax 0.12.12 and orbax-checkpoint 0.12.8 (a Python 3.12 venv), untried on a GPU.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from homodistil_step import CACHE, RANDOM_TEACHERS, make_config, set_target_widths, teacher_dir  # noqa: E402
from memory_scale import make_batch, memory_of  # noqa: E402
from report import load_text  # noqa: E402
from throughput import matmul_peak  # noqa: E402

DTYPES = ("bfloat16", "float32")
START, END = "<!-- mixed_precision:start -->", "<!-- mixed_precision:end -->"
MB = 2 ** 20


class SyntheticBatches:
    """`--synthetic`'s batch source: random token ids (a third of the rows padded at the end) with 15 % MLM
    targets, batch `step` drawn from seed `step` (`memory_scale.make_batch`)."""

    def __init__(self, batch: int, seq_len: int, vocab_size: int):
        self.shape = (batch, seq_len, vocab_size)

    def batch(self, step: int) -> dict:
        return make_batch(*self.shape, seed=step)


def synthetic_teacher_dir(name: str) -> str:
    """A random teacher of a named shape (`homodistil_step.RANDOM_TEACHERS`) as a Hugging Face directory
    without tokenizer files: what `--synthetic` needs, with nothing beyond the core JAX stack."""
    from jaxdistill.models import BertConfig, hf, init_params
    if name not in RANDOM_TEACHERS:
        raise SystemExit(f"--synthetic needs a random teacher shape, one of {sorted(RANDOM_TEACHERS)}; got {name!r}")
    out = os.path.join(CACHE, f"teacher-{name}-no-tokenizer")
    if not os.path.exists(os.path.join(out, "config.json")):
        cfg = BertConfig(vocab_size=30522, **RANDOM_TEACHERS[name])
        tmp = out + f".{os.getpid()}.tmp"
        hf.export(cfg, init_params(cfg, jax.random.key(0)), tmp, overwrite=True)
        os.replace(tmp, out)
    return out


def compiled_step(run, local_batch):
    """(bytes, seconds): XLA's accounting of the run's compiled distill step (`memory_scale.memory_of`'s peak:
    temporaries + arguments + outputs - aliased) and the wall time of its lowering and compilation."""
    t0 = time.perf_counter()
    compiled = run.fns.distill_step.lower(run.state, run.teacher_params, run.global_batch(local_batch)).compile()
    seconds = time.perf_counter() - t0
    return int(memory_of(compiled)["peak"]), seconds


def loss_terms(metrics) -> dict:
    """The scalar `loss` and `loss/...` entries of a step's metrics, as floats."""
    host = jax.device_get(metrics)
    return {k: float(v) for k, v in host.items() if k == "loss" or k.startswith("loss/")}


def measure(a) -> dict:
    """Builds both runs, compares their losses, times them alternately; the figures as a dict."""
    from jaxdistill import metrics, train
    from jaxdistill.models import hf
    from jaxdistill.pruning import remaining_widths

    dev = jax.devices()[0]
    res = dict(device=dev.device_kind, platform=dev.platform, n_devices=jax.device_count(),
               load=[load_text()], runs={}, losses={}, compile_s={}, memory={})
    teacher = synthetic_teacher_dir(a.teacher) if a.synthetic else teacher_dir(a.teacher)
    teacher_cfg = hf.load_config(teacher)
    for dtype in DTYPES:
        cfg = make_config(a.teacher, a.batch, a.seq_len, recipe="homodistil", pruning=True, dtype=dtype,
                          dropout=not a.no_dropout, teacher_path=teacher)
        cfg.train.vocab_chunk_tokens = a.vocab_chunk_tokens
        set_target_widths(cfg, teacher_cfg)
        data = SyntheticBatches(a.batch, a.seq_len, teacher_cfg.vocab_size) if a.synthetic else None
        run = train.build_run(cfg, data=data)
        res["memory"][dtype], res["compile_s"][dtype] = compiled_step(run, run.data.batch(0))
        res["losses"][dtype] = [loss_terms(run.step(run.data.batch(s))) for s in range(a.loss_steps)]
        res["runs"][dtype] = run
        print(f"{dtype}: built, compiled and ran {a.loss_steps} steps; compiled step memory "
              f"{res['memory'][dtype] / MB:.0f} MB", flush=True)
    run0 = res["runs"][DTYPES[0]]
    res["teacher"] = run0.teacher_config
    fixed = run0.data.batch(a.loss_steps)
    for run in res["runs"].values():
        for _ in range(a.warmup):
            jax.block_until_ready(run.step(fixed))
    on_cpu = dev.platform == "cpu"
    times = {d: [] for d in DTYPES}
    peaks = {d: [] for d in DTYPES}
    for _ in range(a.steps):
        for d, run in res["runs"].items():
            t0 = time.perf_counter()
            jax.block_until_ready((run.step(fixed), run.state))
            times[d].append(time.perf_counter() - t0)
            if on_cpu:
                peaks[d].append(matmul_peak(a.peak_size, jnp.dtype(d)))
    res["times"] = times
    widths = {d: remaining_widths(jax.device_get(r.state.masks)) for d, r in res["runs"].items()}
    res["flops"] = {d: metrics.distill_step_flops(r.teacher_config, r.student_config, a.batch, a.seq_len, widths[d])
                    for d, r in res["runs"].items()}
    vendor = None if on_cpu else metrics.device_peak_flops(dev)
    res["peak"] = {d: (max(peaks[d]) if on_cpu else vendor) for d in DTYPES}
    res["peak_kind"] = "measured 2048^2 matmul of the arm's dtype (max)" if on_cpu else \
        ("vendor dense bf16 (metrics.PEAK_FLOPS)" if vendor else "unknown")
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    res["device_peak_bytes"] = (stats or {}).get("peak_bytes_in_use")
    res["load"].append(load_text())
    return res


def report_lines(a, res: dict) -> list:
    """The table and the verdict, as Markdown lines (printed, and written by --write)."""
    tokens = a.batch * a.seq_len
    med = {d: statistics.median(res["times"][d]) for d in DTYPES}
    L = ["| | bfloat16 | float32 | bf16 / f32 |", "|---|---|---|---|"]
    L.append(f"| step, median of {a.steps} (alternating) | {med['bfloat16'] * 1e3:.1f} ms | "
             f"{med['float32'] * 1e3:.1f} ms | {med['bfloat16'] / med['float32']:.2f}x time |")
    L.append(f"| tokens/s | {tokens / med['bfloat16']:.0f} | {tokens / med['float32']:.0f} | |")
    mfu = {}
    for d in DTYPES:
        mfu[d] = res["flops"][d] / med[d] / res["peak"][d] if res["peak"][d] else float("nan")
    L.append(f"| MFU ({res['peak_kind']}) | {mfu['bfloat16']:.3f} | {mfu['float32']:.3f} | |")
    L.append(f"| peak used for MFU | {res['peak']['bfloat16'] / 1e12:.3f} TFLOP/s | "
             f"{res['peak']['float32'] / 1e12:.3f} TFLOP/s | |" if res["peak"]["bfloat16"] else
             "| peak used for MFU | unknown device kind | | |")
    L.append(f"| compiled step memory (XLA accounting) | {res['memory']['bfloat16'] / MB:.0f} MB | "
             f"{res['memory']['float32'] / MB:.0f} MB | {res['memory']['bfloat16'] / res['memory']['float32']:.2f}x |")
    L.append(f"| lower + compile the step | {res['compile_s']['bfloat16']:.1f} s | "
             f"{res['compile_s']['float32']:.1f} s | |")
    pairs = [(b["loss"], f["loss"]) for b, f in zip(res["losses"]["bfloat16"], res["losses"]["float32"])]
    relative = [abs(lb - lf) / abs(lf) for lb, lf in pairs]
    for s, ((lb, lf), r) in enumerate(zip(pairs, relative)):
        L.append(f"| loss at step {s} | {lb:.5f} | {lf:.5f} | {r:.2e} relative |")
    terms = sorted(k for k in res["losses"]["float32"][0] if k != "loss")
    for k in terms:
        lb, lf = res["losses"]["bfloat16"][0][k], res["losses"]["float32"][0][k]
        L.append(f"| {k} at step 0 | {lb:.5f} | {lf:.5f} | {abs(lb - lf):.2e} absolute |")
    ok = all(r <= a.rtol for r in relative)
    L += ["", f"bf16 loss within {a.rtol:g} (relative) of float32 at each of the first {a.loss_steps} steps: "
              f"**{'yes' if ok else 'NO'}** (largest difference {max(relative):.2e})."]
    if res["device_peak_bytes"]:
        L.append(f"Peak device memory of the process (both runs alive): {res['device_peak_bytes'] / 2 ** 30:.2f} GiB.")
    return L


def section(a, res: dict, lines: list, command: str) -> str:
    from report import git_rev, machine_info
    m = machine_info()
    tc = res["teacher"]
    head = [START, "## bfloat16 against float32 (issue 16, point 6)", "",
            f"Generated by `{command}` at commit {git_rev()} on {res['device']} x{res['n_devices']} "
            f"({m['cpu']}, {m['cores']} cores, jax {m['jax']}); load average {res['load'][0]} at the start, "
            f"{res['load'][1]} at the end.", "",
            f"The engine's HomoDistil step (student = copy of the teacher, pruning on, "
            f"{'dropout off' if a.no_dropout else 'dropout on'}): teacher `{a.teacher}` (hidden {tc.hidden_size}, "
            f"{tc.num_hidden_layers} layers), batch {a.batch} x {a.seq_len}, "
            f"{f'vocabulary chunks of {a.vocab_chunk_tokens} tokens' if a.vocab_chunk_tokens else 'whole logits'}; "
            "the two runs differ only in `train.dtype` (parameters, optimizer state, losses and softmaxes stay "
            "float32).", ""]
    if a.synthetic:
        head += ["Synthetic data (`--synthetic`): random token batches, a random teacher of this shape.", ""]
    if res["platform"] == "cpu":
        head += ["On CPU the MFU is against the best 2048^2 matmul of each dtype measured between the steps. "
                 "Point 6's GPU figure (BERT-base -> HomoBERT-base at 256 x 128, target >= 45 %) needs "
                 "`python bench/mixed_precision.py --synthetic --write docs/results.md` on a GPU; no session has "
                 "been lent one yet.", ""]
    return "\n".join(head + lines + ["", END]) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="base-shape-random", help="minilm | tiny | small-random | base-shape-random")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--loss-steps", type=int, default=5, help="steps whose losses are compared (batches 0, 1, ...)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per dtype, alternating")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rtol", type=float, default=0.02, help="relative tolerance of the bf16 loss (fixed: 0.02)")
    ap.add_argument("--vocab-chunk-tokens", type=int, default=0)
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--peak-size", type=int, default=2048)
    ap.add_argument("--synthetic", action="store_true",
                    help="random token batches and a random teacher written without tokenizer files: needs only "
                         "the core JAX stack (jax, flax, optax, orbax, ml-collections, safetensors), e.g. on a "
                         "device machine without the data libraries")
    ap.add_argument("--quick", action="store_true", help="tiny random teacher, 8 x 64, 3 + 3 steps")
    ap.add_argument("--write", metavar="PATH", help="write the section of this Markdown file (docs/results.md)")
    a = ap.parse_args(argv)
    if a.quick:
        a.teacher, a.batch, a.seq_len, a.loss_steps, a.steps, a.peak_size = "tiny", 8, 64, 3, 3, 512
    if a.loss_steps < 1 or a.steps < 1:
        raise SystemExit("--loss-steps and --steps must be >= 1")
    if a.write and not os.path.isdir(os.path.dirname(os.path.abspath(a.write))):
        raise SystemExit(f"--write {a.write}: its folder does not exist")

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, load average {load_text()}")
    res = measure(a)
    lines = report_lines(a, res)
    print()
    print("\n".join(lines))
    print(f"load average after: {res['load'][1]}")
    if a.write:
        from report import write_section
        command = "python bench/mixed_precision.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
        write_section(a.write, START, END, section(a, res, lines, command.strip()))
        print(f"wrote the section of {a.write}")
    return res


if __name__ == "__main__":
    main()
