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
and makes every client anonymous, so no Google credentials (and no metadata server) are looked up.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Iterator, List, Optional, Tuple

from jaxdistill.errors import JaxdistillError, StorageError

log = logging.getLogger(__name__)

REMOTE_PREFIX = "gs://"
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
DEFAULT_MIRROR_ROOT = os.path.join("~", ".cache", "jaxdistill", "gcs")
MIRROR_RECORD = ".jaxdistill-mirror.json"


# ----------------------------------------------------------------------------------------- configuration
def emulator_host() -> Optional[str]:
    """The storage emulator's URL from STORAGE_EMULATOR_HOST (with http:// added when missing), or None."""
    host = os.environ.get(EMULATOR_VARIABLE, "").strip()
    if not host or host == "default":
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def configure_emulator() -> None:
    """With STORAGE_EMULATOR_HOST set, points tensorstore at the same emulator and makes every GCS client
    anonymous: tensorstore gets a fixed test token, gcsfs `token="anon"` without the experimental
    zonal-bucket probe (a gRPC call the emulator does not serve), and nothing asks the metadata server.
    Variables the user set explicitly are kept. Safe to call more than once."""
    host = emulator_host()
    if host is None:
        return
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", host)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "anonymous")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    os.environ.setdefault("NO_GCE_CHECK", "true")
    os.environ.setdefault("FSSPEC_GS_TOKEN", "anon")
    try:
        import fsspec
    except ImportError:
        return
    fsspec.config.conf.setdefault("gs", {}).setdefault("token", "anon")


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


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(path)


def split_bucket(url: str) -> Tuple[str, str]:
    """`gs://bucket/a/b` -> ("bucket", "a/b")."""
    bucket, _, key = str(url)[len(REMOTE_PREFIX):].partition("/")
    return bucket, key.strip("/")


def filesystem(url: str):
    """The fsspec filesystem of a gs:// URL (gcsfs), configured for the emulator when one is set."""
    configure_emulator()
    import fsspec
    return fsspec.filesystem("gs")


def gcs_client():
    """A google-cloud-storage client: anonymous against an emulator (STORAGE_EMULATOR_HOST), else with the
    machine's default credentials. Used where a generation precondition is needed (the workdir lock)."""
    configure_emulator()
    from google.cloud import storage as gcs
    if emulator_host() is None:
        return gcs.Client()
    from google.auth.credentials import AnonymousCredentials
    return gcs.Client(project="jaxdistill-emulator", credentials=AnonymousCredentials())


# ------------------------------------------------------------------------------------ queries and reads
def exists(path: str) -> bool:
    if is_remote(path):
        return bool(filesystem(path).exists(path))
    return os.path.exists(path)


def isdir(path: str) -> bool:
    """A local directory, or a gs:// prefix under which at least one object exists."""
    if is_remote(path):
        return bool(listdir(path))
    return os.path.isdir(path)


def isfile(path: str) -> bool:
    if is_remote(path):
        return bool(filesystem(path).isfile(path))
    return os.path.isfile(path)


def listdir(path: str) -> List[str]:
    """The names directly under `path` (files and sub-directories); [] when there is none."""
    if not is_remote(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs = filesystem(path)
    try:
        entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    prefix = path[len(REMOTE_PREFIX):].rstrip("/") + "/"
    return sorted({e.rstrip("/")[len(prefix):].split("/")[0] for e in entries if e.startswith(prefix)} - {""})


def read_bytes(path: str) -> bytes:
    if is_remote(path):
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
    with storage_errors(f"writing {path}"):
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
        fs = filesystem(path)
        if listdir(path):
            fs.rm(path, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def move_tree(source: str, target: str) -> None:
    """Moves a directory: a rename locally; a copy then a delete on gs:// (which has no rename)."""
    if not is_remote(source):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        shutil.move(source, target)
        return
    fs = filesystem(source)
    fs.copy(source.rstrip("/") + "/", target.rstrip("/") + "/", recursive=True)
    fs.rm(source, recursive=True)


def upload_dir(local_dir: str, target: str, last: Optional[str] = None) -> None:
    """Copies every file under `local_dir` to `target` (a gs:// prefix or a local directory), `last` (a
    name relative to `local_dir`, e.g. "config.json") after all the others: readers that wait for `last`
    never see a half-uploaded directory. Files already at `target` and not in `local_dir` are kept."""
    names = sorted((os.path.relpath(os.path.join(d, f), local_dir) for d, _, fs in os.walk(local_dir) for f in fs),
                   key=lambda name: name == last)
    with storage_errors(f"uploading {local_dir} to {target}"):
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
    if fs.isfile(url):
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
    listing = remote_listing(url) if exists(url) else {}
    if not listing:
        raise FileNotFoundError(f"{url} does not exist (no object with that name or prefix)")
    mirror = mirror_path(url, mirror_root)
    target = os.path.join(mirror, "content")
    record = os.path.join(mirror, MIRROR_RECORD)
    fingerprint = json.dumps(sorted(listing.items()))
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
    return list(listing) == [basename(url)] and filesystem(url).isfile(url)


# ----------------------------------------------------------------------------------------------- errors
def storage_failure_reason(error: BaseException) -> Optional[str]:
    """A short description when `error` is a failure of the storage itself (missing bucket, permission
    denied, storage unreachable), or None for anything else."""
    if isinstance(error, JaxdistillError):
        return None
    if isinstance(error, PermissionError):
        return f"permission denied ({error})"
    if isinstance(error, FileNotFoundError):
        return f"not found: the bucket or parent is missing ({error})"
    if isinstance(error, OSError):
        return f"{type(error).__name__}: {error}"
    name = type(error).__name__
    module = type(error).__module__ or ""
    if module.startswith(("google.", "gcsfs", "aiohttp", "requests", "urllib3")) or name == "HttpError":
        return f"{name}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    return None


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turns a storage failure inside the block into StorageError (exit 75, retryable) whose message says
    `what` (which names the path) and what to do; other exceptions pass through unchanged."""
    try:
        yield
    except Exception as e:
        reason = storage_failure_reason(e)
        if reason is None:
            raise
        raise StorageError(f"{what} failed: {reason}. Check that the bucket exists, that you may write to it "
                           "and that the storage is reachable, then rerun the same command") from e
