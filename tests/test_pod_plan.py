"""bench/pod_plan.py's core: the ahead-of-time compiled HomoDistil step on fake devices reports per-device
argument bytes equal to the shard sizes worked out by hand, and counts collectives only where there are some.

Two compiles of a tiny BERT (one on 1 device, one on a 2-device fsdp mesh; dropout off, which halves the compile)
at XLA's lowest backend optimisation level: ~20 s of CPU time in all (wall time grows with the machine's load).
"""
import importlib.util
import math
import os
import sys

import jax
import pytest

from jaxdistill.models import BertConfig, init_params, logical_axes

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("pod_plan", os.path.join(HERE, "..", "bench", "pod_plan.py"))
pod_plan = sys.modules["pod_plan"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pod_plan)


def hand_shard_bytes(tree, specs, fsdp: int) -> int:
    """Bytes per device when every leaf's `embed` dimension (if the mesh size divides it) is split `fsdp` ways
    and everything else is replicated: the default rules on a (1, fsdp, 1) mesh, worked out by hand."""
    total = 0
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    for x, s in zip(jax.tree.leaves(tree), flat_specs):
        n = math.prod(x.shape) * x.dtype.itemsize
        dims = [i for i, name in enumerate(s) if name == "embed"]
        if dims and x.shape[dims[0]] % fsdp == 0:
            n //= fsdp
        total += n
    return total


@pytest.fixture(scope="module")
def tiny():
    case = dict(model="tiny", batch=8, seq=16, accum=1, remat="none", chunk=0, dropout=False)
    config = BertConfig(**pod_plan.MODELS["tiny"]["shape"])
    params = jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))
    return case, config, params, logical_axes(config)


@pytest.mark.parametrize("devices,split", [(1, "data"), (2, "fsdp")])
def test_pod_plan_bytes_and_collectives(tiny, devices, split, tmp_path):
    case, config, params, specs = tiny
    r = pod_plan.plan_case(pod_plan.Case(devices=devices, split=split, **case), devices=jax.devices()[:devices],
                           root=str(tmp_path))
    fsdp = devices if split == "fsdp" else 1
    args, mem = r["arguments"], r["memory"]
    student = hand_shard_bytes(params, specs, fsdp)   # the student is a copy of the teacher (HomoDistil)
    # the objective's projections (hidden_{layer}: [d, d] kernel + [d] bias per layer and the embeddings) are
    # replicated
    d = config.hidden_size
    projections = (config.num_hidden_layers + 1) * (d * d + d) * 4
    assert args["params"] == student + projections
    assert args["teacher"] == student
    assert args["importance"] == 3 * student + 4          # window_sum, ema_I, ema_U (+ an int32 count)
    assert 2 * (student + projections) <= args["opt_state"] <= 2 * (student + projections) + 64   # AdamW mu, nu
    assert args["batch"] == 4 * 8 * 16 * 4 // devices      # 4 int32 [8, 16] arrays split over the devices
    # XLA's argument bytes are the same, less the teacher's pooler (unused by the step, so jit drops it)
    pooler = {"pooler": params["pooler"]}
    assert sum(args.values()) - mem["arguments"] == hand_shard_bytes(pooler, {"pooler": specs["pooler"]}, fsdp)
    assert mem["peak"] == mem["arguments"] + mem["outputs"] + mem["temp"] - mem["aliased"] > mem["arguments"]
    c = r["collectives"]
    calls = sum(c[k]["calls"] for k in pod_plan.COLLECTIVES)
    if devices == 1:
        assert calls == 0
    else:  # fsdp: weights gathered for the forward pass, gradients reduced
        assert c["all-gather"]["calls"] > 0 and c["all-gather"]["bytes"] > 0
        assert calls > 0 and c["while_unknown_trips"] == 0


def test_count_collectives_weights_loops():
    """A collective in a while body counts trip-count times, with its operand's bytes."""
    hlo = """HloModule m

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %s = f32[] add(%x, %y)
}

%body (p: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  %v = f32[8,4]{1,0} get-tuple-element(%p), index=1
  %ar = f32[8,4]{1,0} all-reduce(%v), replica_groups=[1,4]<=[4], to_apply=%add
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%i, %ar)
}

%cond (q: (s32[], f32[8,4])) -> pred[] {
  %q = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (a: f32[8,4]) -> f32[32,4] {
  %a = f32[8,4]{1,0} parameter(0)
  %z = s32[] constant(0)
  %t0 = (s32[], f32[8,4]{1,0}) tuple(%z, %a)
  %w = (s32[], f32[8,4]{1,0}) while(%t0), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  %g = f32[8,4]{1,0} get-tuple-element(%w), index=1
  ROOT %ag = f32[32,4]{1,0} all-gather(%g), replica_groups=[1,4]<=[4], dimensions={0}
}
"""
    c = pod_plan.count_collectives(hlo)
    assert c["all-reduce"] == dict(ops=1, calls=5, bytes=5 * 128, moved=int(5 * 2 * 3 / 4 * 128))
    assert c["all-gather"] == dict(ops=1, calls=1, bytes=128, moved=3 * 128)
    assert c["reduce-scatter"]["calls"] == 0 and c["while_unknown_trips"] == 0


def test_fsdp_sentence_from_the_committed_results():
    """docs/scale.md's fsdp-vs-data sentence is computed from the committed per-case results (no compiling),
    and the committed document carries it, so it is in step with those results."""
    cases = {c.name: pod_plan.cached(pod_plan.RESULTS, c) for c in pod_plan.paper_matrix()}
    data, fsdp = cases[f"base-n8-data-a4-full-c{pod_plan.CHUNK}-scan"], cases[f"base-n8-fsdp-a4-full-c{pod_plan.CHUNK}-scan"]
    assert data is not None and fsdp is not None
    base = [r for r in cases.values() if r is not None and r["case"]["model"] == "base"]
    sentence = pod_plan.fsdp_vs_data(base, 8)
    assert (f"On 8 devices fsdp (parameters, AdamW and importance sharded over all of them) needs "
            f"{pod_plan.gib(fsdp['memory']['peak'])} GiB per device against data parallelism's "
            f"{pod_plan.gib(data['memory']['peak'])} GiB") in sentence
    assert pod_plan.fsdp_vs_data(base, 5) == ""  # no cases on 5 devices: nothing to compare
    doc = open(os.path.join(HERE, "..", "docs", "scale.md")).read()
    assert sentence.strip() in doc and "compiled before" not in doc
