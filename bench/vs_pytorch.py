"""The same distillation step in jaxdistill, eager PyTorch and PyTorch under torch.compile (issue 8 point 2, issue 16 point 4).

    python bench/vs_pytorch.py                 # MiniLM teacher -> half-width student, 16 x 128, float32
    python bench/vs_pytorch.py --quick         # 4 x 64, fewer steps
    python bench/vs_pytorch.py --peers eager   # only eager PyTorch (or: --peers compile)
    python bench/vs_pytorch.py --steps 10 --batch 16 --seq-len 128 [--no-memory]
    python bench/vs_pytorch.py --vocab-chunk-tokens 0 256 --wait-quiet 180 --write docs/results.md

The step (all sides, float32, dropout off so that all compute exactly the same function):
  teacher forward (all-MiniLM-L6-v2's real weights: hidden 384, 6 layers, 12 heads, FFN 1536, vocab 30522,
  with the MLM head jaxdistill's loader creates, exported once so that torch loads the very same teacher),
  student forward + backward (random init, hidden 192, 6 layers, 6 heads of 32, FFN 768: initialised once in
  JAX and exported with `hf.export`, loaded by `BertForMaskedLM.from_pretrained`),
  loss = soft KL(teacher || student) over real tokens (T = 1) + MLM cross-entropy + hidden MSE over the
  uniform layer map (embeddings and layers 1..6) through one shared linear projection 192 -> 384,
  global-norm clipping at 1.0 and AdamW (lr 6e-4, betas 0.9/0.999, eps 1e-6, weight decay 0.01 on matrices).
jaxdistill runs its own engine step (`train.build_run` -> the jitted, donating `distill_step`); PyTorch runs
BertForMaskedLM teacher in eval()/no_grad and a BertForMaskedLM student (output_hidden_states=True) with
torch.optim.AdamW, `torch.set_num_threads(<cores>)`. The `compile` peer wraps the teacher + student forward
and the loss in `torch.compile` (inductor, CPU, default mode; the backward runs AOTAutograd's compiled
graph); clipping and AdamW (foreach) run eagerly in both peers.

What it prints:
  * the loss of each at step 0 (same params, same batch) and its difference to jaxdistill's (~1e-4 or less),
    and the first step's time including compilation (jax.jit, torch.compile);
  * s/step of each, timed in rotation (jax, eager, compiled, ...) in one process after warm-up, medians;
  * peak memory of each: every framework run alone in its own subprocess (same step, a few steps), reporting
    VmHWM (peak RSS) and its increase over the RSS after imports; those subprocesses also report their
    standalone s/step as a cross-check of the alternating timing;
  * the load average before and after, other processes' runnable threads sampled between the timed steps
    (the load average after counts the bench's own threads), and the ratios jaxdistill / peer: under
    "MACHINE BUSY: ratios not a headline" when the 1-minute load before the run or the others' mean during
    it exceeds half the cores (eager PyTorch suffers much more than XLA on a loaded machine), else with the
    issue 16 targets (>= 1.3x, peak memory at or below the peer) marked met / NOT met;
  * with --write docs/results.md, all of that as its generated section (`--wait-quiet 300` first waits for
    the load to settle).

Measured on a quiet machine (commit b8bf55b+, generated in docs/results.md): jaxdistill / torch.compile 0.70x
with whole logits, 0.72x with chunks of 256; peak RSS 3467 / 2111 MB against 2117 MB compiled. The first
torch.compile takes minutes on a loaded 2-core machine (inductor caches kernels on disk, so later runs compile
faster); a full run with two jaxdistill variants and both peers takes ~10 minutes. Figures: bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from report import call_times, load_text  # noqa: E402

CACHE = os.path.join(tempfile.gettempdir(), "jaxdistill-bench")
STUDENT = dict(hidden_size=192, num_attention_heads=6, intermediate_size=768, with_pooler=False)
HP = dict(lr=6e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, grad_clip=1.0)


def proc_status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------------------------ jax side
def jax_config(batch: int, seq_len: int, chunk_tokens: int = 0):
    from homodistil_step import make_config
    from jaxdistill.configs import homodistil
    c = make_config("minilm", batch, seq_len, recipe="homodistil", pruning=False, dropout=False)
    c.student.init = "random"
    c.student.overrides = dict(STUDENT)
    rc = homodistil.recipe()
    rc.temperature = 1.0
    rc.weights.update(dict(soft=1.0, mlm=1.0))
    rc.matches = [dict(name="hid", feature="hidden", loss="hidden_mse", weight=1.0, layers="uniform",
                       projection="fit")]
    c.recipe = rc
    c.train.update(dict(warmup_steps=0, decay="constant", vocab_chunk_tokens=chunk_tokens, **HP))
    return c


def build_jax(batch: int, seq_len: int, chunk_tokens: int = 0):
    """(run, device batch, host batch): the jaxdistill engine on the benchmark's step."""
    from jaxdistill import train
    run = train.build_run(jax_config(batch, seq_len, chunk_tokens))
    local = run.data.batch(0)
    return run, run.global_batch(local), local


def export_for_torch(run) -> dict:
    """Writes the JAX teacher and (initial) student as HF directories; returns their paths + the projection."""
    import jax
    from jaxdistill.models import hf
    out = {}
    tdir = os.path.join(CACHE, "vs_pytorch", "teacher")
    if not os.path.exists(os.path.join(tdir, "config.json")):
        hf.export(run.teacher_config.replace(dtype="float32"), jax.device_get(run.teacher_params), tdir + ".tmp",
                  overwrite=True)
        os.replace(tdir + ".tmp", tdir)
    sdir = os.path.join(CACHE, "vs_pytorch", f"student-{os.getpid()}")
    student = jax.tree.map(np.asarray, jax.device_get(run.state.params["student"]))
    hf.export(run.student_config.replace(dtype="float32"), student, sdir, overwrite=True)
    proj = jax.tree.map(np.asarray, jax.device_get(run.state.params["projections"]["fit"]))
    out.update(teacher=tdir, student=sdir, proj_kernel=proj["kernel"], proj_bias=proj["bias"])
    return out


def jax_step(run, batch):
    import jax
    run.state, metrics = run.fns.distill_step(run.state, run.teacher_params, batch)
    jax.block_until_ready(run.state)
    return metrics


# ---------------------------------------------------------------------------------------------- torch side
class TorchStep:
    """The same step in plain PyTorch + transformers."""

    def __init__(self, paths: dict, pairs, threads: int, compile: bool = False):
        import torch
        from transformers import BertForMaskedLM
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        nodrop = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.torch = torch
        self.teacher = BertForMaskedLM.from_pretrained(paths["teacher"], **nodrop).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = BertForMaskedLM.from_pretrained(paths["student"], **nodrop).train()
        k, b = paths["proj_kernel"], paths["proj_bias"]
        self.proj = torch.nn.Linear(k.shape[0], k.shape[1])
        with torch.no_grad():
            self.proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.T)))
            self.proj.bias.copy_(torch.from_numpy(np.array(b)))
        self.pairs = list(pairs)
        params = [p for p in list(self.student.parameters()) + list(self.proj.parameters()) if p.requires_grad]
        self.params = params
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["weight_decay"]},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=HP["lr"], betas=(HP["b1"], HP["b2"]), eps=HP["eps"])
        # torch.compile (inductor, CPU, default mode) wraps the teacher + student forward and the loss; the
        # backward runs the graph AOTAutograd compiled with it; clipping and AdamW (foreach) stay eager.
        self.compiled = compile
        self._loss = torch.compile(self._loss_tensors) if compile else self._loss_tensors

    def batch(self, host_batch):
        t = self.torch
        return {k: t.from_numpy(np.asarray(v).astype(np.int64)) for k, v in host_batch.items()}

    def loss(self, b):
        total, soft, mlm, hid = self._loss(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["mlm_labels"])
        return total, dict(soft=soft.item(), mlm=mlm.item(), hid=hid.detach().item())

    def _loss_tensors(self, input_ids, attention_mask, token_type_ids, mlm_labels):
        torch, F = self.torch, self.torch.nn.functional
        b = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                 mlm_labels=mlm_labels)
        with torch.no_grad():
            t_out = self.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                 token_type_ids=b["token_type_ids"], output_hidden_states=True)
        s_out = self.student(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             token_type_ids=b["token_type_ids"], output_hidden_states=True)
        valid = b["attention_mask"].to(torch.float32)
        denom = valid.sum().clamp_min(1.0)
        ls = F.log_softmax(s_out.logits.float(), dim=-1)
        lt = F.log_softmax(t_out.logits.float(), dim=-1)
        kl = (lt.exp() * (lt - ls)).sum(-1)
        soft = (kl * valid).sum() / denom
        vocab = s_out.logits.shape[-1]
        mlm = F.cross_entropy(s_out.logits.reshape(-1, vocab).float(), b["mlm_labels"].reshape(-1),
                              ignore_index=-100)
        hid = torch.zeros((), dtype=torch.float32)
        for si, ti in self.pairs:
            d = (self.proj(s_out.hidden_states[si]) - t_out.hidden_states[ti]).square().mean(-1)
            hid = hid + (d * valid).sum() / denom
        return soft + mlm + hid, soft.detach(), mlm.detach(), hid.detach()

    def step(self, b):
        self.opt.zero_grad(set_to_none=True)
        loss, terms = self.loss(b)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.params, HP["grad_clip"])
        self.opt.step()
        return loss.detach().item(), terms


def uniform_pairs(num_layers: int):
    from jaxdistill import layer_map
    return layer_map.make_layer_map("uniform", num_layers, num_layers, 0)


# ------------------------------------------------------------------------------------------------- phases
PEERS = ("eager", "compile")
NAMES = {"jax": "jaxdistill", "eager": "pytorch eager", "compile": "torch.compile"}


def busy_threshold(cores: int) -> float:
    """Half the cores: a 1-minute load average above it before the run (the others' load: the bench has not
    started), or other processes' runnable threads averaging above half of it during the timed steps, marks
    the machine busy, and the ratios are no headline."""
    return 0.5 * cores


def wait_until_quiet(limit: float, seconds: float) -> float:
    """Sleeps until the 1-minute load average is at most `limit`, for at most `seconds`; returns the load."""
    t_end = time.monotonic() + seconds
    while os.getloadavg()[0] > limit and time.monotonic() < t_end:
        time.sleep(10)
    return os.getloadavg()[0]


def phase_alone(which: str, batch: int, seq_len: int, steps: int, paths_json: str, threads: int = 0,
                chunk_tokens: int = 0):
    """One framework alone (own process): peak RSS and standalone step time. Prints one JSON line."""
    import torch  # noqa: F401  (every phase imports both frameworks so the baseline RSS is comparable)
    import jax  # noqa: F401
    from jaxdistill import train  # noqa: F401
    import transformers  # noqa: F401
    base = proc_status("VmRSS")
    cores = threads or os.cpu_count() or 1
    if which == "jax":
        run, b, _ = build_jax(batch, seq_len, chunk_tokens)
        fn = lambda: jax_step(run, b)
    else:
        paths = json.load(open(paths_json))
        paths["proj_kernel"] = np.load(paths["proj_kernel"])
        paths["proj_bias"] = np.load(paths["proj_bias"])
        from jaxdistill.data import build_pretraining_data
        from homodistil_step import minilm_path
        cfg = jax_config(batch, seq_len)
        data = build_pretraining_data(cfg.data, minilm_path(), batch, vocab_size=30522, max_positions=512)
        ts = TorchStep(paths, [tuple(p) for p in paths["pairs"]], cores, compile=(which == "compile"))
        b = ts.batch(data.batch(0))
        fn = lambda: ts.step(b)
    t0 = time.perf_counter()
    fn()  # compile / first step
    first = time.perf_counter() - t0
    fn()
    times = call_times(fn, steps)
    print("RESULT " + json.dumps(dict(which=which, base_rss=base, peak_rss=proc_status("VmHWM"),
                                      step_s=statistics.median(times), first_s=first)))


def jax_key(chunk_tokens: int) -> str:
    """The timing key of the jaxdistill variant with this `train.vocab_chunk_tokens`."""
    return f"jax-c{chunk_tokens}"


def run_alone(which, a, paths_json, chunk_tokens: int = 0):
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", which, "--batch", str(a.batch), "--seq-len",
           str(a.seq_len), "--mem-steps", str(a.mem_steps), "--paths", paths_json, "--torch-threads", str(a.torch_threads),
           "--phase-chunk", str(chunk_tokens)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{which} phase failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per framework (alternating)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per framework after the first")
    ap.add_argument("--mem-steps", type=int, default=2, help="timed steps in each memory subprocess")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-framework memory subprocesses")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: all CPU cores)")
    ap.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS),
                    help="PyTorch peers: eager and/or torch.compile (inductor, CPU, default mode)")
    ap.add_argument("--vocab-chunk-tokens", type=int, nargs="+", default=[0],
                    help="jaxdistill's train.vocab_chunk_tokens, one variant per value, all timed in the rotation "
                         "(0: whole [B, L, V] logits, as the PyTorch peers)")
    ap.add_argument("--quick", action="store_true", help="4 x 64, 4 steps")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait (at most this long) until the 1-minute load average is below half the cores")
    ap.add_argument("--write", metavar="RESULTS_MD",
                    help="write the generated section of this Markdown file (docs/results.md)")
    ap.add_argument("--phase", choices=("jax",) + PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--phase-chunk", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.batch, a.seq_len, a.steps, a.warmup, a.mem_steps = 4, 64, 4, 1, 1
    if a.phase:
        return phase_alone(a.phase, a.batch, a.seq_len, a.mem_steps, a.paths, a.torch_threads, a.phase_chunk)
    peers = [p for p in PEERS if p in a.peers]
    chunks = list(dict.fromkeys(a.vocab_chunk_tokens))
    jaxes = [jax_key(c) for c in chunks]
    names = dict(NAMES, **{jax_key(c): f"jaxdistill ({f'chunks of {c}' if c else 'whole logits'})" for c in chunks})

    import jax
    import torch
    import transformers
    from report import git_rev, machine_info, others_runnable
    ncpu = os.cpu_count() or 1
    cores = a.torch_threads or ncpu
    limit = busy_threshold(ncpu)
    if a.wait_quiet:
        wait_until_quiet(limit, a.wait_quiet)
    load_before = os.getloadavg()
    machine = machine_info()
    print(f"jax {jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{ncpu} CPU cores (torch threads {cores}); load average before {load_text()}")
    t0 = time.perf_counter()
    runs = {}
    for c in chunks:  # the same config and seeds, so the same initial parameters; only the chunking differs
        runs[jax_key(c)] = build_jax(a.batch, a.seq_len, c)
    run, jb, host = runs[jaxes[0]]
    pairs = uniform_pairs(run.student_config.num_hidden_layers)
    paths = export_for_torch(run)
    steps = {p: TorchStep(paths, pairs, cores, compile=(p == "compile")) for p in peers}
    tb = steps[peers[0]].batch(host)
    sc = run.student_config
    print(f"teacher all-MiniLM-L6-v2 (384, 6 layers, 12 heads, FFN 1536); student {sc.hidden_size} hidden, "
          f"{sc.num_hidden_layers} layers, {sc.num_attention_heads} heads, FFN {sc.intermediate_size}; "
          f"batch {a.batch} x {a.seq_len} float32; jaxdistill vocab_chunk_tokens {', '.join(map(str, chunks))}; "
          f"hidden pairs {pairs}; peers {', '.join(peers)} "
          f"(built in {time.perf_counter() - t0:.1f}s)")

    # Step 0: the same loss from the same params and batch; the first step includes jit / torch.compile.
    first, loss0 = {}, {}
    for j in jaxes:
        t0 = time.perf_counter()
        m = jax.device_get(jax_step(runs[j][0], runs[j][1]))
        first[j] = time.perf_counter() - t0
        loss0[j] = float(m["loss"])
        print(f"step 0 loss: {names[j]:<30} {loss0[j]:.6f} (soft {float(m['loss/soft']):.6f}, "
              f"mlm {float(m['loss/mlm']):.6f}, hid {float(m['loss/hid']):.6f})")
    jl = loss0[jaxes[0]]
    for p in peers:
        t0 = time.perf_counter()
        tl, tterms = steps[p].step(tb)
        first[p] = time.perf_counter() - t0
        loss0[p] = tl
        diff = abs(jl - tl)
        ok = "OK" if diff <= 1e-4 * max(1.0, abs(tl)) else "MISMATCH"
        print(f"             {names[p]:<30} {tl:.6f} (soft {tterms['soft']:.6f}, mlm {tterms['mlm']:.6f}, "
              f"hid {tterms['hid']:.6f}); |difference| = {diff:.2e} ({ok})")
    print("first step incl. compile (jax.jit / torch.compile; eager has none): "
          + ", ".join(f"{names[w]} {first[w]:.1f}s" for w in jaxes + peers))

    for _ in range(a.warmup):
        for j in jaxes:
            jax_step(runs[j][0], runs[j][1])
        for p in peers:
            steps[p].step(tb)
    times = {w: [] for w in jaxes + peers}
    last, others = {}, []
    for i in range(a.steps):  # rotation: each jax variant, eager, compiled, then again
        for j in jaxes:
            t0 = time.perf_counter()
            mj = jax_step(runs[j][0], runs[j][1])
            times[j].append(time.perf_counter() - t0)
            last[j] = float(mj["loss"])
            others.append(others_runnable())
        for p in peers:
            t0 = time.perf_counter()
            last[p], _ = steps[p].step(tb)
            times[p].append(time.perf_counter() - t0)
            others.append(others_runnable())
    print(f"loss after {1 + a.warmup + a.steps} steps (same batch each step): "
          + ", ".join(f"{names[w]} {last[w]:.5f}" for w in last))

    med = {w: statistics.median(t) for w, t in times.items()}
    print(f"\n{'alternating, one process':<32}{'median s/step':>14}{'min':>8}{'max':>8}{'steps/s':>10}{'tokens/s':>10}")
    for w, t in times.items():
        print(f"{names[w]:<32}{med[w]:14.3f}{min(t):8.3f}{max(t):8.3f}{1 / med[w]:10.3f}"
              f"{a.batch * a.seq_len / med[w]:10.0f}")

    res = {}
    if not a.no_memory:
        d = os.path.join(CACHE, "vs_pytorch")
        np.save(os.path.join(d, "proj_kernel.npy"), paths["proj_kernel"])
        np.save(os.path.join(d, "proj_bias.npy"), paths["proj_bias"])
        pj = os.path.join(d, f"paths-{os.getpid()}.json")
        json.dump(dict(teacher=paths["teacher"], student=paths["student"], pairs=[list(p) for p in pairs],
                       proj_kernel=os.path.join(d, "proj_kernel.npy"), proj_bias=os.path.join(d, "proj_bias.npy")),
                  open(pj, "w"))
        res = {j: run_alone("jax", a, pj, chunk_tokens=c) for j, c in zip(jaxes, chunks)}
        res.update({p: run_alone(p, a, pj) for p in peers})
        print(f"\n{'alone, own subprocess':<32}{'peak RSS MB':>12}{'over imports MB':>17}{'s/step':>9}"
              f"{'first step s':>14}")
        for w, r in res.items():
            print(f"{names[w]:<32}{r['peak_rss'] / 2**20:12.0f}{(r['peak_rss'] - r['base_rss']) / 2**20:17.0f}"
                  f"{r['step_s']:9.3f}{r['first_s']:14.1f}")
        print("(peak memory: each framework alone in its own process, VmHWM; the alternating run holds all of "
              "them in one process and is not used for memory)")

    load_after = os.getloadavg()
    others_mean = statistics.mean(others)
    busy = load_before[0] > limit or others_mean > limit
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} (the bench's own "
          f"threads included); other processes' runnable threads during the timed steps: mean {others_mean:.2f}, "
          f"max {max(others)}; {ncpu} cores, quiet means load before and others' mean <= {limit:.1f}")
    if busy:
        print(f"MACHINE BUSY (load before {load_before[0]:.2f}, others {others_mean:.2f} on {ncpu} cores): "
              "ratios not a headline")
    else:
        print(f"HEADLINE (quiet machine, <= {limit:.1f} on {ncpu} cores):")
    verdicts = {}
    for j in jaxes:
        for p in peers:
            r = med[p] / med[j]
            line = f"  {names[j]} / {names[p]} speed = {r:.2f}x alternating"
            if res:
                line += (f", {res[p]['step_s'] / res[j]['step_s']:.2f}x standalone; peak RSS "
                         f"{res[j]['peak_rss'] / 2**20:.0f} vs {res[p]['peak_rss'] / 2**20:.0f} MB")
            if not busy:
                mem_ok = (not res) or res[j]["peak_rss"] <= res[p]["peak_rss"]
                verdicts[j, p] = (f"speed >= 1.3x {'met' if r >= 1.3 else 'NOT met'} ({r:.2f}x)"
                                  + (f", memory at or below {'met' if mem_ok else 'NOT met'}" if res else ""))
                line += f"  (targets: {verdicts[j, p]})"
            print(line)
    if a.write:
        from report import write_section
        cmd = "python bench/vs_pytorch.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(a.write, "<!-- vs_pytorch:start -->", "<!-- vs_pytorch:end -->", section_text(
            cmd=cmd.strip(), rev=git_rev(), machine=machine, a=a, names=names, jaxes=jaxes, peers=peers, loss0=loss0, first=first, med=med,
            res=res, load=(load_before, load_after), others=(others_mean, max(others)), busy=busy, verdicts=verdicts))
        print(f"wrote the PyTorch comparison section of {a.write}")


def section_text(*, cmd, rev, machine, a, names, jaxes, peers, loss0, first, med, res, load, others, busy, verdicts) -> str:
    """The generated "jaxdistill against the PyTorch way" section of docs/results.md (between its markers);
    `others`: (mean, max) of other processes' runnable threads sampled between the timed steps."""
    mb = 2 ** 20
    lines = [
        "<!-- vs_pytorch:start -->",
        "## Speed: jaxdistill against the PyTorch way",
        "",
        f"Generated by `{cmd}` at commit {rev} on {machine['cpu']} ({machine['cores']} cores, jax "
        f"{machine['jax']}). Load average (1 min) {load[0][0]:.2f} before, {load[1][0]:.2f} after (the bench's own "
        f"threads included); other processes' runnable threads sampled between the timed steps: mean "
        f"{others[0]:.2f}, max {others[1]}.",
        "",
        "The same distillation step (all-MiniLM-L6-v2 teacher forward; half-width student, hidden 192, 6 layers, "
        "6 heads, FFN 768, forward and backward; soft KL + MLM + hidden MSE; clipping and AdamW; float32, dropout "
        f"off) at batch {a.batch} x {a.seq_len}, in jaxdistill's engine step (with whole [B, L, V] logits, "
        "or with vocabulary chunks of n tokens: `train.vocab_chunk_tokens`)"
        + " and in PyTorch with `transformers` models, eager and under `torch.compile` (inductor, CPU, default "
        "mode, wrapping forward + loss). Steps alternate in one process (each variant in turn; medians of "
        f"{a.steps} after {a.warmup} warm-up); peak RSS is each framework alone in its own process.",
        "",
        "Step-0 loss (same parameters, same batch): " + ", ".join(
            f"{names[w]} {loss0[w]:.6f}" + ("" if w == jaxes[0] else
                                            f" (|difference| {abs(loss0[w] - loss0[jaxes[0]]):.1e})")
            for w in loss0) + ". First step including compilation: "
        + ", ".join(f"{names[w]} {first[w]:.1f} s" for w in first) + " (eager has no compilation).",
    ]
    head = " | ".join(f"{names[p]} / this" for p in peers)
    lines += ["", f"| | median s/step, alternating | {head} | standalone s/step | peak RSS MB |",
              "|---|---|" + "---|" * len(peers) + "---|---|"]
    for w in jaxes + peers:
        ratios = " | ".join(f"{med[p] / med[w]:.2f}x" for p in peers)
        alone = f"{res[w]['step_s']:.3f}" if res else "not run"
        rss = f"{res[w]['peak_rss'] / mb:.0f}" if res else "not run"
        lines.append(f"| {names[w]} | {med[w]:.3f} | {ratios} | {alone} | {rss} |")
    lines.append("")
    if busy:
        lines.append("**MACHINE BUSY**: other load competed with the timed steps, so these ratios are no headline "
                     "(eager PyTorch suffers much more than XLA on a loaded machine). Rerun on a quiet machine.")
    else:
        lines.append("Quiet machine. Issue 16's targets (jaxdistill >= 1.3x faster than the peer, peak memory at or "
                     "below it): " + "; ".join(f"{names[j]} against {names[p]}: {v}"
                                               for (j, p), v in verdicts.items()) + ".")
    lines.append("<!-- vs_pytorch:end -->")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
