"""Device mesh, logical-axis sharding rules, and multi-host set-up.

The model annotates every parameter with logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`, ...).
A table of rules (plain data, overridable from the config) maps them to the mesh axes `data`, `fsdp` and
`tensor`. The same code then runs on one CPU, 8 fake CPU devices, a GPU, or a TPU pod: only the mesh changes.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxdistill.errors import ConfigError

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or axes, or None = replicated). Activations use `batch`/`length`.
DEFAULT_RULES: Tuple[Tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("embed_out", "tensor"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("pos", None),
    ("types", None),
    ("classes", None),
)


def check_mesh_sizes(sizes: Mapping[str, int]) -> list:
    """The sizes of `{"data": -1, "fsdp": 2, "tensor": 1}` in MESH_AXES order (missing axes are 1); raises
    ConfigError for an unknown axis, more than one -1, or a size that is neither positive nor -1."""
    unknown = sorted(set(sizes) - set(MESH_AXES))
    if unknown:
        raise ConfigError(f"mesh axes {unknown} are unknown; the mesh axes are {MESH_AXES}")
    shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
    if sum(s == -1 for s in shape) > 1:
        raise ConfigError(f"mesh sizes {dict(zip(MESH_AXES, shape))}: at most one axis may be -1 (= the rest)")
    if any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"mesh sizes {dict(zip(MESH_AXES, shape))} must be positive or -1")
    return shape


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> Tuple[int, ...]:
    """Resolves `{"data": -1, "fsdp": 2, "tensor": 1}` (-1 = the rest) against the device count."""
    shape = check_mesh_sizes(sizes)
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ConfigError(f"{num_devices} devices cannot be split into a mesh with fixed axes of product {known}; "
                             "change config.mesh so the fixed sizes divide the device count")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ConfigError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices but {num_devices} "
                         "are available; set one axis to -1 to use the rest")
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types (jax 0.10's default is Explicit)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(sizes, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def rules_from_config(rules: Optional[Sequence[Sequence[Any]]]) -> Tuple[Tuple[str, Any], ...]:
    """Config rules (a list of [logical, mesh-axis-or-list-or-None]) -> the rules tuple flax expects."""
    if rules is None:
        return DEFAULT_RULES
    out = []
    for rule in rules:
        name, target = rule[0], rule[1]
        if isinstance(target, list):
            target = tuple(target)
        targets = target if isinstance(target, tuple) else (target,)
        bad = [t for t in targets if t is not None and t not in MESH_AXES]
        if bad:
            raise ConfigError(f"sharding rule {rule!r} names mesh axes {bad}; the mesh axes are {MESH_AXES}")
        out.append((name, target))
    return tuple(out)


def _mesh_spec(logical: P, shape: Tuple[int, ...], mesh: Mesh, rules) -> P:
    """Logical spec -> mesh spec; a dimension that the mesh axes do not divide stays replicated."""
    table = dict(rules)
    dims = []
    used = set()
    for i, name in enumerate(tuple(logical) + (None,) * (len(shape) - len(logical))):
        target = table.get(name) if name is not None else None
        axes = tuple(a for a in (target if isinstance(target, tuple) else (target,)) if a is not None)
        axes = tuple(a for a in axes if a not in used)
        size = math.prod(mesh.shape[a] for a in axes) if axes else 1
        if not axes or size == 1 or shape[i] % size:
            dims.append(None)
            continue
        used.update(axes)
        dims.append(axes if len(axes) > 1 else axes[0])
    return P(*dims)


def logical_to_shardings(logical_specs: Any, shapes: Any, mesh: Mesh, rules) -> Any:
    """Maps a tree of logical PartitionSpecs (and a matching tree of shapes) to NamedShardings."""
    is_spec = lambda x: isinstance(x, P)
    specs_flat, treedef = jax.tree.flatten(logical_specs, is_leaf=is_spec)
    shapes_flat = treedef.flatten_up_to(shapes)
    return treedef.unflatten([NamedSharding(mesh, _mesh_spec(s, tuple(np.shape(x)), mesh, rules))
                              for s, x in zip(specs_flat, shapes_flat)])


def specs_like(tree: Any, reference: Any, reference_specs: Any) -> Any:
    """Logical specs for `tree`: every subtree with the structure of `reference` gets `reference_specs`.

    This is how optimizer moments and importance statistics, which mirror the parameters, inherit the
    parameters' sharding; every other leaf (step counters, scalars) is replicated.
    """
    ref_def = jax.tree.structure(reference)
    matches = lambda x: jax.tree.structure(x) == ref_def
    if matches(tree):
        return reference_specs
    return jax.tree.map(lambda x: reference_specs if matches(x) else P(), tree, is_leaf=matches)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays [B, L] are split over (data, fsdp) on their first axis."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
    """Assembles each process's slice of the batch into global arrays sharded over (data, fsdp)."""
    sharding = batch_sharding(mesh)
    out = {}
    for k, v in local_batch.items():
        v = np.asarray(v)
        global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(sharding, v, global_shape)
    return out


def check_batch_divisible(global_batch_size: int, shape: Sequence[int], process_count: int,
                          field: str = "train.batch_size") -> None:
    """Raises ConfigError unless the global batch splits evenly over data x fsdp of the mesh `shape`
    (as `mesh_shape` returns it) and over the processes."""
    n = int(shape[0]) * int(shape[1])
    if global_batch_size % n:
        raise ConfigError(f"{field} {global_batch_size} is not divisible by data x fsdp = {n} devices; "
                          "choose a multiple of it")
    if global_batch_size % process_count:
        raise ConfigError(f"{field} {global_batch_size} is not divisible by the {process_count} processes")


def constrain_logical(x: jax.Array, logical: P) -> jax.Array:
    """`x` constrained to the mesh sharding of its logical axis names under the rules and mesh being traced
    with (`jit_with_rules`), with `_mesh_spec`'s divisibility rule (a dimension the mesh axes do not divide
    stays replicated, as in the parameters' own layout); `x` unchanged without rules or a mesh in context."""
    rules = nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, _mesh_spec(logical, tuple(x.shape), mesh, rules))


def jit_with_rules(fn: Callable, rules, mesh: Optional[Mesh] = None, **jit_kwargs) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` (in/out shardings, donation), traced under the logical-axis `rules` and, when
    given, `mesh`, so the model's `nn.with_logical_constraint`s on logical names resolve to mesh axes.

    Flax applies those constraints only when a mesh is in context while tracing (`meta.global_mesh_defined`,
    i.e. a non-empty `jax.sharding.get_abstract_mesh()`); with the rules alone they are silently dropped and the
    partitioner is free to, e.g., compute fsdp activations on the whole batch and all-reduce them. The mesh is
    entered as an abstract mesh inside the traced function (`jax.set_mesh` may not be used inside jit), so it
    holds exactly while the model is traced, however the result is later called, lowered or compiled.
    """
    @functools.wraps(fn)
    def wrapped(*args):
        with nn.logical_axis_rules(rules):
            if mesh is None:
                return fn(*args)
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return fn(*args)
    return jax.jit(wrapped, **jit_kwargs)


def _optional_int(cfg: Mapping[str, Any], name: str, unset: Tuple[Any, ...], minimum: int) -> Optional[int]:
    """`cfg[name]` as an int, or None when it is one of the `unset` placeholders."""
    value = cfg.get(name)
    if value in unset:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"multihost.{name} must be an integer (got {value!r})") from None
    if value < minimum:
        raise ConfigError(f"multihost.{name} must be >= {minimum} (got {value}); leave it unset to let JAX detect it")
    return value


def distributed_arguments(cfg: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """The keyword arguments for `jax.distributed.initialize`, or None when the config does not ask for it.

    Config `multihost`: `initialize` (True: start jax.distributed) and the overrides `coordinator_address`
    ("host:port"), `num_processes`, `process_id`, `local_device_ids` (unset: None, or the older placeholders
    "" and 0 processes; JAX detects them). A coordinator address or a process count also asks for
    initialization. Only the overrides that are set are passed, so JAX's own cluster detection (Slurm, Cloud
    TPU pods, Kubernetes / GKE, Open MPI) fills in the rest.
    """
    cfg = dict(cfg or {})
    coordinator = str(cfg.get("coordinator_address") or "") or None
    num_processes = _optional_int(cfg, "num_processes", (None, "", 0), 1)
    if not (cfg.get("initialize", False) or coordinator or num_processes):
        return None
    given = {"coordinator_address": coordinator, "num_processes": num_processes,
             "process_id": _optional_int(cfg, "process_id", (None, "", -1), 0),
             "local_device_ids": None if cfg.get("local_device_ids") is None else
             [int(i) for i in cfg["local_device_ids"]]}
    return {k: v for k, v in given.items() if v is not None}


def maybe_initialize_distributed(cfg: Optional[Mapping[str, Any]] = None) -> bool:
    """Starts `jax.distributed` when the config asks for it (see `distributed_arguments`); returns True
    when it did. On a cluster JAX detects, `--config.multihost.initialize=True` is all it takes; the
    explicit fields override what JAX would detect (`launch/local_multihost.sh` sets all three on
    loopback). Raises ConfigError when JAX cannot work out the coordinator, process count or process id.
    """
    kwargs = distributed_arguments(cfg)
    if kwargs is None or jax.distributed.is_initialized():
        return False
    given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    log.info("jax.distributed.initialize(%s)%s", given, "" if len(kwargs) >= 3 else ": JAX detects the rest")
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # no cluster detected and the overrides do not complete the picture
        raise ConfigError(
            f"multi-host start failed ({e}): jax.distributed found no cluster to read the coordinator, process "
            "count and process id from (it detects Slurm, Cloud TPU pods, Kubernetes and Open MPI jobs by their "
            "environment); elsewhere give --config.multihost.coordinator_address=HOST:PORT, "
            "--config.multihost.num_processes=N and --config.multihost.process_id=I") from e
    return True
