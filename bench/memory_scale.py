"""Memory and compile time that scale (issue 16, points 1 and 2): vocabulary chunking and scanned layers.

    python bench/memory_scale.py                # both parts (~5-10 minutes on the shared 2-core CPU)
    python bench/memory_scale.py --part chunks  # vocabulary chunking only
    python bench/memory_scale.py --part scan    # 24-layer compile time only
    python bench/memory_scale.py --quick        # smaller shapes, fewer steps
    python bench/memory_scale.py --part chunks --chunks 1024 256 --steps 3 --write docs/results.md
                                                # also writes its section of docs/results.md (~6 minutes)

Every figure is printed beside what it compares against, from the same run, with the load average.

chunks: the engine's own jitted `distill_step` (`train.build_step_fns`) for the `bench/vs_pytorch.py` step
shape: a MiniLM-shaped teacher (random weights: hidden 384, 6 layers, 12 heads, FFN 1536, vocab 30522) ->
a half-width student (hidden 192, 6 heads of 32, FFN 768), loss = soft KL (T = 1, real tokens) + MLM CE +
hidden MSE through identity/random projections, AdamW. For `train.vocab_chunk_tokens` = 0 (whole [B, L, V]
logits) and the chunked settings (the gradient fused into the chunk's forward pass, and for the first chunk
size also recomputed in the backward pass: `build_step_fns(fuse_vocab_gradient=False)`) it prints XLA's
memory accounting of the compiled step
(`compiled.memory_analysis()`: temporaries, arguments, outputs; their sum is the step's peak device memory
on CPU) at 16 x 128 and 64 x 128, the size of one [B, L, V] float32 logits array for comparison, and at 16 x
128 the step time of each setting, timed alternately (medians).

scan: compile time (lower + compile, no execution) of the engine's distill step for a 24-layer teacher and a
24-layer student (narrow: hidden 128, 4 heads, FFN 512, vocab 8192; 2 x 32 tokens), layers unrolled vs under
a scan (`train.scan_layers`), each remat policy of the student.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from report import load_text  # noqa: E402

from jaxdistill import objectives  # noqa: E402
from jaxdistill import sharding as shard_lib  # noqa: E402
from jaxdistill.configs import paper_recipe  # noqa: E402
from jaxdistill.models import BertConfig, init_params, logical_axes  # noqa: E402
from jaxdistill.optimizer import OptimizerConfig, make_optimizer  # noqa: E402
from jaxdistill.train import Placement, build_step_fns, create_state  # noqa: E402

MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STUDENT = dict(hidden_size=192, num_attention_heads=6, intermediate_size=768)
DEEP = dict(vocab_size=8192, hidden_size=128, num_hidden_layers=24, num_attention_heads=4, intermediate_size=512,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
MB = 2 ** 20


def recipe_for(teacher: BertConfig, student: BertConfig):
    """Soft KL over real tokens (T = 1) + MLM + hidden MSE (uniform map with projections): vs_pytorch's loss."""
    r = paper_recipe("homodistil")
    return objectives.build_recipe(r, teacher, student)


def build(teacher: BertConfig, student: BertConfig, chunk_tokens: int, fused: bool = True):
    """(step fn, state, teacher params) of the engine for these models, on a 1-device mesh."""
    mesh = shard_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    rules = shard_lib.rules_from_config(None)
    recipe = recipe_for(teacher, student)
    tx = make_optimizer(OptimizerConfig(lr=6e-4, steps=100, warmup_steps=0, decay="constant", grad_clip=1.0,
                                        weight_decay=0.01))
    tp = jax.tree.map(np.asarray, init_params(teacher, jax.random.key(0)))
    sp = jax.tree.map(np.asarray, init_params(student, jax.random.key(1)))
    proj = jax.tree.map(np.asarray, recipe.init_projections(jax.random.key(2)))
    state, state_sh = create_state(student, sp, tx, mesh, rules, 0, projections=proj)
    teacher_sh = shard_lib.logical_to_shardings(logical_axes(teacher), tp, mesh, rules)
    fns = build_step_fns(teacher, student, recipe, tx, None, Placement(mesh, rules, state_sh, teacher_sh),
                         dropout=False, vocab_chunk_tokens=chunk_tokens, fuse_vocab_gradient=fused)
    return fns.distill_step, state, jax.device_put(tp, teacher_sh)


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (batch, seq)).astype(np.int32)
    am = np.ones((batch, seq), np.int32)
    am[::3, seq * 3 // 4:] = 0
    mlm = np.where((rng.random((batch, seq)) < 0.15) & (am > 0), ids, -100).astype(np.int32)
    return dict(input_ids=ids, attention_mask=am, token_type_ids=np.zeros_like(ids), mlm_labels=mlm)


def memory_of(compiled) -> dict:
    m = compiled.memory_analysis()
    out = dict(temp=m.temp_size_in_bytes, args=m.argument_size_in_bytes, outputs=m.output_size_in_bytes,
               alias=m.alias_size_in_bytes)
    out["peak"] = out["temp"] + out["args"] + out["outputs"] - out["alias"]
    return out


def part_chunks(args) -> dict:
    """Prints (and returns) the chunking figures: {"memory": {batch: [(setting, MB dict)]}, "times": {...}}."""
    teacher = BertConfig(**MINILM, with_pooler=False)
    student = teacher.replace(**STUDENT)
    # (chunk tokens, fused gradient): whole logits, each chunk size fused, the first also recomputed.
    settings = [(0, True)] + [(c, True) for c in args.chunks] + [(args.chunks[0], False)]
    name = lambda s: "whole" if not s[0] else f"{s[0]} {'fused' if s[1] else 'recomp'}"
    print(f"\n== vocabulary chunking (load average before: {load_text()}) ==")
    print("step: MiniLM-shaped teacher -> half-width student, soft KL + MLM + hidden MSE, AdamW, float32")
    timed, memory = {}, {}
    load_start = load_text()
    for batch in args.batches:
        logits_mb = batch * args.seq_len * teacher.vocab_size * 4 / MB
        print(f"\n{batch} x {args.seq_len}: one [B, L, V] float32 logits array = {logits_mb:.0f} MB")
        print(f"{'vocab_chunk_tokens':>19}{'compile s':>11}{'temp MB':>10}{'args MB':>10}{'peak MB':>10}"
              f"{'peak vs whole':>15}")
        base = None
        for chunk in settings:
            step, state, tp = build(teacher, student, *chunk)
            b = make_batch(batch, args.seq_len, teacher.vocab_size)
            t0 = time.perf_counter()
            compiled = step.lower(state, tp, b).compile()
            seconds = time.perf_counter() - t0
            mem = memory_of(compiled)
            base = base or mem["peak"]
            memory.setdefault(batch, []).append((name(chunk), mem, seconds))
            print(f"{name(chunk):>19}{seconds:11.1f}{mem['temp'] / MB:10.0f}{mem['args'] / MB:10.0f}"
                  f"{mem['peak'] / MB:10.0f}{mem['peak'] / base:14.2f}x")
            if batch == args.batches[0]:
                timed[chunk] = (compiled, state, tp, b)
    print(f"\nstep time at {args.batches[0]} x {args.seq_len}, alternating, {args.steps} rounds (load average "
          f"before: {load_text()})")
    times = {c: [] for c in timed}
    states = {c: v[1] for c, v in timed.items()}
    for _ in range(args.steps + 1):
        for c, (compiled, _, tp, b) in timed.items():
            t0 = time.perf_counter()
            states[c], m = compiled(states[c], tp, b)
            jax.block_until_ready(m)
            times[c].append(time.perf_counter() - t0)
    base = statistics.median(times[settings[0]][1:])
    medians = {}
    for c, ts in times.items():
        medians[name(c)] = med = statistics.median(ts[1:])
        print(f"  vocab_chunk_tokens={name(c):>13}: {med:7.3f} s/step  ({med / base:.3f}x whole)")
    print(f"load average after: {load_text()}")
    return dict(memory=memory, medians=medians, logits_mb={b: b * args.seq_len * teacher.vocab_size * 4 / MB
                                                         for b in args.batches},
                load=(load_start, load_text()))


def chunks_section(args, res: dict, command: str) -> str:
    """The docs/results.md section of the chunking figures (between the vocab_chunks markers)."""
    from report import git_rev, machine_info
    m = machine_info()
    names = [n for n, _, _ in res["memory"][args.batches[0]]]
    L = ["<!-- vocab_chunks:start -->", "## Vocabulary-chunked losses: memory and speed", "",
         f"Generated by `{command}` at commit {git_rev()} on {m['cpu']} ({m['cores']} cores, {m['backend']}, "
         f"jax {m['jax']}); load average {res['load'][0]} at the start, {res['load'][1]} at the end.", "",
         "The engine's jitted `distill_step`: a MiniLM-shaped random teacher (384 hidden, 6 layers, vocabulary "
         "30522) -> a half-width student, soft KL + MLM + hidden MSE, AdamW, float32. Peak = XLA's accounting of "
         "the compiled step (temporaries + arguments + outputs). \"fused\": each chunk's gradient taken with its "
         "loss (the default); \"recomp\": the chunk's logits recomputed in the backward pass.", "",
         "| shape | [B, L, V] logits | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for b, rows in res["memory"].items():
        base = rows[0][1]["peak"]
        cells = [f"{mem['peak'] / MB:.0f} MB" + ("" if i == 0 else f" ({mem['peak'] / base:.2f}x)")
                 for i, (_, mem, _) in enumerate(rows)]
        L.append(f"| {b} x {args.seq_len} peak | {res['logits_mb'][b]:.0f} MB | " + " | ".join(cells) + " |")
    med = res["medians"]
    base = med[names[0]]
    L.append(f"| {args.batches[0]} x {args.seq_len} s/step (alternating, median of {args.steps}) | | "
             + " | ".join(f"{med[n]:.2f}" + ("" if n == names[0] else f" ({med[n] / base:.2f}x)") for n in names)
             + " |")
    L += ["", "<!-- vocab_chunks:end -->"]
    return "\n".join(L) + "\n"


def part_scan(args) -> None:
    print(f"\n== 24-layer step compile time, unrolled vs scanned (load average before: {load_text()}) ==")
    print(f"{'layers':>8}{'remat':>15}{'lower+compile s':>17}")
    results = {}
    for scan in (False, True):
        for remat in (("none", "full", "dots_saveable") if scan else ("none", "full")):
            teacher = BertConfig(**DEEP, with_pooler=False, scan_layers=scan)
            student = teacher.replace(remat=remat)
            step, state, tp = build(teacher, student, args.chunks[0])
            b = make_batch(2, 32, teacher.vocab_size)
            t0 = time.perf_counter()
            step.lower(state, tp, b).compile()
            results[(scan, remat)] = time.perf_counter() - t0
            print(f"{'scanned' if scan else 'unrolled':>8}{remat:>15}{results[(scan, remat)]:17.1f}")
    for remat in ("none", "full"):
        print(f"  remat={remat}: unrolled / scanned = {results[(False, remat)] / results[(True, remat)]:.1f}x")
    print(f"load average after: {load_text()}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("chunks", "scan", "all"), default="all")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--chunks", type=int, nargs="+", default=[4096, 1024])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--write", metavar="RESULTS_MD", help="write the chunking section of this Markdown file")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.seq_len, args.steps = [4, 16], 64, 2
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{os.cpu_count()} CPUs")
    if args.write and args.part == "scan":
        p.error("--write reports the chunking part: use --part chunks or all")
    if args.part in ("chunks", "all"):
        res = part_chunks(args)
        if args.write:
            from report import write_section
            write_section(args.write, "<!-- vocab_chunks:start -->", "<!-- vocab_chunks:end -->",
                          chunks_section(args, res, "python bench/" + " ".join([os.path.basename(__file__)]
                                                                                + sys.argv[1:])))
            print(f"wrote the chunking section of {args.write}")
    if args.part in ("scan", "all"):
        part_scan(args)


if __name__ == "__main__":
    main()
