"""Pre-training corpora: a spec from the config -> validated source -> batches of document strings.

Sources (``data.corpus.source``):
- ``"text"``: a ``.txt`` file or a folder of them (recursive, sorted). Blank lines separate documents; a
  file is at least one document. Lines of a document are joined with newlines.
- ``"hf"``: Hugging Face ``datasets``. ``path`` is a local file or folder (the builder follows the
  extension: ``.txt`` -> ``text`` with one document per blank-line separated paragraph, ``.json/.jsonl`` ->
  ``json``, ``.csv`` -> ``csv``, ``.tsv`` -> ``csv`` with tab delimiter, ``.parquet`` -> ``parquet``), or a hub
  name (with ``name`` as its configuration) when online. ``text_field`` names the column, ``split`` the split.
- ``"builtin"``: a small English corpus that every Python installation carries, by ``name``:
  ``"python_docs"`` (the ~65k words of CPython's ``pydoc_data.topics``: the language reference in prose).
  It is written once as a ``.txt`` file under the cache folder and then read as a ``"text"`` corpus. For
  smoke tests and offline examples; real runs use real corpora.
- ``"tfds"``: a TFDS dataset read through ``tfds.data_source`` (array_record, no TensorFlow); needs the
  ``tfds`` extra. ``path`` is the TFDS ``data_dir`` (optional), ``name`` the dataset (``"wiki40b/en"``).

``open_corpus`` checks what it can cheaply (the file exists, is readable UTF-8 text, is not empty, has
the text field) and raises :class:`CorpusError` naming the problem and the fix, before any tokenization.
"""
from __future__ import annotations

import codecs
import csv
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple
from jaxdistill import storage
from jaxdistill.errors import CorpusError  # noqa: F401  (re-exported)

SOURCES = ("text", "hf", "tfds", "builtin")
HF_BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv",
               ".tsv": "csv", ".parquet": "parquet"}
_PROBE_BYTES = 1 << 16



@dataclass(frozen=True)
class CorpusSpec:
    source: str
    path: Optional[str] = None
    name: Optional[str] = None
    text_field: str = "text"
    split: str = "train"

    @classmethod
    def from_config(cls, cfg: Any) -> "CorpusSpec":
        get = (lambda k, d=None: cfg.get(k, d)) if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
        path = local_corpus_path(str(get("path"))) if get("path") else None
        spec = cls(source=str(get("source", "text")), path=path, name=get("name") or None,
                   text_field=str(get("text_field", "text") or "text"), split=str(get("split", "train") or "train"))
        if spec.source not in SOURCES:
            raise CorpusError(f"data.corpus.source={spec.source!r} is not one of {SOURCES}")
        if spec.source == "text" and not spec.path:
            raise CorpusError("data.corpus.path is not set: give a .txt file or a folder of .txt files")
        if spec.source == "hf" and not (spec.path or spec.name):
            raise CorpusError("data.corpus.path is not set: give a local data file/folder or a hub dataset name")
        if spec.source == "builtin" and spec.name not in BUILTIN:
            raise CorpusError(f"data.corpus.name={spec.name!r} is not a built-in corpus; use one of {sorted(BUILTIN)}")
        if spec.source == "tfds" and not spec.name:
            raise CorpusError("data.corpus.name is not set: give the TFDS dataset name, e.g. 'wiki40b/en'")
        return spec

    def label(self) -> str:
        """A short, file-system safe name for cache folders."""
        raw = os.path.basename(os.path.normpath(self.path)) if self.path else str(self.name)
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)[:48] or "corpus"


def local_corpus_path(path: str) -> str:
    """A corpus path as a local path: ~ expanded; a gs:// file or folder downloaded once to a local mirror
    (`storage.local_copy`; fetched again when its objects change)."""
    if not storage.is_remote(path):
        return os.path.expanduser(path)
    try:
        return storage.local_copy(path)
    except FileNotFoundError:
        raise CorpusError(f"corpus path {path!r} does not exist; set data.corpus.path to an existing gs:// file "
                          "or folder") from None


def _file_stats(files: List[str]) -> List[List[Any]]:
    return [[os.path.abspath(f), os.path.getsize(f), int(os.stat(f).st_mtime_ns)] for f in files]


def _list_files(path: str, exts: tuple, what: str) -> List[str]:
    if not os.path.exists(path):
        raise CorpusError(f"corpus path {path!r} does not exist; set data.corpus.path to {what}")
    if os.path.isfile(path):
        return [path]
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                   if os.path.splitext(f)[1].lower() in exts and not f.startswith("."))
    if not files:
        raise CorpusError(f"corpus folder {path!r} has no {'/'.join(exts)} files; put {what} in it")
    return files


def not_utf8_error(path: str, reason: str, offset: int) -> CorpusError:
    return CorpusError(f"corpus file {path!r} is not UTF-8 text ({reason} at byte {offset} of the file); "
                       "convert it to UTF-8")


def first_invalid_utf8(path: str) -> Optional[Tuple[int, str]]:
    """(byte offset within the file, reason) of the first byte that is not valid UTF-8, or None."""
    dec = codecs.getincrementaldecoder("utf-8")()
    read = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_PROBE_BYTES)
            pending = len(dec.getstate()[0])  # bytes of a character split by the previous chunk
            try:
                dec.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:  # e.start counts from the pending bytes, then this chunk
                return read - pending + e.start, e.reason
            if not chunk:
                return None
            read += len(chunk)


def _probe_text(path: str) -> bool:
    """Reads the start of a file as UTF-8; returns whether it has non-blank text (reading further if needed)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            first = True
            while True:
                chunk = f.read(_PROBE_BYTES)
                if not chunk:
                    return False
                if first and b"\x00" in chunk:
                    raise CorpusError(f"corpus file {path!r} looks binary (it contains NUL bytes); give UTF-8 text")
                first = False
                if dec.decode(chunk, final=False).strip():
                    return True
    except UnicodeDecodeError as e:
        offset, reason = first_invalid_utf8(path) or (e.start, e.reason)
        raise not_utf8_error(path, reason, offset) from None
    except OSError as e:
        raise CorpusError(f"corpus file {path!r} cannot be read: {e.strerror}; check its permissions") from None


class Corpus:
    """A validated corpus. ``identity`` keys the cache; ``documents`` yields lists of document strings."""

    spec: CorpusSpec
    num_documents: Optional[int] = None

    def identity(self) -> Dict[str, Any]:
        raise NotImplementedError

    def documents(self, batch_size: int = 256) -> Iterator[List[str]]:
        raise NotImplementedError

    def load(self) -> None:
        """Opens the data fully (validating what a cheap probe could not). Called only when not cached."""


class TextCorpus(Corpus):
    def __init__(self, spec: CorpusSpec):
        self.spec = spec
        self.files = _list_files(spec.path, (".txt", ".text"), "UTF-8 .txt files (blank lines separate documents)")
        nonblank = [_probe_text(f) for f in self.files]
        if not any(nonblank):
            raise CorpusError(f"corpus {spec.path!r} is empty: {len(self.files)} file(s) with no text; "
                              "point data.corpus.path at non-empty UTF-8 text")

    def identity(self):
        return {"source": "text", "files": _file_stats(self.files)}

    def documents(self, batch_size: int = 256):
        batch: List[str] = []
        for path in self.files:
            try:
                with open(path, encoding="utf-8") as f:
                    lines: List[str] = []
                    for line in f:
                        if line.strip():
                            lines.append(line.rstrip("\r\n"))
                        elif lines:
                            batch.append("\n".join(lines))
                            lines = []
                            if len(batch) >= batch_size:
                                yield batch
                                batch = []
                    if lines:
                        batch.append("\n".join(lines))
            except UnicodeDecodeError as e:  # e.start counts within a decoded block, not the file
                offset, reason = first_invalid_utf8(path) or (e.start, e.reason)
                raise not_utf8_error(path, reason, offset) from None
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _local_columns(path: str, ext: str) -> Optional[List[str]]:
    """Column names of a local data file from its first record (None when that is not cheap to know)."""
    if ext in (".txt", ".text"):
        return ["text"]
    if ext == ".parquet":
        import pyarrow.parquet as pq
        return list(pq.read_schema(path).names)
    with open(path, encoding="utf-8-sig") as f:
        if ext in (".csv", ".tsv"):
            header = next(csv.reader(f, delimiter="\t" if ext == ".tsv" else ","), None)
            return [h.strip() for h in header] if header else None
        for line in f:  # json lines: the first non-blank line must be an object
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return None  # a pretty-printed .json: checked once loaded
                return list(obj) if isinstance(obj, dict) else None
    return None


class HFCorpus(Corpus):
    def __init__(self, spec: CorpusSpec, cache_dir: Optional[str]):
        self.spec = spec
        self.cache_dir = cache_dir
        self.ds = None
        self.local = bool(spec.path) and os.path.exists(spec.path)
        looks_local = spec.path and (spec.path.startswith(("/", ".", "~")) or
                                     os.path.splitext(spec.path)[1].lower() in HF_BUILDERS)
        if looks_local and not self.local:
            raise CorpusError(f"corpus path {spec.path!r} does not exist; set data.corpus.path to a local "
                              "data file/folder or to a hub dataset name")
        if self.local:
            self.files = _list_files(spec.path, tuple(HF_BUILDERS), "data files (.txt/.json/.jsonl/.csv/.tsv/.parquet)")
            exts = {os.path.splitext(f)[1].lower() for f in self.files}
            builders = {HF_BUILDERS[e] for e in exts}
            if len(builders) > 1 or exts >= {".csv", ".tsv"}:
                raise CorpusError(f"corpus folder {spec.path!r} mixes file types {sorted(exts)}; use one type")
            self.ext = exts.pop()
            self.builder = HF_BUILDERS[self.ext]
            if all(os.path.getsize(f) == 0 for f in self.files):
                raise CorpusError(f"corpus {spec.path!r} is empty (0 bytes); point data.corpus.path at real data")
            for f in self.files:
                if self.ext != ".parquet":
                    _probe_text(f)
                cols = _local_columns(f, self.ext)
                if cols is not None and spec.text_field not in cols:
                    raise CorpusError(f"text field {spec.text_field!r} is not in corpus file {f!r}; its fields are "
                                      f"{cols}; set data.corpus.text_field to one of them")
        else:
            self.files = []

    def identity(self):
        if self.local:
            return {"source": "hf", "files": _file_stats(self.files), "field": self.spec.text_field,
                    "split": self.spec.split}
        return {"source": "hf", "hub": self.spec.path or self.spec.name, "name": self.spec.name,
                "split": self.spec.split, "field": self.spec.text_field}

    def load(self):
        if self.ds is not None:
            return
        import datasets
        local_cache = self.cache_dir and not storage.is_remote(self.cache_dir)  # datasets caches on local disk
        kw: Dict[str, Any] = {"cache_dir": os.path.join(self.cache_dir, "hf-datasets") if local_cache else None}
        try:
            if self.local:
                if self.builder == "text":
                    kw["sample_by"] = "paragraph"
                if self.ext == ".tsv":
                    kw["delimiter"] = "\t"
                ds = datasets.load_dataset(self.builder, data_files={self.spec.split: self.files},
                                           split=self.spec.split, **kw)
            else:
                hub = self.spec.path or self.spec.name
                name = self.spec.name if self.spec.path else None
                ds = datasets.load_dataset(hub, name, split=self.spec.split, **kw)
        except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "cannot read it"
            where = self.spec.path or self.spec.name
            hint = (" (offline? HF_DATASETS_OFFLINE is set: use a local file or a dataset already in the cache)"
                    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1" else "")
            raise CorpusError(f"cannot load corpus {where!r} split {self.spec.split!r} with datasets{hint}: "
                              f"{type(e).__name__}: {e}") from None
        if self.spec.text_field not in ds.column_names:
            raise CorpusError(f"text field {self.spec.text_field!r} is not in corpus {self.spec.path or self.spec.name!r}; "
                              f"its fields are {ds.column_names}; set data.corpus.text_field to one of them")
        if len(ds) == 0:
            raise CorpusError(f"corpus {self.spec.path or self.spec.name!r} split {self.spec.split!r} is empty "
                              "(0 rows); point data.corpus at real data")
        first = ds[0][self.spec.text_field]
        if first is not None and not isinstance(first, str):
            raise CorpusError(f"text field {self.spec.text_field!r} holds {type(first).__name__}, not text; "
                              "set data.corpus.text_field to a string column")
        self.ds = ds
        self.num_documents = len(ds)

    def documents(self, batch_size: int = 256):
        self.load()
        for rows in self.ds.select_columns([self.spec.text_field]).iter(batch_size=batch_size):
            yield [t for t in rows[self.spec.text_field] if t]


class TFDSCorpus(Corpus):
    def __init__(self, spec: CorpusSpec):
        self.spec = spec
        try:
            import tensorflow_datasets as tfds  # noqa: F401
        except ImportError:
            raise CorpusError("data.corpus.source='tfds' needs tensorflow-datasets and array-record: "
                              "pip install 'jaxdistill[tfds]' (no TensorFlow needed), or use source 'hf'/'text'") from None
        self.ds = None

    def identity(self):
        return {"source": "tfds", "name": self.spec.name, "split": self.spec.split,
                "data_dir": os.path.abspath(self.spec.path) if self.spec.path else None, "field": self.spec.text_field}

    def load(self):
        if self.ds is not None:
            return
        import tensorflow_datasets as tfds
        try:
            ds = tfds.data_source(self.spec.name, split=self.spec.split, data_dir=self.spec.path)
        except Exception as e:  # noqa: BLE001
            raise CorpusError(f"cannot open TFDS dataset {self.spec.name!r} split {self.spec.split!r} as an "
                              f"array_record data source: {type(e).__name__}: {e}; prepare it with "
                              "`tfds build --file_format=array_record` or check data.corpus.path (data_dir)") from None
        if len(ds) == 0:
            raise CorpusError(f"TFDS dataset {self.spec.name!r} split {self.spec.split!r} is empty")
        first = ds[0]
        if self.spec.text_field not in first:
            raise CorpusError(f"text field {self.spec.text_field!r} is not in TFDS dataset {self.spec.name!r}; its "
                              f"fields are {sorted(first)}; set data.corpus.text_field to one of them")
        self.ds = ds
        self.num_documents = len(ds)

    def documents(self, batch_size: int = 256):
        self.load()
        for start in range(0, len(self.ds), batch_size):
            recs = [self.ds[i] for i in range(start, min(start + batch_size, len(self.ds)))]
            texts = [r[self.spec.text_field] for r in recs]
            yield [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts if len(t)]


def _python_docs() -> str:
    import pydoc_data.topics
    return "\n\n".join(text.strip() for _, text in sorted(pydoc_data.topics.topics.items())) + "\n"


BUILTIN = {"python_docs": _python_docs}


def builtin_text_file(name: str, cache_dir: Optional[str] = None) -> str:
    """Writes the built-in corpus `name` to `<cache_dir>/builtin/<name>.txt` (once) and returns its path."""
    folder = os.path.join(os.path.expanduser(cache_dir or "~/.cache/jaxdistill/data"), "builtin")
    path = os.path.join(folder, f"{name}.txt")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(BUILTIN[name]())
        os.replace(tmp, path)
    return path


def open_corpus(spec: CorpusSpec, cache_dir: Optional[str] = None) -> Corpus:
    """Validates a corpus cheaply (no tokenization) and returns it. Raises CorpusError."""
    if spec.source == "builtin":
        spec = CorpusSpec(source="text", path=builtin_text_file(spec.name, cache_dir), name=spec.name)
    if spec.source == "text":
        return TextCorpus(spec)
    if spec.source == "hf":
        return HFCorpus(spec, cache_dir)
    return TFDSCorpus(spec)
