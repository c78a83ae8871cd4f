"""How long jaxdistill retries a failing gs:// request, the same for its three storage clients.

A request that fails for a reason that may pass (the storage unreachable, HTTP 5xx or 429) is retried with
exponential backoff for at most `JAXDISTILL_STORAGE_RETRY_S` seconds (default 120): by gcsfs
(`bounded_gcsfs_class`, registered for gs:// in fsspec, so `etils.epath` and orbax use it too), by tensorstore
(`tensorstore_retries`, see `checkpoint`) and by google-cloud-storage (`gcs_call_options`, the workdir lock).
`storage` decides which failures those are and what a user is told when the budget runs out.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Optional, Tuple

RETRY_VARIABLE = "JAXDISTILL_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 120.0
CONNECT_TIMEOUT_S = 30.0

_budget_override = threading.local()


@contextlib.contextmanager
def retry_budget(seconds: float) -> Iterator[None]:
    """Lowers the retry budget to at most `seconds` for the calls this thread makes inside the block (the
    google-cloud-storage client runs in the caller's thread; gcsfs's requests, in fsspec's own thread, keep
    the global budget). For best-effort clean-ups that must not hold up an exit."""
    previous = getattr(_budget_override, "seconds", None)
    _budget_override.seconds = min(float(seconds), previous) if previous is not None else float(seconds)
    try:
        yield
    finally:
        _budget_override.seconds = previous


def retry_budget_s() -> float:
    """How long a failing storage request is retried before the command gives up (JAXDISTILL_STORAGE_RETRY_S,
    seconds; default 120; lower inside `retry_budget`). A value that is not a positive number is a
    ConfigError naming the variable."""
    override = getattr(_budget_override, "seconds", None)
    if override is not None:
        return min(override, _global_budget_s())
    return _global_budget_s()


def _global_budget_s() -> float:
    raw = os.environ.get(RETRY_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        from jaxdistill.errors import ConfigError
        raise ConfigError(f"{RETRY_VARIABLE}={raw!r}: expected a positive number of seconds (default "
                          f"{DEFAULT_RETRY_S:.0f})")
    return value


def backoff(budget_s: Optional[float] = None) -> Tuple[float, float, int]:
    """(first delay, longest delay, number of retries) of an exponential backoff whose delays add up to at
    most `budget_s` (default `retry_budget_s()`): 1 s doubling up to 30 s for the default 120 s (7 retries)."""
    budget = retry_budget_s() if budget_s is None else float(budget_s)
    first = min(1.0, budget / 4)
    longest = min(30.0, max(first, budget / 4))
    total, delay, retries = 0.0, first, 0
    while total + delay <= budget + 1e-9:
        total, retries, delay = total + delay, retries + 1, min(2 * delay, longest)
    return first, longest, max(retries, 1)


def gcsfs_attempts(budget_s: Optional[float] = None) -> int:
    """How many attempts gcsfs's own backoff (about 2**(n-1) + 0.5 s before retry n, at most 32 s) fits in
    the budget, the first one included."""
    budget = retry_budget_s() if budget_s is None else float(budget_s)
    total, attempts = 0.0, 1
    while attempts < 64:
        wait = min(0.5 + 2 ** (attempts - 1), 32.0)
        if total + wait > budget:
            break
        total, attempts = total + wait, attempts + 1
    return attempts


def tensorstore_retries() -> dict:
    """tensorstore's `gcs_request_retries` context resource for the budget (its own default is 32 retries
    of up to 32 s, about a quarter of an hour)."""
    first, longest, retries = backoff()
    return {"max_retries": retries, "initial_delay": f"{first:g}s", "max_delay": f"{longest:g}s"}


def gcs_call_options() -> dict:
    """`retry=` and `timeout=` keyword arguments for google-cloud-storage calls: retried transient failures
    for at most the budget, a connect timeout (a host that never answers), a read timeout of 60 s."""
    from google.cloud.storage.retry import DEFAULT_RETRY
    first, longest, _ = backoff()
    budget = retry_budget_s()
    return {"retry": DEFAULT_RETRY.with_timeout(budget).with_delay(initial=first, maximum=longest),
            "timeout": (min(CONNECT_TIMEOUT_S, budget), 60.0)}


_BOUNDED: dict = {}


def _retrying(method, attempts: int):
    """gcsfs's own retry decorator around the undecorated `method`, with `attempts` attempts (cached)."""
    key = (method, attempts)
    if key not in _BOUNDED:
        from gcsfs.retry import retry_request
        _BOUNDED[key] = retry_request(retries=attempts)(method)
    return _BOUNDED[key]


def bounded_gcsfs_class():
    """A `gcsfs.GCSFileSystem` whose requests are attempted `gcsfs_attempts()` times, read at every request
    (gcsfs fixes 6 when its class is defined), and whose connections time out after CONNECT_TIMEOUT_S
    (gcsfs waits forever by default)."""
    if "class" not in _BOUNDED:
        from gcsfs import GCSFileSystem

        def __init__(self, *args, **kwargs):
            if kwargs.get("requests_timeout") is None:
                import aiohttp
                kwargs["requests_timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
            GCSFileSystem.__init__(self, *args, **kwargs)

        def bounded(name):
            raw = getattr(GCSFileSystem, name).__wrapped__

            async def method(self, *args, **kwargs):
                return await _retrying(raw, gcsfs_attempts())(self, *args, **kwargs)
            method.__name__ = name
            return method

        namespace = {"__init__": __init__, "__module__": __name__, "__doc__": bounded_gcsfs_class.__doc__}
        for name in ("_request", "_get_file_request", "_get_file_concurrent"):
            if hasattr(getattr(GCSFileSystem, name, None), "__wrapped__"):
                namespace[name] = bounded(name)
        _BOUNDED["class"] = type("BoundedGCSFileSystem", (GCSFileSystem,), namespace)
    return _BOUNDED["class"]


def register_bounded_gcsfs() -> None:
    """Makes fsspec (and so `etils.epath` and orbax) build `bounded_gcsfs_class()` for gs:// URLs."""
    try:
        import fsspec
        cls = bounded_gcsfs_class()
    except ImportError:
        return
    for protocol in ("gs", "gcs"):
        if fsspec.registry.get(protocol) is not cls:
            fsspec.register_implementation(protocol, cls, clobber=True)
