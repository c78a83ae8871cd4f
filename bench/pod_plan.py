r"""The pod plan, by simulation (issue 16, point 3): does the paper's HomoDistil step fit a pod slice, and how?

    python bench/pod_plan.py              # the whole matrix (30 cases, ~1 h of compiles on the shared 2-core
                                          # machine), then writes docs/scale.md from the cached results
    python bench/pod_plan.py --report     # rewrite docs/scale.md from the cached results only (no compiles)
    python bench/pod_plan.py --only base-n8-data-a4-none-c0 [...]   # (re)compile some cases (cached as JSON)
    python bench/pod_plan.py --quick      # a tiny BERT on 2 and 4 fake devices (~30 s a case); prints, writes nothing

What it does, per case: the engine's own `distill_step` (`train.build_step_fns`, the jitted, donating step a
real run calls), built from the `homodistil:base` preset resolved by `experiment.resolve` exactly as `jaxdistill
distill` resolves it, is lowered and compiled ahead of time with abstract inputs only (ShapeDtypeStructs
carrying the run's NamedShardings: the TrainState of `train.state.state_layout`, the teacher's parameters,
the [B, L] batch) on a (data, fsdp, tensor) mesh of fake CPU devices. Nothing is allocated. Each device count
runs in its own process (`--xla_force_host_platform_device_count` must be set before JAX starts); each case's
result is written to `bench/results/pod_plan/<case>.json` as soon as it is compiled, so an interrupted run
resumes where it stopped (`--fresh` recompiles).

Per case it records, per device:
- XLA's memory accounting of the compiled step (`compiled.memory_analysis()`): arguments, outputs, the
  donated (aliased) part, temporaries; peak = arguments + outputs + temporaries - aliased.
- The arguments split by what they hold, from the shardings (per-device shard shapes x item size): the
  student's parameters (+ the objective's projections), the optimizer state, HomoDistil's importance state
  (3 parameter-sized float32 trees), masks/step/rng, the teacher's parameters, the batch. They add up to
  XLA's argument bytes (checked). Temporaries are reported as activations (they also hold gradients and
  the gathered weights of an fsdp-sharded model).
- The collectives of the compiled (per-device, SPMD-partitioned) HLO: all-reduce, all-gather, reduce-scatter,
  all-to-all, collective-permute, with their operand bytes, counted once per execution: an op inside a
  while loop (the layer scan, the gradient-accumulation scan, the vocabulary chunks) counts its trip count
  times (XLA's `known_trip_count`).
- Lowering and compile time, and the worker process's peak RSS (what compiling it costs the host).

The cases: the paper setting (BERT-base teacher -> HomoBERT-base, global batch 4096 x 128, bf16 activations,
AdamW, HomoDistil pruning on) on 8, 16 and 32 devices, mesh split over data, fsdp or fsdp x tensor 2, with and
without gradient accumulation (the preset's `accum_steps=4`), rematerialisation and vocabulary chunking; and
a BERT-large teacher -> base-size student (HomoDistil: a copy of BERT-large pruned to base widths) at the best
setting. `docs/scale.md` holds the tables and the extrapolation to v4-64 and v5e-256 slices.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import hlo_text  # noqa: E402  (bench/hlo_text.py)

RESULTS = os.path.join(HERE, "results", "pod_plan")
DOC = os.path.join(ROOT, "docs", "scale.md")
GIB = 2 ** 30
MB = 1e6

# Teacher shapes (Hugging Face config fields) and the pruning targets of the student. "base" is bert-base-uncased
# and the homodistil:base preset's HomoBERT-base widths; "large" is bert-large-uncased pruned to base-size widths
# (hidden 768, 16 heads x 48 = 768, FFN 3072: assumed, the paper's presets start from BERT-base); "tiny" is for
# the test and --quick.
MODELS = {
    "base": dict(shape=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
                 widths=dict(hidden=768, head_dim=32, ffn=1472), name="BERT-base -> HomoBERT-base"),
    "large": dict(shape=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
                  widths=dict(hidden=768, head_dim=48, ffn=3072), name="BERT-large -> base-size"),
    "tiny": dict(shape=dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64),
                 widths=dict(hidden=16, head_dim=4, ffn=32), name="tiny BERT (test)"),
}
SPLITS = ("data", "fsdp", "fsdp_t2")   # (N, 1, 1), (1, N, 1), (1, N/2, 2)
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mlm_labels")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


@dataclasses.dataclass(frozen=True)
class Case:
    """One compiled configuration: model, device count, mesh split, global batch x length, gradient
    accumulation steps, student remat policy, vocabulary chunk tokens (0 = whole logits), scanned layers, student
    dropout (the preset's True)."""

    model: str
    devices: int
    split: str
    batch: int = 4096
    seq: int = 128
    accum: int = 4
    remat: str = "none"
    chunk: int = 0
    scan: bool = False
    dropout: bool = True
    xla_default: bool = False   # compile with XLA's default options instead of COMPILER_OPTIONS (a check)

    @property
    def mesh(self) -> Dict[str, int]:
        return mesh_of(self.split, self.devices)

    @property
    def name(self) -> str:
        n = f"{self.model}-n{self.devices}-{self.split}-a{self.accum}-{self.remat}-c{self.chunk}"
        if (self.batch, self.seq) != (4096, 128):
            n += f"-b{self.batch}x{self.seq}"
        return (n + ("-scan" if self.scan else "") + ("" if self.dropout else "-nodrop")
                + ("-xladefault" if self.xla_default else ""))

    @property
    def family(self) -> tuple:
        """Everything but the device count: the cases an extrapolation in N is fitted over."""
        return (self.model, self.split, self.batch, self.seq, self.accum, self.remat, self.chunk, self.scan,
                self.dropout, self.xla_default)


def mesh_of(split: str, n: int) -> Dict[str, int]:
    if split == "data":
        return {"data": n, "fsdp": 1, "tensor": 1}
    if split == "fsdp":
        return {"data": 1, "fsdp": n, "tensor": 1}
    if split == "fsdp_t2":
        return {"data": 1, "fsdp": n // 2, "tensor": 2}
    raise ValueError(f"unknown split {split!r}; one of {SPLITS}")


CHUNK = 16384  # vocab_chunk_tokens: 16 positions x 1024 rows per chunk at accum 4 (4 positions at accum 1)


def paper_matrix() -> List[Case]:
    """The cases of docs/scale.md (40-120 s each to compile with scanned layers, up to 7 min unrolled, on the
    shared 2-core machine)."""
    best = dict(remat="full", chunk=CHUNK, scan=True)   # layers scanned, each recomputed in the backward pass
    # Below the 8-device mesh: do they still fit?
    cases = [Case("base", 4, "data", accum=4, **best), Case("base", 4, "fsdp", accum=4, **best)]
    for n in (8, 16, 32):
        cases += [Case("base", n, "data", accum=4, **best),
                  Case("base", n, "fsdp", accum=4, **best),
                  Case("base", n, "data", accum=1, **best),
                  Case("large", n, "data", accum=4, **best),
                  Case("large", n, "fsdp", accum=4, **best),   # BERT-large's ~9 GiB of state, sharded
                  Case("base", n, "data", accum=4, remat="none", chunk=0)]   # the preset as shipped
    # One factor at a time on 8 devices: around the best setting, and the unrolled layers.
    cases += [Case("base", 8, "data", accum=4, remat="none", chunk=CHUNK, scan=True),
              Case("base", 8, "data", accum=4, remat="full", chunk=0, scan=True),
              Case("base", 8, "data", accum=4, remat="dots_saveable", chunk=CHUNK, scan=True),
              Case("base", 8, "data", accum=4, dropout=False, **best),
              Case("base", 8, "fsdp_t2", accum=4, **best),
              Case("base", 8, "data", accum=4, remat="full", chunk=CHUNK),
              Case("base", 8, "data", accum=4, remat="full", chunk=CHUNK, dropout=False),
              Case("base", 8, "fsdp", accum=4, remat="full", chunk=CHUNK),
              Case("base", 8, "fsdp", accum=4, remat="full", chunk=CHUNK, dropout=False),
              Case("base", 8, "fsdp_t2", accum=4, remat="full", chunk=CHUNK),
              Case("base", 8, "data", accum=1, remat="full", chunk=CHUNK),
              Case("base", 8, "data", accum=1, remat="full", chunk=CHUNK, dropout=False)]
    # The same case at XLA's default optimisation level: memory and collectives must not change.
    cases += [Case("base", 8, "data", accum=4, remat="none", chunk=0, xla_default=True)]
    return cases


def quick_matrix() -> List[Case]:
    return [Case("tiny", n, s, batch=8, seq=16, accum=a, remat="full", chunk=32)
            for n in (2, 4) for s in ("data", "fsdp") for a in (1, 2)]


# ------------------------------------------------------------------------------------------ one case
def teacher_dir(model: str, root: str) -> str:
    """A directory holding only the teacher's config.json (the step needs its shape, never its weights)."""
    from jaxdistill.models import BertConfig
    path = os.path.join(root, model)
    os.makedirs(path, exist_ok=True)
    config = dict(BertConfig(**MODELS[model]["shape"]).to_hf_dict(), architectures=["BertForMaskedLM"])
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def config_for(case: Case, teacher_path: str):
    """The `homodistil:base` preset with this case's teacher, batch, mesh and memory options."""
    from jaxdistill.configs import homodistil
    c = homodistil.get_config("base")
    c.teacher.path = teacher_path
    c.data.seq_len = case.seq
    c.train.update(dict(batch_size=case.batch, accum_steps=case.accum, vocab_chunk_tokens=case.chunk,
                        scan_layers=case.scan, dropout=case.dropout))
    with c.train.ignore_type():  # the default is the bool False; a policy name is a str
        c.train.remat = case.remat
    c.mesh.update(case.mesh)
    c.pruning.update(MODELS[case.model]["widths"])
    return c


def shard_bytes(tree) -> int:
    """Bytes per device of a tree of ShapeDtypeStructs carrying shardings (every device holds one shard)."""
    import jax
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def abstract_inputs(exp, mesh):
    """(placement, state, teacher params, batch) as ShapeDtypeStructs with the run's shardings on `mesh` (a
    real or an abstract mesh): what `train.build_run` would place there, without loading or allocating."""
    import jax
    import jax.numpy as jnp
    from jaxdistill import sharding as shard_lib
    from jaxdistill.models import init_params, logical_axes
    from jaxdistill.optimizer import make_optimizer
    from jaxdistill.train import Placement, abstract_like
    from jaxdistill.train.state import state_layout

    t = exp.config.train
    tx = make_optimizer(exp.optimizer)
    teacher = jax.eval_shape(lambda r: init_params(exp.teacher_config, r), jax.random.key(0))
    student = teacher if exp.student_init == "copy" else \
        jax.eval_shape(lambda r: init_params(exp.student_config, r), jax.random.key(0))
    projections = jax.eval_shape(exp.recipe.init_projections, jax.random.key(1))
    _, state, state_sh = state_layout(exp.student_config, student, tx, mesh, exp.rules, int(t.seed),
                                      projections=projections, pruning_config=exp.pruning)
    teacher_sh = shard_lib.logical_to_shardings(logical_axes(exp.teacher_config), teacher, mesh, exp.rules)
    batch_sh = jax.sharding.NamedSharding(mesh, shard_lib.batch_sharding(mesh).spec)
    batch = {k: jax.ShapeDtypeStruct((exp.batch_size, int(exp.data["seq_len"])), jnp.int32, sharding=batch_sh)
             for k in BATCH_KEYS}
    placement = Placement(mesh, exp.rules, state_sh, teacher_sh)
    return placement, abstract_like(state, state_sh), abstract_like(teacher, teacher_sh), batch


def argument_split(state, teacher, batch) -> Dict[str, int]:
    """Per-device bytes of the step's arguments by what they hold."""
    return {"params": shard_bytes(state.params["student"]) + shard_bytes(state.params["projections"]),
            "opt_state": shard_bytes(state.opt_state), "importance": shard_bytes(state.importance),
            "other_state": shard_bytes((state.step, state.masks, state.rng)),
            "teacher": shard_bytes(teacher), "batch": shard_bytes(batch)}


def resolve_case(case: Case, root: str, num_devices: Optional[int] = None):
    from jaxdistill.experiment import resolve
    return resolve(config_for(case, teacher_dir(case.model, root)),
                   num_devices=case.devices if num_devices is None else num_devices, process_count=1)


# XLA options of every compile here. Level 0 turns off LLVM's optimisations of the generated CPU code, which
# take most of the compile time; the HLO passes, SPMD partitioning and buffer assignment, which set the memory
# and the collectives measured, are the same at every level (bench/pod_plan.py --check-opt-level compares).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def plan_case(case: Case, devices: Sequence = None, root: Optional[str] = None, keep_hlo: bool = False,
              compiler_options: Optional[dict] = None) -> dict:
    """Lowers and compiles `case`'s distill step on `devices` (default: the first `case.devices` of this
    process); returns its per-device memory, argument split, collectives and timings (see the module doc).
    compiler_options: XLA options of the compile (default COMPILER_OPTIONS; {} = XLA's defaults)."""
    import jax
    from jaxdistill import sharding as shard_lib
    from jaxdistill.train import build_step_fns
    from jaxdistill.optimizer import make_optimizer

    devices = list(devices) if devices is not None else jax.devices()[:case.devices]
    if len(devices) != case.devices:
        raise ValueError(f"case {case.name} needs {case.devices} devices, got {len(devices)}")
    if root is None:
        with tempfile.TemporaryDirectory(prefix="pod-plan-") as tmp:
            return plan_case(case, devices, tmp, keep_hlo, compiler_options)
    exp = resolve_case(case, root)
    mesh = shard_lib.make_mesh(exp.mesh_sizes, devices=devices)
    placement, state, teacher, batch = abstract_inputs(exp, mesh)
    t = exp.config.train
    fns = build_step_fns(exp.teacher_config, exp.student_config, exp.recipe, make_optimizer(exp.optimizer),
                         exp.pruning, placement, accum_steps=int(t.accum_steps), dropout=bool(t.get("dropout", True)),
                         vocab_chunk_tokens=exp.vocab_chunk_tokens)
    t0 = time.perf_counter()
    lowered = fns.distill_step.lower(state, teacher, batch)
    t1 = time.perf_counter()
    options = COMPILER_OPTIONS if compiler_options is None else compiler_options
    options = {} if case.xla_default else options
    compiled = lowered.compile(dict(options)) if options else lowered.compile()
    t2 = time.perf_counter()
    m = compiled.memory_analysis()
    memory = dict(arguments=m.argument_size_in_bytes, outputs=m.output_size_in_bytes, aliased=m.alias_size_in_bytes,
                  temp=m.temp_size_in_bytes, code=m.generated_code_size_in_bytes)
    memory["peak"] = memory["arguments"] + memory["outputs"] + memory["temp"] - memory["aliased"]
    hlo = compiled.as_text()
    from jaxdistill import task_distill
    out = dict(case=dataclasses.asdict(case), name=case.name, mesh=case.mesh,
               rows_per_device=case.batch // (case.mesh["data"] * case.mesh["fsdp"]),
               micro_rows_per_device=case.batch // (case.mesh["data"] * case.mesh["fsdp"]) // case.accum,
               memory=memory, arguments=argument_split(state, teacher, batch),
               collectives=count_collectives(hlo), lower_s=round(t1 - t0, 2), compile_s=round(t2 - t1, 2),
               step_flops=task_distill.step_flops(exp, case.seq),
               params=sum(math.prod(x.shape) for x in jax.tree.leaves(state.params["student"])),
               teacher_params=sum(math.prod(x.shape) for x in jax.tree.leaves(teacher)),
               compiler_options=dict(options),
               host_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    if keep_hlo:
        out["hlo"] = hlo
    return out


# ------------------------------------------------------------------------------------- HLO collectives
def group_size(line: str) -> int:
    """Devices per replica group of a collective's HLO line (1 when it cannot be read)."""
    m = re.search(r"replica_groups=mesh\[([^\]]*)\].*?\{([^}]*)\}", line)
    if m:  # replica_groups=mesh['axis_0'=2,...], device_ids=(...) {'axis_0', ...}
        sizes = dict((k, int(v)) for k, v in re.findall(r"'(\w+)'=(\d+)", m.group(1)))
        return math.prod(sizes.get(a, 1) for a in re.findall(r"'(\w+)'", m.group(2)))
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    if m:  # iota form [groups, size]<=[N]
        return int(m.group(2))
    m = re.search(r"replica_groups=\{\{([^}]*)\}", line)
    if m:
        return len(m.group(1).split(","))
    m = re.search(r"source_target_pairs=\{([^}]*)\}", line)
    return 2 if m else 1


def count_collectives(hlo: str) -> dict:
    """Collectives of a compiled HLO module, weighted by how often each runs per call of the entry computation.

    Returns {kind: {"ops": static count, "calls": executions per step, "bytes": operand bytes per step
    (per device), "moved": bytes each device sends per step under ring algorithms}, "while_unknown_trips": n,
    "largest": the 8 collectives with the most bytes per step (kind, group size, operand bytes, calls, op_name)}.
    A collective inside a while body counts trip-count times (nested loops multiply); both branches of a
    conditional count (an upper bound). Async pairs (`*-start`/`*-done`) count once, at the start.
    """
    module = hlo_text.parse(hlo)
    totals = {k: {"ops": 0, "calls": 0, "bytes": 0, "moved": 0} for k in COLLECTIVES}
    for instrs in module.computations.values():
        for op, _, _ in instrs:
            kind = op[:-6] if op.endswith("-start") else op
            if kind in totals:
                totals[kind]["ops"] += 1
    top: Dict[tuple, int] = {}
    for op, rest, line, times in hlo_text.executions(module):
        kind = op[:-6] if op.endswith("-start") else op
        if kind not in totals:
            continue
        nbytes = sum(hlo_text.type_bytes(module.shapes.get(o, "")) for o in hlo_text.operands(rest))
        n = group_size(line)
        if kind == "all-reduce":
            moved = 2 * (n - 1) / n * nbytes
        elif kind == "all-gather":
            moved = (n - 1) * nbytes
        elif kind in ("reduce-scatter", "all-to-all"):
            moved = (n - 1) / n * nbytes
        else:
            moved = nbytes
        where = re.search(r'op_name="([^"]*)"', line)
        key = (kind, n, nbytes, where.group(1) if where else "?")
        top[key] = top.get(key, 0) + times
        t = totals[kind]
        t["calls"] += times
        t["bytes"] += times * nbytes
        t["moved"] += times * moved
    for t in totals.values():
        t["moved"] = int(t["moved"])
    largest = sorted(top.items(), key=lambda kv: -kv[0][2] * kv[1])[:8]
    return dict(totals, while_unknown_trips=module.unknown_trips,
                largest=[dict(kind=k, group=n, bytes=b, calls=c, op_name=w[-160:]) for (k, n, b, w), c in largest])


# -------------------------------------------------------------------------------------------- workers
def result_path(results: str, case: Case) -> str:
    return os.path.join(results, case.name + ".json")


def cached(results: str, case: Case) -> Optional[dict]:
    path = result_path(results, case)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        r = json.load(f)
    return None if "error" in r else r


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_worker(n: int, names: Sequence[str], results: str, cases: Sequence[Case]) -> None:
    """In a process with `n` fake devices: compiles each named case and writes its JSON right away."""
    import jax
    assert jax.device_count() == n, f"expected {n} fake devices, got {jax.device_count()}"
    by_name = {c.name: c for c in cases}
    with tempfile.TemporaryDirectory(prefix="pod-plan-") as root:
        for name in names:
            compile_one(by_name[name], n, root, results)


def compile_one(case: Case, n: int, root: str, results: str) -> None:
    """Compiles one case in the worker and writes its JSON (or its error, retried on the next run)."""
    import gc
    import jax
    name = case.name
    print(f"[{n} devices] {name}: compiling (load average {os.getloadavg()[0]:.1f})", flush=True)
    try:
        r = plan_case(case, root=root)
        r.update(commit=git_commit(), jax=jax.__version__,
                 when=datetime.datetime.now().isoformat(timespec="seconds"))
        print(f"[{n} devices] {name}: peak {r['memory']['peak'] / GIB:.2f} GiB/device, temp "
              f"{r['memory']['temp'] / GIB:.2f} GiB, compile {r['compile_s']:.0f} s, host RSS "
              f"{r['host_peak_rss_mb']} MB", flush=True)
    except Exception as e:  # recorded, and retried on the next run
        r = dict(name=name, case=dataclasses.asdict(case), error=f"{type(e).__name__}: {e}",
                 traceback=traceback.format_exc()[-4000:])
        print(f"[{n} devices] {name}: FAILED {r['error']}", flush=True)
    os.makedirs(results, exist_ok=True)
    with open(result_path(results, case), "w") as f:
        json.dump(r, f, indent=1)
    jax.clear_caches()
    gc.collect()


def spawn_workers(todo: Sequence[Case], results: str, matrix: str) -> None:
    by_n: Dict[int, List[str]] = {}
    for c in todo:
        by_n.setdefault(c.devices, []).append(c.name)
    for n, names in sorted(by_n.items()):
        env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=ROOT)
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--matrix", matrix,
               "--results", results, "--only", *names]
        print(f"== {n} fake devices: {len(names)} case(s) in a subprocess", flush=True)
        subprocess.run(cmd, env=env, check=False)


# --------------------------------------------------------------------------------------------- report
# Device memory per chip. v4: 32 GiB HBM2 per chip (cloud.google.com/tpu/docs/v4); v5e: 16 GB HBM2 per chip
# (cloud.google.com/tpu/docs/v5e); an 80 GB A100/H100. A run fits when its peak is at most FIT_FRACTION of it
# (runtimes keep some for themselves: e.g. JAX reports ~15.75 GiB usable on a 16 GiB v5e chip).
CAPACITIES = (("16 GiB", 16 * GIB), ("32 GiB", 32 * GIB), ("80 GiB", 80 * GIB))
FIT_FRACTION = 0.9
V5E_ICI_BYTES_S = 400e9     # bidirectional ICI bandwidth per v5e chip (cloud.google.com/tpu/docs/v5e)
V5E_BF16_FLOPS = 197e12     # peak bf16 compute per v5e chip (same page)
SLICES = (("v4-64", 32, 32 * GIB, "32 chips x 32 GiB (v4-64 counts 64 TensorCores = 32 chips, one JAX device each)"),
          ("v5e-256", 256, 16 * GIB, "256 chips x 16 GiB (one TensorCore = one JAX device per chip)"))


def gib(x: float) -> str:
    return f"{x / GIB:.2f}"


def fits(peak: float) -> str:
    return " / ".join("yes" if peak <= FIT_FRACTION * cap else "no" for _, cap in CAPACITIES)


def setting_label(c: dict) -> str:
    chunk = f"chunk {c['chunk']}" if c["chunk"] else "whole logits"
    return (f"{c['split']}, accum {c['accum']}, remat {c['remat']}, {chunk}" + (", scan" if c.get("scan") else "")
            + ("" if c.get("dropout", True) else ", dropout off"))


def fit_temp(points: Sequence[dict]):
    """Least-squares temp = a + b * micro_rows_per_device over a family's measured cases; (a, b, max rel err)."""
    xs = [p["micro_rows_per_device"] for p in points]
    ys = [p["memory"]["temp"] for p in points]
    if len(set(xs)) < 2:
        return None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    err = max(abs(a + b * x - y) / y for x, y in zip(xs, ys))
    return a, b, err


_ARGS_CACHE: Dict[tuple, Dict[str, int]] = {}


def extrapolate(family: Sequence[dict], n: int, root: str, accum: Optional[int] = None) -> Optional[dict]:
    """The family's per-device peak on `n` devices (and `accum` micro-batches, default the family's): the
    arguments exactly, from the shardings on an abstract n-device mesh of the same split; the temporaries from
    the family's linear fit in micro-batch rows per device (`fit_temp`); the outputs not donated as measured on
    its largest mesh. None when the fit is impossible or the batch does not split."""
    import jax
    fit = fit_temp(family)
    if fit is None:
        return None
    a, b, err = fit
    case = Case(**dict(family[0]["case"], devices=n, accum=accum or family[0]["case"]["accum"]))
    sizes = mesh_of(case.split, n) if n >= (2 if case.split == "fsdp_t2" else 1) else None
    if sizes is None or case.batch % (sizes["data"] * sizes["fsdp"] * case.accum):
        return None
    key = (case.model, case.split, case.batch, case.seq, n)
    if key not in _ARGS_CACHE:  # the state does not depend on accumulation, remat, chunking or dropout
        exp = resolve_case(case, root, num_devices=n)
        mesh = jax.sharding.AbstractMesh(tuple(sizes.values()), tuple(sizes),
                                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
        _, state, teacher, batch = abstract_inputs(exp, mesh)
        _ARGS_CACHE[key] = argument_split(state, teacher, batch)
    args = _ARGS_CACHE[key]
    rows = case.batch // (sizes["data"] * sizes["fsdp"]) // case.accum
    largest = max(family, key=lambda p: p["case"]["devices"])
    extra = largest["memory"]["outputs"] - largest["memory"]["aliased"]
    temp = max(a + b * rows, 0.0)
    return dict(arguments=args, temp=temp, peak=sum(args.values()) + temp + extra, fit_err=err, rows=rows,
                accum=case.accum, a=a, b=b)


def ordered(results: Sequence[dict]) -> List[dict]:
    order = {n: i for i, n in enumerate(["base", "large", "tiny"])}
    return sorted(results, key=lambda r: (order.get(r["case"]["model"], 9), r["case"]["devices"], r["memory"]["peak"]))


def collective_summary(r: dict) -> str:
    c = r["collectives"]
    parts = [f"{k} {c[k]['calls']}x {c[k]['bytes'] / 1e9:.2f} GB" for k in COLLECTIVES if c[k]["calls"]]
    return "; ".join(parts) or "none"


def moved_gb(r: dict) -> float:
    return sum(r["collectives"][k]["moved"] for k in COLLECTIVES) / 1e9


def is_best(c: dict) -> bool:
    """The setting docs/scale.md recommends: scanned layers, full remat, chunked vocabulary, data parallel."""
    return (c["split"], c["remat"], c["scan"], c["chunk"] > 0, c.get("dropout", True)) == ("data", "full", True,
                                                                                          True, True)


def fsdp_vs_data(results: Sequence[dict], devices: int) -> str:
    """A sentence comparing the recommended data-parallel case with its fsdp twin on `devices` devices."""
    def twin(split):
        return next((r for r in results if r["case"]["devices"] == devices and r["case"]["accum"] == 4
                     and is_best(dict(r["case"], split="data")) and r["case"]["split"] == split), None)
    data, fsdp = twin("data"), twin("fsdp")
    if data is None or fsdp is None:
        return ""
    return (f" On {devices} devices fsdp (parameters, AdamW and importance sharded over all of them) needs "
            f"{gib(fsdp['memory']['peak'])} GiB per device against data parallelism's {gib(data['memory']['peak'])} "
            f"GiB, and moves {moved_gb(fsdp):.1f} GB per device per step against {moved_gb(data):.1f} GB: data "
            "parallelism where it fits, fsdp where memory decides (the answer above takes the lowest peak).")


def write_report(results: Sequence[dict], failed: Sequence[dict], path: str, command: str) -> None:
    with tempfile.TemporaryDirectory(prefix="pod-plan-report-") as root:
        write_report_in(results, failed, path, command, root)


def write_report_in(results: Sequence[dict], failed: Sequence[dict], path: str, command: str, root: str) -> None:
    import jax
    commits = sorted({r.get("commit", "?") for r in results})
    checks = [r for r in results if r["case"].get("xla_default")]
    results = [r for r in results if not r["case"].get("xla_default")]
    by_name = {r["name"]: r for r in results}
    families: Dict[tuple, List[dict]] = {}
    for r in results:
        families.setdefault(Case(**r["case"]).family, []).append(r)
    base = [r for r in results if r["case"]["model"] == "base"]
    large = [r for r in results if r["case"]["model"] == "large"]
    cap_note = f"peak <= {FIT_FRACTION:.0%} of the device memory"

    def smallest(group, accum, cap):
        ok = [r for r in group if r["case"]["accum"] == accum and r["memory"]["peak"] <= FIT_FRACTION * cap]
        if not ok:
            return None
        n = min(r["case"]["devices"] for r in ok)
        return min((r for r in ok if r["case"]["devices"] == n), key=lambda r: r["memory"]["peak"])

    lines = [
        "# The pod plan, by simulation (issue 16, point 3)", "",
        "Generated by `bench/pod_plan.py` from its cached per-case results (`bench/results/pod_plan/*.json`); do "
        "not edit by hand. `python bench/pod_plan.py --report` rewrites it without compiling; `python "
        "bench/pod_plan.py` compiles the missing cases first (`--fresh`: all of them).", "",
        f"- command: `{command}`",
        f"- written at commit {git_commit()} on {datetime.datetime.now().isoformat(timespec='minutes')}; the cases "
        f"were compiled at commit(s) {', '.join(commits)}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, jax {jax.__version__}; every compile ran on fake "
        "CPU devices (`--xla_force_host_platform_device_count`, one process per device count), XLA options "
        f"{json.dumps(results[0].get('compiler_options', {}))}", ""]
    # ------------------------------------------------------------------------------------------- answer
    lines += ["## Answer", ""]
    for model, group in (("base", base), ("large", large)):
        if not group:
            continue
        lines += [f"**{MODELS[model]['name']}**, global batch 4096 x 128 (smallest measured mesh on which some "
                  f"setting fits, {cap_note}; the lowest-peak setting there):", "",
                  "| device memory | accum_steps | smallest N | setting | peak GiB / device |", "|---|---|---|---|---|"]
        for cap_name, cap in CAPACITIES:
            for accum in sorted({r["case"]["accum"] for r in group}, reverse=True):
                best = smallest(group, accum, cap)
                if best is None:
                    tried = sorted({r["case"]["devices"] for r in group if r["case"]["accum"] == accum})
                    lines.append(f"| {cap_name} | {accum} | none of {tried} | | |")
                else:
                    lines.append(f"| {cap_name} | {accum} | {best['case']['devices']} | "
                                 f"{setting_label(best['case'])} | {gib(best['memory']['peak'])} |")
        lines.append("")
    preset = [r for r in base if (r["case"]["split"], r["case"]["accum"], r["case"]["remat"], r["case"]["chunk"],
                                  r["case"]["scan"], r["case"].get("dropout", True)) == ("data", 4, "none", 0, False, True)]
    bests = [r for r in base if is_best(r["case"]) and r["case"]["accum"] == 4]
    if preset:
        lines += ["The preset as shipped (`homodistil:base`: data parallel, accum_steps 4, layers unrolled, no remat, "
                  "whole logits), for comparison:", "",
                  "| device memory | smallest N | peak GiB / device |", "|---|---|---|"]
        for cap_name, cap in CAPACITIES:
            best = smallest(preset, 4, cap)
            tried = sorted({r["case"]["devices"] for r in preset})
            lines.append(f"| {cap_name} | {best['case']['devices']} | {gib(best['memory']['peak'])} |" if best else
                         f"| {cap_name} | none of {tried} | |")
        lines.append("")
    for model, group in (("base", base), ("large", large)):
        pick = {cap_name: smallest(group, 4, cap) for cap_name, cap in CAPACITIES}
        if not group or pick["16 GiB"] is None and pick["32 GiB"] is None:
            continue
        parts = []
        if pick["16 GiB"] is not None:
            n = pick["16 GiB"]["case"]["devices"]
            parts.append(f"{n} chips of 16 GiB (a v5e-{n} slice)")
        if pick["32 GiB"] is not None:
            n = pick["32 GiB"]["case"]["devices"]
            parts.append(f"{n} chips of 32 GiB (v4-{2 * n}: {n} chips, {2 * n} TensorCores)")
        best = pick["32 GiB"] or pick["16 GiB"]
        lines.append(f"**Smallest slice, {MODELS[model]['name']}, with the preset's accum_steps 4 (measured):** "
                     + " or ".join(parts) + f", with `{setting_label(best['case'])}`. More accumulation fits fewer "
                     "chips still (the extrapolated table at the end); without accumulation see the rows above.")
        if pick["16 GiB"] is None:
            data_best = min((r for r in group if r["case"]["split"] == "data"), key=lambda r: r["memory"]["peak"])
            a = data_best["arguments"]
            lines.append(f"It fits no 16 GiB chip count here: data parallelism replicates its "
                         f"{gib(sum(a.values()))} GiB of state on every device (parameters {gib(a['params'])}, AdamW "
                         f"{gib(a['opt_state'])}, importance {gib(a['importance'])}, teacher {gib(a['teacher'])}), and the "
                         "replicated gradients and update temporaries come on top, so even v5e-256 misses (extrapolation "
                         "below). Sharding that state is what fsdp is for (its rows in the tables below).")
        lines.append("")
    same_n = sorted({r["case"]["devices"] for r in preset} & {r["case"]["devices"] for r in bests})
    if same_n:
        p8 = next(r for r in preset if r["case"]["devices"] == same_n[0])
        b8 = next(r for r in bests if r["case"]["devices"] == same_n[0])
        lines += [
            f"The preset as shipped (`homodistil:base`: data parallel, accum_steps 4, layers unrolled, no remat, whole "
            f"[B, L, V] logits) needs {gib(p8['memory']['peak'])} GiB per device on {p8['case']['devices']} devices; "
            f"with `--config.train.scan_layers=true --config.train.remat=full "
            f"--config.train.vocab_chunk_tokens={CHUNK}` the same step needs "
            f"{gib(b8['memory']['peak'])} GiB ({b8['memory']['peak'] / p8['memory']['peak']:.2f}x). The layer scan "
            "is what makes remat work here: with unrolled layers XLA is free to schedule every layer's recomputation "
            "early in the backward pass (a buffer live-range dump of the unrolled case, `--xla_dump_to`, showed the "
            "recomputed activations of all twelve layers live at the peak), so remat full with unrolled layers "
            "saves much less (8-device table); under the scan one layer is recomputed at a time. The state itself "
            "(parameters, AdamW, PLATON "
            "importance, teacher) is ~3 GiB replicated; the activations of the per-device micro-batch are what "
            "decide the fit." + fsdp_vs_data(base, b8['case']['devices']), ""]
    # ---------------------------------------------------------------------------------------- method
    lines += [
        "## What is simulated", "",
        "The engine's own jitted `distill_step` (`train.build_step_fns`, the donating step `jaxdistill distill` "
        "runs) for the `homodistil:base` preset resolved by `experiment.resolve`: global batch 4096 x 128, bf16 "
        "activations, float32 parameters, AdamW, HomoDistil pruning on (PLATON importance updated inside the "
        "step), student dropout on unless said, loss MLM + prediction KL + hidden MSE over 13 projected hidden "
        "states (the preset's attention-KL match has weight 0 and is dropped). It is lowered and "
        "compiled ahead of time with abstract inputs (ShapeDtypeStructs carrying the run's NamedShardings, the "
        "state laid out by `train.state.state_layout`) on a (data, fsdp, tensor) mesh of fake CPU devices; "
        "nothing is allocated. The separate `prune_step` (every 10 steps; it touches only the state) is not "
        "compiled.", "",
        "- **base**: BERT-base teacher (12 x 768, 110M parameters with the MLM head) -> HomoBERT-base: the student "
        "is a copy of the teacher pruned by masks to hidden 768, 12 heads x 32, FFN 1472, so its parameters, "
        "optimizer and importance state keep the teacher's size for the whole run.",
        "- **large**: BERT-large teacher (24 x 1024, 16 heads, FFN 4096) -> a base-size student the HomoDistil "
        "way: a copy of BERT-large pruned to hidden 768, 16 heads x 48, FFN 3072 (widths assumed), so the trained "
        "state is BERT-large-sized.",
        "- split: `data` = mesh (N, 1, 1), the preset's `mesh.data=-1`; `fsdp` = (1, N, 1): parameters, "
        "optimizer and importance sharded on their `embed` axis, the batch over fsdp too; `fsdp_t2` = (1, N/2, 2): "
        "plus tensor parallelism (heads, FFN and vocabulary over 2).",
        f"- accum: `train.accum_steps` (the preset's 4: micro-batches of 1024 x 128 accumulated in a scan); remat: "
        f"`train.remat` of the student layers; chunk: `train.vocab_chunk_tokens` ({CHUNK} tokens = 16 positions of "
        "a 1024-row micro-batch), else whole logits; scan: `train.scan_layers=true` (teacher and student).", "",
        "Columns are **per device**: XLA's `compiled.memory_analysis()` (peak = arguments + outputs + "
        "temporaries - donated); the arguments split by what they hold, computed from the shardings (they equal "
        "XLA's argument bytes plus the teacher's pooler, which the step never reads and jit drops); temporaries "
        "= activations, plus gradients, optimizer temporaries and gathered fsdp weights. Fits: "
        f"{cap_note} for 16 / 32 / 80 GiB. Collectives: executions per step and operand bytes per step per device, "
        "counted in the compiled HLO with while-loop trip counts (accumulation scan, layer scan, vocabulary "
        "chunks); moved = bytes each device sends per step under ring algorithms (all-reduce 2(n-1)/n x operand, "
        "all-gather (n-1) x operand, reduce-scatter and all-to-all (n-1)/n x operand).", "",
        "Caveats: this is XLA:CPU's SPMD partitioning, schedule and buffer assignment. The partitioning is the same "
        "pass on TPU and GPU; the schedule and buffers are not: the TPU compiler schedules collectives "
        "asynchronously, rematerialises by itself when memory runs short and pads layouts to (8, 128) tiles, and "
        "XLA:CPU keeps some bf16 work in float32. The arguments (the state) are exact; treat the temporaries as "
        "an estimate to within tens of percent.", ""]
    for chk in checks:
        twin = by_name.get(Case(**dict(chk["case"], xla_default=False)).name)
        if twin is None:
            continue
        same_mem = chk["memory"] == twin["memory"]
        same_coll = all(chk["collectives"][k] == twin["collectives"][k] for k in COLLECTIVES)
        lines += [f"XLA options {json.dumps(twin.get('compiler_options', {}))} change only the generated machine code "
                  f"(LLVM's optimisations), not the HLO passes that set memory and collectives: `{twin['name']}` "
                  f"compiled at XLA's defaults gives {'identical' if same_mem else 'DIFFERENT'} memory_analysis and "
                  f"{'identical' if same_coll else 'DIFFERENT'} collectives ({chk['compile_s']:.0f} s to compile vs "
                  f"{twin['compile_s']:.0f} s; compile times here are only indicative: the machine was shared with other "
                  "jobs, load average 5-10 on its 2 cores).", ""]
    # ---------------------------------------------------------------------------------------- tables
    for title, group in (("BERT-base -> HomoBERT-base, 4096 x 128", base),
                         ("BERT-large -> base-size student, 4096 x 128", large)):
        if not group:
            continue
        r0 = group[0]
        lines += [f"## {title}", "",
                  f"Trained parameters {r0['params'] / 1e6:.1f}M (the student, a copy of the teacher, with the MLM head "
                  f"and pooler, + the objective's projections), teacher {r0['teacher_params'] / 1e6:.1f}M; step "
                  f"{r0['step_flops'] / 1e15:.2f} PFLOP (teacher forward + 3x student forward at full width). "
                  "Rows sorted by peak; **bold** settings are the recommended one.", ""]
        for n in sorted({r["case"]["devices"] for r in group}):
            rows = ordered([r for r in group if r["case"]["devices"] == n])
            lines += [f"### {n} devices", "",
                      "| setting | rows / device (micro-batch) | params | opt state | importance | teacher | "
                      "activations (temp) | **peak GiB** | fits 16 / 32 / 80 | collectives per step (operand bytes) | "
                      "moved GB | compile s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in rows:
                a, m = r["arguments"], r["memory"]
                label = setting_label(r["case"])
                label = f"**{label}**" if is_best(r["case"]) else label
                lines.append(
                    f"| {label} | {r['rows_per_device']} ({r['micro_rows_per_device']}) | {gib(a['params'])} | "
                    f"{gib(a['opt_state'])} | {gib(a['importance'])} | {gib(a['teacher'])} | {gib(m['temp'])} | "
                    f"**{gib(m['peak'])}** | {fits(m['peak'])} | {collective_summary(r)} | {moved_gb(r):.1f} | "
                    f"{r['compile_s']:.0f} |")
            lines.append("")
    # ---------------------------------------------------------------------------------- collectives
    lines += ["## Where the collective bytes go", "",
              "The largest collectives per step (kind, devices per group, operand MB, executions per step, the JAX "
              "operation it came from):", ""]
    for name in [f"base-n32-data-a4-full-c{CHUNK}-scan", f"base-n32-fsdp-a4-full-c{CHUNK}-scan",
                 f"base-n8-fsdp-a4-full-c{CHUNK}"]:
        r = by_name.get(name)
        if r is None:
            continue
        lines += [f"`{name}` ({setting_label(r['case'])}, {r['case']['devices']} devices): {collective_summary(r)}", ""]
        for c in r["collectives"]["largest"][:5]:
            lines.append(f"- {c['kind']}, group {c['group']}, {c['bytes'] / 1e6:.1f} MB x {c['calls']}: "
                         f"`...{c['op_name'][-100:]}`")
        lines.append("")
    lines += [
        "Reading them: with data parallelism the gradients are all-reduced inside the accumulation scan, once per "
        "micro-batch (accum_steps x the parameter bytes per step instead of once), and the MLM head's gradient "
        "once per vocabulary chunk of every micro-batch: XLA's partitioner reduces each micro-batch's replicated "
        "gradient where it is produced. Summing local gradients and reducing once per step (e.g. a `shard_map`ped "
        "accumulation) would divide the data-parallel traffic by about accum_steps. With `fsdp` the batch stays "
        "split and each layer's weights are all-gathered where they are used (the many small all-gathers: per "
        "layer, micro-batch and recomputation); the gradients are still all-reduced where they are produced rather "
        "than reduce-scattered, so fsdp moves about the data-parallel bytes plus its gathers, and the MLM head, "
        "gathered whole for the vocabulary chunks (`vocab_chunks.gathered_head`, which keeps the chunked "
        "gradients right on an fsdp mesh), has its gradient reduced per chunk. The unscanned fsdp rows keep "
        "activation-sized all-reduces of the unrolled layers (the 371 MB operands above). The fsdp cases were "
        "recompiled after the engine traced its steps under their mesh (commit d69b67e: before it, the model's "
        "activation constraints were no-ops and the partitioner split the contracting `embed` dimension instead, "
        "all-reducing hundreds of GB of activation partial sums per step; "
        "`tests/test_train.py::test_fsdp_step_keeps_activations_batch_sharded` guards it) and after the chunked "
        "head's gather.",
        ""]
    # ---------------------------------------------------------------------------------- extrapolation
    lines += [
        "## Extrapolation to v4-64 and v5e-256", "",
        "Assumptions. One JAX device per chip: a v4 chip's two TensorCores run as one (megacore) device, so v4-64 "
        "is 32 devices with 32 GiB HBM each (cloud.google.com/tpu/docs/v4); a v5e chip has one TensorCore and 16 GB "
        "HBM (cloud.google.com/tpu/docs/v5e), v5e-256 = 256 devices. Per-device **arguments** on N devices are "
        "computed exactly from the shardings on an abstract N-device mesh of the same split (fsdp-sharded state "
        "shrinks as 1/N; replicated state and the replicated teacher stay). **Temporaries** are fitted per family "
        "(same model, split, accumulation, remat, chunking, scan, dropout) as a + b x (micro-batch rows per device) "
        "over its measured meshes (the fit's worst relative error on them is shown): activations scale with the "
        "rows a device holds, the rest is constant. Outputs not donated come from the family's largest compile. "
        "The 32-device row of v4-64 is measured, not extrapolated. On v5e, times are lower bounds: compute = step "
        f"FLOPs / (256 x {V5E_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16 peak), collectives = the bytes each device moves "
        f"per step as measured on 32 devices (ring traffic per device hardly changes with N for a fixed operand) / "
        f"{V5E_ICI_BYTES_S / 1e9:.0f} GB/s (the v5e chip's bidirectional ICI bandwidth, same page).", "",
        "| model | setting | slice | rows / device (micro-batch) | arguments GiB | temp GiB (fit error) | "
        "**peak GiB** | fits | v5e compute s >= | v5e collectives s >= |", "|---|---|---|---|---|---|---|---|---|---|"]
    for fam, pts in sorted(families.items(), key=lambda kv: (kv[0][0] != "base", str(kv[0]))):
        if len({p["micro_rows_per_device"] for p in pts}) < 2:
            continue
        largest = max(pts, key=lambda p: p["case"]["devices"])
        for slice_name, n, cap, _ in SLICES:
            measured = next((p for p in pts if p["case"]["devices"] == n), None)
            if measured is not None:
                est = dict(arguments=measured["arguments"], temp=measured["memory"]["temp"],
                           peak=measured["memory"]["peak"], fit_err=None, rows=measured["micro_rows_per_device"])
            else:
                est = extrapolate(pts, n, root)
            if est is None:
                continue
            c = largest["case"]
            sizes = mesh_of(c["split"], n)
            rows_total = c["batch"] // (sizes["data"] * sizes["fsdp"])
            v5e = " | "
            if slice_name == "v5e-256":
                compute_s = largest["step_flops"] / (n * V5E_BF16_FLOPS)
                v5e = f"{compute_s:.3f} | {moved_gb(largest) * 1e9 / V5E_ICI_BYTES_S:.3f}"
            err = "measured" if est["fit_err"] is None else f"{est['fit_err']:.0%}"
            lines.append(f"| {c['model']} | {setting_label(c)} | {slice_name} | {rows_total} ({est['rows']}) | "
                         f"{gib(sum(est['arguments'].values()))} | {gib(est['temp'])} ({err}) | **{gib(est['peak'])}** | "
                         f"{'yes' if est['peak'] <= FIT_FRACTION * cap else 'no'} | {v5e} |")
    lines.append("")
    # accumulation needed per slice, from the recommended family's fit
    lines += ["### Gradient accumulation needed, per slice size", "",
              "From the recommended setting's fit (data parallel, scanned layers, remat full, chunked vocabulary, "
              "dropout on): the smallest power-of-two `train.accum_steps` whose predicted peak fits, for the paper's "
              "4096 x 128 batch. The fit was made at accum_steps 4; another accumulation changes only the micro-batch "
              "rows (the accumulation scan's gradient carry is counted in the fit's constant, so at accum_steps 1 the "
              "cells are conservative: the cross-check below measures how much). Beyond the measured 32-256 "
              "micro-batch rows per device (the 1-2 device cells) it is an extrapolation.", "",
              "| model | devices | " + " | ".join(f"{name}: accum_steps (peak GiB)" for name, _ in CAPACITIES) + " |",
              "|---|---|" + "---|" * len(CAPACITIES)]
    for model in ("base", "large"):
        fam = [pts for f, pts in families.items() if f[0] == model and is_best(pts[0]["case"])
               and pts[0]["case"]["accum"] == 4]
        if not fam or len({p["micro_rows_per_device"] for p in fam[0]}) < 2:
            continue
        for n in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            cells = []
            for _, cap in CAPACITIES:
                found = None
                accum = 1
                while 4096 % (n * accum) == 0:
                    est = extrapolate(fam[0], n, root, accum=accum)
                    if est is not None and est["peak"] <= FIT_FRACTION * cap:
                        found = est
                        break
                    accum *= 2
                cells.append(f"{found['accum']} ({gib(found['peak'])})" if found else "does not fit")
            lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
    lines.append("")
    # cross-check: same micro-batch rows, different accumulation / device count
    pairs = []
    for r in base:
        for s in base:
            if (r is not s and r["case"]["accum"] < s["case"]["accum"] and r["micro_rows_per_device"] ==
                    s["micro_rows_per_device"] and Case(**dict(r["case"], accum=0, devices=0)).family ==
                    Case(**dict(s["case"], accum=0, devices=0)).family):
                pairs.append((r, s))
    if pairs:
        lines += ["Cross-check of the fit's premise (temporaries follow the micro-batch rows per device): same "
                  "setting and micro-batch rows, different accumulation and device count:", ""]
        for r, s in pairs:
            lines.append(f"- {setting_label(dict(r['case'], accum='*'))}, {r['micro_rows_per_device']} rows: "
                         f"accum {r['case']['accum']} on {r['case']['devices']} devices temp {gib(r['memory']['temp'])} "
                         f"GiB vs accum {s['case']['accum']} on {s['case']['devices']} devices "
                         f"{gib(s['memory']['temp'])} GiB")
        lines.append("")
    if failed:
        lines += ["## Cases that did not compile", ""] + [f"- `{r['name']}`: {r['error']}" for r in failed] + [""]
    lines += ["## Compile cost on the host", "",
              f"{len(results)} cases; compile {min(r['compile_s'] for r in results):.0f}-"
              f"{max(r['compile_s'] for r in results):.0f} s each (lowering "
              f"{min(r['lower_s'] for r in results):.0f}-{max(r['lower_s'] for r in results):.0f} s), largest worker "
              f"RSS {max(r['host_peak_rss_mb'] for r in results)} MB: compiling the 4096 x 128 step for 32 fake "
              "devices fits the 23 GB host easily, because XLA plans the per-device program and allocates nothing.",
              ""]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--matrix", choices=("paper", "quick"), default="paper")
    p.add_argument("--quick", action="store_true", help="--matrix quick, results in a temporary folder, no report")
    p.add_argument("--only", nargs="+", default=None, help="case names (default: the whole matrix)")
    p.add_argument("--fresh", action="store_true", help="recompile cached cases")
    p.add_argument("--report", action="store_true", help="only rewrite the report from cached results")
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--doc", default=DOC)
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.matrix = "quick"
        if args.results == RESULTS:
            with tempfile.TemporaryDirectory(prefix="pod-plan-quick-") as tmp:
                return main(list(argv or sys.argv[1:]) + ["--results", tmp])
    cases = paper_matrix() if args.matrix == "paper" else quick_matrix()
    if args.worker:
        run_worker(args.worker, args.only, args.results, cases)
        return
    chosen = [c for c in cases if args.only is None or c.name in args.only]
    unknown = set(args.only or ()) - {c.name for c in cases}
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; known: {[c.name for c in cases]}")
    if not args.report:
        todo = [c for c in chosen if args.fresh or cached(args.results, c) is None]
        print(f"{len(chosen)} case(s), {len(chosen) - len(todo)} cached, {len(todo)} to compile; results in "
              f"{args.results}", flush=True)
        spawn_workers(todo, args.results, args.matrix)
    results = [r for r in (cached(args.results, c) for c in cases) if r is not None]
    failed = []
    for c in cases:
        path = result_path(args.results, c)
        if os.path.exists(path) and cached(args.results, c) is None:
            with open(path) as f:
                failed.append(json.load(f))
    for r in ordered(results):
        if r["name"] in {c.name for c in chosen}:
            print(f"{r['name']:45s} peak {gib(r['memory']['peak']):>7} GiB  temp {gib(r['memory']['temp']):>7}  "
                  f"args {gib(r['memory']['arguments']):>6}  fits {fits(r['memory']['peak'])}  "
                  f"{collective_summary(r)}")
    for r in failed:
        print(f"{r['name']}: FAILED {r['error']}")
    if args.matrix == "paper" and results:
        write_report(results, failed, args.doc, "python bench/pod_plan.py" + (" --report" if args.report else ""))


if __name__ == "__main__":
    main()
