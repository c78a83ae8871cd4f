"""Reading a compiled HLO module's text (`compiled.as_text()`): its instructions and how often each one runs.

`parse(hlo)` splits the text into computations; `executions(module)` walks from the entry computation and
yields every instruction with the number of times it executes per call of the module: an instruction inside a
while loop counts XLA's `known_trip_count` times (nested loops multiply; a loop without a known trip count
counts once and is tallied in `module.unknown_trips`), both branches of a conditional count (an upper bound),
and fused, called and applied computations count as often as their caller. Used by `pod_plan.py` (collectives)
and `dot_floor.py` (matmuls).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, Iterator, List, Tuple

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
               "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
ARRAY_TYPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$")
HEADER = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s*\(.*\{\s*$")
CALLEE = re.compile(r"\b(body|condition|calls|to_apply|true_computation|false_computation)=%([\w.\-]+)")
BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


@dataclasses.dataclass
class Module:
    """computations: name -> [(opcode, text after the opening parenthesis, whole line)]; shapes: instruction
    name -> its result type text ("f32[8,128]{1,0}"); entry: the entry computation's name."""
    computations: Dict[str, List[Tuple[str, str, str]]]
    shapes: Dict[str, str]
    entry: str
    unknown_trips: int = 0


def parse(hlo: str) -> Module:
    shapes: Dict[str, str] = {}
    comps: Dict[str, list] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        h = HEADER.match(line)
        if h:
            current = h.group(2)
            comps[current] = []
            if h.group(1):
                entry = current
            continue
        m = INSTRUCTION.match(line)
        if m and current is not None:
            shapes[m.group(1)] = m.group(2)
            comps[current].append((m.group(3), m.group(4), line))
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return Module(comps, shapes, entry)


def executions(module: Module) -> Iterator[Tuple[str, str, str, int]]:
    """(opcode, text after the opening parenthesis, line, executions per call) for every instruction reached
    from the entry computation. Counts loops without a known trip count in `module.unknown_trips`."""
    module.unknown_trips = 0

    def walk(comp: str, times: int, seen: tuple):
        for op, rest, line in module.computations.get(comp, ()):
            yield op, rest, line, times
            trip = 1
            if op == "while":
                m = TRIP_COUNT.search(line)
                trip = int(m.group(1)) if m else 1
                module.unknown_trips += 0 if m else 1
            callees = list(CALLEE.findall(line))
            for b in BRANCHES.findall(line):
                callees += [("branch", c) for c in re.findall(r"%([\w.\-]+)", b)]
            for kw, c in callees:
                if c not in seen:
                    yield from walk(c, times * (trip if kw in ("body", "condition") else 1), seen + (c,))

    yield from walk(module.entry, 1, (module.entry,))


def operands(rest: str) -> List[str]:
    """Operand names of an instruction, from the text after its opening parenthesis."""
    return re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])


def array_dims(type_str: str) -> Tuple[str, Tuple[int, ...]]:
    """(dtype, dims) of an array type text: "f32[8,128]{1,0}" -> ("f32", (8, 128))."""
    m = ARRAY_TYPE.search(type_str)
    if not m:
        raise ValueError(f"not an array type: {type_str!r}")
    return m.group(1), tuple(int(d) for d in m.group(2).split(",") if d)


def type_bytes(type_str: str) -> int:
    """Bytes of an HLO result type (an array type or a tuple of them)."""
    total = 0
    for dtype, dims in ARRAY_TYPE.findall(type_str):
        if dtype in DTYPE_BYTES:
            total += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total
