"""The Hugging Face hub: model ids with an optional revision, config-first fetches, downloads and uploads.

A hub id is `name` or `org/name`, optionally pinned with `@revision` (a branch, tag or commit):
`bert-large-uncased`, `google/bert_uncased_L-4_H-256_A-4@main`. Validation only needs a model's shape, so
`fetch_config` downloads `config.json` alone; `download_model` then fetches the weights (only the
safetensors files when the repository has them, else `pytorch_model.bin`), `config.json` and the tokenizer
files. Both use the Hugging Face cache, so a model fetched once is found again offline. When a model is
neither local, cached nor reachable, the error (exit 3) names the command that downloads it.
"""
from __future__ import annotations

import os
import re
import shlex
from typing import List, Optional, Tuple

from jaxdistill.errors import ModelError

REVISION_SEPARATOR = "@"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SAFETENSORS_PATTERNS = ("*.safetensors", "model.safetensors.index.json")
PYTORCH_WEIGHTS = "pytorch_model.bin"
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def split_revision(hub_id: str) -> Tuple[str, Optional[str]]:
    """`"org/name@rev"` -> `("org/name", "rev")`; without `@`, the revision is None (the default branch)."""
    repo, _, revision = hub_id.partition(REVISION_SEPARATOR)
    return repo, revision or None


def looks_like_hub_id(path: str) -> bool:
    """`name` or `org/name` (optionally `@revision`) that is not a local path: no leading `.`, `/` or `~`
    and nothing of that name exists here."""
    if not path or path.startswith((".", "/", "~")) or "://" in path or os.path.exists(path):
        return False
    return bool(_REPO_NAME.match(split_revision(path)[0]))


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE is set: only the local Hugging Face cache is used."""
    from huggingface_hub import constants
    return bool(constants.is_offline_mode())


def download_command(hub_id: str, files: Optional[List[str]] = None) -> str:
    """The `hf download` command line that puts `hub_id` (or the given files of it) into the cache."""
    repo, revision = split_revision(hub_id)
    argv = ["hf", "download", repo] + list(files or [])
    if revision:
        argv += ["--revision", revision]
    return shlex.join(argv)


def _unreachable(hub_id: str, what: str, error: Exception) -> ModelError:
    """The error for a hub model that is neither local, cached nor reachable, naming how to get it."""
    if is_offline():
        why = "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"
    else:
        detail = str(error).strip().splitlines()
        why = f"{type(error).__name__}: {detail[0] if detail else 'no details'}"
    return ModelError(
        f"teacher/model {hub_id!r} is not a local directory and its {what} could not be fetched from the Hugging "
        f"Face hub ({why}). Download it where you are online with `{download_command(hub_id)}` (the cache then "
        "works offline too), or pass a local directory with config.json and model.safetensors")


def fetch_config(hub_id: str) -> str:
    """Path of `hub_id`'s `config.json` (downloaded alone, or found in the cache). Raises ModelError (exit
    3) naming the download command when it cannot be had."""
    from huggingface_hub import hf_hub_download
    repo, revision = split_revision(hub_id)
    try:
        return hf_hub_download(repo, "config.json", revision=revision)
    except Exception as e:  # offline, not cached, unknown id or revision, no network
        raise _unreachable(hub_id, "config.json", e) from e


def weight_patterns(repo_files: Optional[List[str]]) -> List[str]:
    """Which weight files to download: the safetensors when the repository has them (or when its file list is
    unknown, offline), else `pytorch_model.bin`."""
    if repo_files is None or any(f.endswith(".safetensors") for f in repo_files):
        return list(SAFETENSORS_PATTERNS)
    return [PYTORCH_WEIGHTS]


def download_model(hub_id: str) -> str:
    """A local snapshot directory of `hub_id` with config.json, the tokenizer files and the weights (see
    `weight_patterns`); nothing else of the repository (no TF/Flax/ONNX weights) is downloaded."""
    from huggingface_hub import HfApi, snapshot_download
    repo, revision = split_revision(hub_id)
    files = None
    if not is_offline():
        try:
            files = HfApi().list_repo_files(repo, revision=revision)
        except Exception:  # no network: fall back to the cache
            files = None
    patterns = ["config.json", *TOKENIZER_FILES, *weight_patterns(files)]
    try:
        return snapshot_download(repo, revision=revision, allow_patterns=patterns)
    except Exception as e:
        raise _unreachable(hub_id, "weights", e) from e


def check_can_push(repo_id: str) -> None:
    """Raises ModelError (exit 3) before any work when `repo_id` cannot be pushed to: offline, or not a
    repository name."""
    if not _REPO_NAME.match(repo_id or ""):
        raise ModelError(f"--push-to-hub {repo_id!r} is not a hub repository name; give `name` or `org/name`")
    if is_offline():
        raise ModelError(f"cannot push to the Hugging Face hub repository {repo_id!r}: HF_HUB_OFFLINE is set (no "
                         "network). Unset it when online, or export without --push-to-hub and upload later with "
                         f"`hf upload {repo_id} DIRECTORY`")


def push_to_hub(directory: str, repo_id: str, private: bool = False, commit_message: Optional[str] = None) -> str:
    """Uploads a model directory (local, or gs:// through its local mirror) to the hub repository `repo_id`
    (created when missing); returns its URL.

    Raises ModelError (exit 3) offline, or when the upload fails (the directory stays complete: upload it
    later with `hf upload REPO DIRECTORY`).
    """
    check_can_push(repo_id)
    from huggingface_hub import HfApi
    from jaxdistill import storage
    folder = storage.local_copy(directory)  # a gs:// export: its local mirror (the hub client reads local files)
    later = f"the export in {directory!r} is complete; upload it later with `hf upload {repo_id} {folder}`"
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder,
                          commit_message=commit_message or "Upload model exported by jaxdistill")
    except Exception as e:  # no network, no token, no permission
        raise ModelError(f"pushing {directory!r} to the hub repository {repo_id!r} failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); log in with `hf auth login` and check "
                         f"the repository name; {later}") from e
    return f"https://huggingface.co/{repo_id}"
