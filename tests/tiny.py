"""Tiny model configs shared by tests (fast on 2 CPU cores)."""
from jaxdistill.models import BertConfig


def tiny_config(**overrides) -> BertConfig:
    kw = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12)
    kw.update(overrides)
    return BertConfig(**kw)


# A tiny WordPiece vocabulary and corpus, so engine/CLI tests run a real tokenizer on real files offline.
WORDS = ("the a an of to and in is was it for on with as his her they at be this from have or by one had not "
         "but what all were when we there can said which do their if will up other about out many then them "
         "these so some would make like him into time has look two more write go see number no way could "
         "people my than first water been call who oil now find long down day did get come made may part "
         "film movie good bad story actor plot funny dull great music scene").split()


def write_tiny_tokenizer(directory) -> int:
    """Writes vocab.txt + tokenizer files for a BERT WordPiece tokenizer; returns the vocabulary size."""
    import os
    from transformers import BertTokenizerFast
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz.,!?'")
    vocab = specials + chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list(dict.fromkeys(WORDS))
    while len(vocab) % 8:
        vocab.append(f"[unused{len(vocab)}]")
    os.makedirs(directory, exist_ok=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(directory)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    return len(vocab)


def write_tiny_corpus(path, num_docs=40, seed=0) -> None:
    """Documents of random sentences over WORDS, separated by blank lines."""
    import numpy as np
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(num_docs):
        sents = [" ".join(rng.choice(WORDS, size=rng.integers(4, 14))) + "." for _ in range(rng.integers(2, 6))]
        docs.append(" ".join(sents))
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")


def write_tiny_teacher(directory, seed=0, **overrides):
    """A random tiny BERT (with MLM head) exported as a Hugging Face directory with a tokenizer."""
    import jax
    from jaxdistill.models import hf, init_params
    vocab_size = write_tiny_tokenizer(directory)
    config = tiny_config(vocab_size=vocab_size, **overrides)
    params = init_params(config, jax.random.key(seed))
    hf.export(config, params, str(directory), overwrite=True)
    return config, params


def write_hub_cache(cache_dir, repo_id, files, revision="main", commit="0123456789abcdef0123456789abcdef01234567"):
    """Puts `files` ({name: text}) into a Hugging Face hub cache at `cache_dir` as `repo_id`@`revision`, the
    layout `huggingface_hub` reads offline (refs/<revision> -> snapshots/<commit>/<name>)."""
    import os
    repo = os.path.join(str(cache_dir), "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", commit)
    os.makedirs(snapshot, exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", revision), "w") as f:
        f.write(commit)
    for name, text in files.items():
        with open(os.path.join(snapshot, name), "w") as f:
            f.write(text)
    return snapshot


TASK_LABELS = ("negative", "positive")


def write_tiny_task_csv(path, rows=48, seed=0) -> None:
    """A two-class sentence CSV (columns sentence,label) over WORDS: positives contain good/great/funny."""
    import csv
    import numpy as np
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for i in range(rows):
            good = i % 2 == 0
            words = list(rng.choice(WORDS[:40], size=5)) + ["good great funny" if good else "bad dull"]
            w.writerow([" ".join(words), TASK_LABELS[int(good)]])


def write_tiny_classifier(directory, seed=0, labels=TASK_LABELS, **overrides):
    """A random tiny BERT classifier (a stand-in fine-tuned teacher) with named labels and a tokenizer."""
    from jaxdistill.label_names import write_label_names
    config, params = write_tiny_teacher(directory, seed=seed, num_labels=len(labels), with_mlm_head=False,
                                        **overrides)
    write_label_names(str(directory), labels)
    return config, params


def write_task_preset_inputs(root) -> None:
    """The files the task presets of configs/ read, under `root` (used as the working directory): tiny
    stand-ins for the fine-tuned teachers, the task CSVs and TinyBERT's first-run export."""
    import os
    for d in ("runs/task-smoke/teacher/model", "runs/pang-lee-teacher/model",
              "runs/task-smoke/tinybert-intermediate/export", "runs/pang-lee/tinybert-intermediate/export",
              "jaxdistill-demo/data"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for d in ("runs/task-smoke/teacher/model", "runs/pang-lee-teacher/model",
              "runs/task-smoke/tinybert-intermediate/export", "runs/pang-lee/tinybert-intermediate/export"):
        write_tiny_classifier(os.path.join(root, d), num_hidden_layers=6)  # the presets copy layers [0, 3, 5]
    write_tiny_task_csv(os.path.join(root, "runs/task-smoke/task.csv"))
    write_tiny_task_csv(os.path.join(root, "jaxdistill-demo/data/sentences.csv"))
