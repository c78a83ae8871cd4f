"""Paths that may be local or `gs://` URLs: every file jaxdistill reads or writes goes through here.

Local paths use the standard library, exactly as before. `gs://bucket/key` URLs use fsspec's `gcsfs` (the
same backend `etils.epath`, and so orbax, uses for gs:// without TensorFlow); checkpoints themselves go
through orbax/tensorstore, which speak gs:// natively. Object stores have no directories and no rename, so:

- `makedirs` is a no-op on gs:// and `isdir` means "some object has this prefix";
- a single-object write (`write_text`, `write_bytes`) is atomic on GCS, like `os.replace` locally;
- a directory that must appear complete (an export, a data-cache shard) is written to a local temporary
  directory and uploaded with `upload_dir`, its commit file (e.g. config.json) last;
- inputs that libraries read as local files (model directories, tokenizers, corpora, task files) are
  downloaded once into a local mirror (`local_copy`), re-fetched when the remote listing changes.

The only setting a user gives for an emulator is the standard `STORAGE_EMULATOR_HOST=http://HOST:PORT`;
`configure_emulator` (run on import of jaxdistill) translates it for tensorstore (`TENSORSTORE_GCS_HTTP_URL`)
and makes every client anonymous, so no Google credentials (and no metadata server) are looked up;
`configure` (run before every gs:// operation) adds the bounded gcsfs below.

Failures. A request that fails for a reason that may pass is retried for at most `JAXDISTILL_STORAGE_RETRY_S`
seconds (default 120) by all three clients alike (`storage_retry`); one that cannot pass by waiting (permission
denied, a missing bucket) is not retried. Either way the command then stops with `StorageError` (exit 75), its
message naming the path, what failed and the fix (`failure_kind`, `storage_errors`). `check_writable` probes an
output at start-up, before the heavy work.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from typing import Iterator, List, Optional, Tuple

from jaxdistill.errors import JaxdistillError, StorageError
from jaxdistill.storage_retry import RETRY_VARIABLE, register_bounded_gcsfs, retry_budget_s

log = logging.getLogger(__name__)

REMOTE_PREFIX = "gs://"
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
DEFAULT_MIRROR_ROOT = os.path.join("~", ".cache", "jaxdistill", "gcs")
MIRROR_RECORD = ".jaxdistill-mirror.json"


# ----------------------------------------------------------------------------------------- configuration
# The variables `configure_emulator` derives from STORAGE_EMULATOR_HOST, with the value it set: a later change
# of the emulator moves them along; a value the user set (anything else) is kept.
_derived: dict = {}


def emulator_host() -> Optional[str]:
    """The storage emulator's URL from STORAGE_EMULATOR_HOST (with http:// added when missing), or None."""
    host = os.environ.get(EMULATOR_VARIABLE, "").strip()
    if not host or host == "default":
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def _derive(variable: str, value: str) -> None:
    if variable not in os.environ or os.environ[variable] == _derived.get(variable):
        os.environ[variable] = value
        _derived[variable] = value


def configure_emulator() -> None:
    """With STORAGE_EMULATOR_HOST set, points tensorstore at the same emulator and makes every GCS client
    anonymous: tensorstore gets a fixed test token, gcsfs `token="anon"` without the experimental
    zonal-bucket probe (a gRPC call the emulator does not serve), and nothing asks the metadata server.
    Variables the user set explicitly are kept. Safe to call more than once."""
    host = emulator_host()
    if host is None:
        return
    _derive("TENSORSTORE_GCS_HTTP_URL", host)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "anonymous")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    os.environ.setdefault("NO_GCE_CHECK", "true")
    os.environ.setdefault("FSSPEC_GS_TOKEN", "anon")
    try:
        import fsspec
    except ImportError:
        return
    fsspec.config.conf.setdefault("gs", {}).setdefault("token", "anon")


def configure() -> None:
    """`configure_emulator` and the bounded retries of gcsfs (`register_bounded_gcsfs`); run before every
    gs:// operation (cheap; it imports gcsfs, so `import jaxdistill` runs only `configure_emulator`)."""
    configure_emulator()
    register_bounded_gcsfs()


# ----------------------------------------------------------------------------------------------- paths
def is_remote(path) -> bool:
    """Whether `path` is a gs:// URL."""
    return str(path).startswith(REMOTE_PREFIX)


def absolute(path: str) -> str:
    """A local path made absolute (with ~ expanded); a URL unchanged but for a trailing slash."""
    if is_remote(path):
        return str(path).rstrip("/")
    return os.path.abspath(os.path.expanduser(str(path)))


def join(base: str, *parts: str) -> str:
    """`os.path.join` for local paths; `/`-joined for URLs."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/")] + [str(p).strip("/") for p in parts])
    return os.path.join(base, *parts)


def dirname(path: str) -> str:
    """The folder holding `path` (a URL's prefix up to the last `/`; `os.path.dirname` of the absolute path)."""
    if is_remote(path):
        return str(path).rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(os.path.expanduser(str(path))))


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(path)


def split_bucket(url: str) -> Tuple[str, str]:
    """`gs://bucket/a/b` -> ("bucket", "a/b")."""
    bucket, _, key = str(url)[len(REMOTE_PREFIX):].partition("/")
    return bucket, key.strip("/")


def filesystem(url: str):
    """The fsspec filesystem of a gs:// URL (gcsfs with bounded retries), for the emulator when one is set."""
    configure()
    import fsspec
    return fsspec.filesystem("gs")  # gcsfs reads STORAGE_EMULATOR_HOST at every request


def gcs_client():
    """A google-cloud-storage client: anonymous against an emulator (STORAGE_EMULATOR_HOST), else with the
    machine's default credentials. Used where a generation precondition is needed (the workdir lock)."""
    configure()
    from google.cloud import storage as gcs
    if emulator_host() is None:
        return gcs.Client()
    from google.auth.credentials import AnonymousCredentials
    return gcs.Client(project="jaxdistill-emulator", credentials=AnonymousCredentials())


# ------------------------------------------------------------------------------------ queries and reads
def exists(path: str) -> bool:
    if is_remote(path):
        with reading(path):
            return bool(filesystem(path).exists(path))
    return os.path.exists(path)


def isdir(path: str) -> bool:
    """A local directory, or a gs:// prefix under which at least one object exists."""
    if is_remote(path):
        return bool(listdir(path))
    return os.path.isdir(path)


def isfile(path: str) -> bool:
    if is_remote(path):  # not fs.isfile, which takes any failure (an unreachable storage too) for "no"
        with reading(path):
            try:
                return filesystem(path).info(path)["type"] == "file"
            except FileNotFoundError:
                return False
    return os.path.isfile(path)


def listdir(path: str) -> List[str]:
    """The names directly under `path` (files and sub-directories); [] when there is none."""
    if not is_remote(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs = filesystem(path)
    try:
        with reading(path):
            entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    prefix = path[len(REMOTE_PREFIX):].rstrip("/") + "/"
    return sorted({e.rstrip("/")[len(prefix):].split("/")[0] for e in entries if e.startswith(prefix)} - {""})


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        with reading(path):
            return filesystem(path).cat_file(path)
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    return json.loads(read_text(path))


# ----------------------------------------------------------------------------------------------- writes
def makedirs(path: str) -> None:
    """Creates a local directory (and its parents); nothing to do on gs://, which has no directories."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def write_bytes(path: str, data: bytes) -> None:
    """Writes `path` whole, atomically: a temporary file renamed into place locally, one upload on GCS.
    A failure raises StorageError naming the path (exit 75)."""
    with storage_errors(f"writing {path}", path):
        if is_remote(path):
            filesystem(path).pipe_file(path, data)
            return
        makedirs(os.path.dirname(os.path.abspath(path)))
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, data, **dump_kwargs) -> None:
    write_text(path, json.dumps(data, **dump_kwargs))


def remove_tree(path: str) -> None:
    """Deletes a directory (or prefix) and everything under it; nothing when it does not exist."""
    if is_remote(path):
        if listdir(path):
            with storage_errors(f"deleting {path}"):
                filesystem(path).rm(path, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def move_tree(source: str, target: str) -> None:
    """Moves a directory: a rename locally; a copy then a delete on gs:// (which has no rename)."""
    if not is_remote(source):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        shutil.move(source, target)
        return
    fs = filesystem(source)
    with storage_errors(f"moving {source} to {target}"):
        fs.copy(source.rstrip("/") + "/", target.rstrip("/") + "/", recursive=True)
        fs.rm(source, recursive=True)


def upload_dir(local_dir: str, target: str, last: Optional[str] = None) -> None:
    """Copies every file under `local_dir` to `target` (a gs:// prefix or a local directory), `last` (a
    name relative to `local_dir`, e.g. "config.json") after all the others: readers that wait for `last`
    never see a half-uploaded directory. Files already at `target` and not in `local_dir` are kept."""
    names = sorted((os.path.relpath(os.path.join(d, f), local_dir) for d, _, fs in os.walk(local_dir) for f in fs),
                   key=lambda name: name == last)
    with storage_errors(f"uploading {local_dir} to {target}", target):
        fs = filesystem(target) if is_remote(target) else None
        for name in names:
            source, dest = os.path.join(local_dir, name), join(target, *name.split(os.sep))
            if fs is not None:
                fs.put_file(source, dest)
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copyfile(source, dest + ".tmp")
                os.replace(dest + ".tmp", dest)


def remote_listing(url: str) -> dict:
    """{relative name: (size, generation or md5)} of every object under `url`; for a single object, its
    own name."""
    fs = filesystem(url)
    root = url[len(REMOTE_PREFIX):].rstrip("/")
    if isfile(url):
        info = fs.info(url)
        return {basename(url): (int(info["size"]), str(info.get("generation") or info.get("md5Hash") or ""))}
    found = fs.find(url, detail=True, withdirs=False)
    return {name[len(root) + 1:]: (int(info["size"]), str(info.get("generation") or info.get("md5Hash") or ""))
            for name, info in found.items() if name.startswith(root + "/")}


def mirror_path(url: str, mirror_root: Optional[str] = None) -> str:
    """Where `local_copy` keeps a gs:// object or prefix: `<mirror_root>/<bucket>/<key>-<hash>`."""
    root = os.path.expanduser(mirror_root or os.environ.get("JAXDISTILL_GCS_MIRROR") or DEFAULT_MIRROR_ROOT)
    bucket, key = split_bucket(url)
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:10]
    return os.path.join(root, bucket, (key.replace("/", "_") or "root") + "-" + digest)


def local_copy(path: str, mirror_root: Optional[str] = None) -> str:
    """A local path holding the same file or directory as `path`: `path` itself when local; for a gs://
    URL a mirror downloaded once (into a temporary directory renamed into place) and downloaded again when
    the remote listing (names, sizes, generations) changes; a single object keeps its name (and so its
    extension). A missing URL raises FileNotFoundError."""
    if not is_remote(path):
        return path
    url = path.rstrip("/")
    with reading(url):
        listing = remote_listing(url) if exists(url) else {}
    if not listing:
        raise FileNotFoundError(f"{url} does not exist (no object with that name or prefix)")
    mirror = mirror_path(url, mirror_root)
    target = os.path.join(mirror, "content")
    record = os.path.join(mirror, MIRROR_RECORD)
    fingerprint = json.dumps(sorted(listing.items()))
    with reading(url):
        single = storage_is_single_object(url, listing)
    result = os.path.join(target, basename(url)) if single else target
    if os.path.exists(record) and open(record).read() == fingerprint:
        return result
    os.makedirs(mirror, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".download-", dir=mirror)
    fs = filesystem(url)
    try:
        for name in listing:
            dest = os.path.join(tmp, "content", *name.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with reading(url):
                fs.get_file(url if single else url + "/" + name, dest)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(os.path.join(tmp, "content"), target)
        with open(record + ".tmp", "w") as f:
            f.write(fingerprint)
        os.replace(record + ".tmp", record)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("downloaded %s (%d file(s)) to %s", url, len(listing), target)
    return result


def storage_is_single_object(url: str, listing: dict) -> bool:
    """Whether `listing` (from `remote_listing`) describes the one object `url` rather than a prefix."""
    return list(listing) == [basename(url)] and isfile(url)


# ----------------------------------------------------------------------------------------------- errors
# What a storage failure is, which decides the advice: waiting cannot fix the first two (they are not retried).
PERMISSION, MISSING, UNREACHABLE, FULL, OTHER = "permission", "missing", "unreachable", "full", "other"
# tensorstore (under orbax) reports failures as ValueError("<STATUS>: ..."); exhausted retries as ABORTED.
_TENSORSTORE_STATUSES = (("PERMISSION_DENIED", PERMISSION), ("UNAUTHENTICATED", PERMISSION),
                         ("RESOURCE_EXHAUSTED", FULL), ("UNAVAILABLE", UNREACHABLE),
                         ("DEADLINE_EXCEEDED", UNREACHABLE), ("retry attempts failed", UNREACHABLE))
_HTTP_KINDS = {401: PERMISSION, 403: PERMISSION, 404: MISSING, 408: UNREACHABLE, 429: UNREACHABLE}


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and every exception it was raised from or while handling."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _kind_of(e: BaseException) -> Optional[str]:
    """The kind of one exception (not its causes), or None when it says nothing about the storage."""
    name, module = type(e).__name__, type(e).__module__ or ""
    text = str(e)
    if isinstance(e, PermissionError):
        return PERMISSION
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return FULL
    code = getattr(e, "code", None)
    if module.startswith(("google.", "gcsfs")) and isinstance(code, int):  # api_core exceptions, gcsfs HttpError
        return _HTTP_KINDS.get(code, UNREACHABLE if code >= 500 else OTHER)
    if isinstance(e, OSError) and text.startswith("Forbidden"):  # gcsfs's HTTP 403
        return PERMISSION
    if name in ("RetryError", "FSTimeoutError", "TransportError") or isinstance(e, (ConnectionError, TimeoutError)):
        return UNREACHABLE
    if module.startswith(("aiohttp", "requests", "urllib3")) and ("Connect" in name or "Timeout" in name):
        return UNREACHABLE
    if isinstance(e, FileNotFoundError):
        return MISSING
    if isinstance(e, ValueError):
        head = text[:300]
        for status, kind in _TENSORSTORE_STATUSES:
            if head.startswith(status) or f" {status}" in head[:40] or (" " in status and status in head):
                return kind
        return None
    if isinstance(e, OSError) or module.startswith(("google.", "gcsfs", "aiohttp", "requests", "urllib3")):
        return OTHER
    return None


def failure_kind(error: BaseException) -> Optional[str]:
    """PERMISSION, MISSING, UNREACHABLE, FULL or OTHER when `error` (or what it came from) is a failure of the
    storage itself; None for anything else (jaxdistill's own errors included)."""
    if isinstance(error, JaxdistillError):
        return None
    found = None
    for e in error_chain(error):
        kind = _kind_of(e)
        if kind not in (None, OTHER):
            return kind
        found = found or kind
    return found


def first_line(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, cut to `limit` characters (client messages run to pages)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:limit]}" if text else type(error).__name__


def describe_failure(error: BaseException) -> Optional[str]:
    """What went wrong in a few words plus the client's own first line, or None when `error` is not a storage
    failure: 'permission denied (OSError: Forbidden: ...)'."""
    kind = failure_kind(error)
    if kind is None:
        return None
    meaning = {PERMISSION: "permission denied", MISSING: "not found (the bucket, or a parent, does not exist)",
               UNREACHABLE: "the storage did not answer", FULL: "the disk (or quota) is full",
               OTHER: "the storage failed"}[kind]
    text = " ".join(str(error).split())  # gcsfs puts the server's reason on a second line
    return f"{meaning} ({type(error).__name__}: {text[:300]})" if text else f"{meaning} ({type(error).__name__})"


def failure_advice(kind: Optional[str], writing: bool = True, resume: bool = False, remote: bool = True) -> str:
    """The fix for a storage failure of `kind`, as a clause that says to rerun ("... to resume" with `resume`);
    for a gs:// path (`remote`) in terms of buckets and credentials, else of folders and disks."""
    rerun = "then rerun the same command" + (" to resume" if resume else "")
    if kind == PERMISSION and remote:
        role = "roles/storage.objectAdmin" if writing else "roles/storage.objectViewer"
        return (f"check the credentials in use (`gcloud auth application-default login`, or the VM's service "
                f"account) and that they may {'write to' if writing else 'read'} the bucket (e.g. {role}), "
                f"{rerun}; until then a rerun fails the same way")
    if kind == PERMISSION:
        return f"fix its permissions (this user must be able to {'write' if writing else 'read'} there), {rerun}"
    if kind == MISSING and remote:
        return f"check the path, or create the bucket (`gcloud storage buckets create gs://BUCKET`), {rerun}"
    if kind == MISSING:
        return f"check the path (a parent folder is missing), {rerun}"
    if kind == UNREACHABLE and remote:
        return (f"requests were retried for {retry_budget_s():g} s ({RETRY_VARIABLE}); check the network (or "
                f"{EMULATOR_VARIABLE}), {rerun}")
    if kind == UNREACHABLE:
        return f"check that the filesystem is mounted and answers, {rerun}"
    if kind == FULL:
        return f"free space or raise the quota, {rerun}"
    if remote:
        return f"check that the bucket exists, that you may write to it and that the storage is reachable, {rerun}"
    return f"check that the path is writable and the disk is healthy, {rerun}"


@contextlib.contextmanager
def storage_errors(what: str, path: Optional[str] = None) -> Iterator[None]:
    """Turns a storage failure inside the block into StorageError (exit 75, retryable) whose message says
    `what` (which names the path), what went wrong and the fix; other exceptions pass through unchanged.
    The advice is for a bucket when `path` (default: any path named in `what`) is a gs:// URL."""
    try:
        yield
    except Exception as e:
        reason = describe_failure(e)
        if reason is None:
            raise
        remote = is_remote(path) if path is not None else REMOTE_PREFIX in what
        raise StorageError(f"{what} failed: {reason}; {failure_advice(failure_kind(e), remote=remote)}") from e


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """For reads of a gs:// `path`: a storage that cannot be reached or refuses access becomes StorageError
    naming `path` (exit 75); a missing object stays FileNotFoundError (the caller's "does not exist")."""
    try:
        yield
    except Exception as e:
        kind = failure_kind(e)
        if kind in (None, MISSING, OTHER) or not is_remote(path):
            raise
        raise StorageError(f"reading {path} failed: {describe_failure(e)}; {failure_advice(kind, writing=False)}"
                           ) from e


def check_writable(directory: str, what: str = "the output directory") -> None:
    """Fails early, before any heavy work, when `directory` cannot be written: on gs:// a small probe object
    is written under it and deleted again (creating and deleting objects is what a run does); locally the
    directory is created and a probe file written and removed. Raises StorageError (exit 75) naming
    `directory`, what went wrong and the fix."""
    probe = join(directory, f".jaxdistill-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with storage_errors(f"writing to {what} {directory}", directory):
        if is_remote(directory):
            fs = filesystem(directory)
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
            return
        os.makedirs(directory, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)
