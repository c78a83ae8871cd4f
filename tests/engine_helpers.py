"""Shared set-up for engine tests: a tiny HomoDistil run on a tiny teacher and corpus, and subprocess drivers."""
import json
import os
import socket
import subprocess
import sys

from tiny import write_tiny_corpus, write_tiny_teacher

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_setup(root):
    """Writes the tiny teacher (HF dir + tokenizer) and corpus under `root` once; returns their paths."""
    teacher, corpus = os.path.join(root, "teacher"), os.path.join(root, "corpus.txt")
    if not os.path.exists(os.path.join(teacher, "config.json")):
        write_tiny_teacher(teacher, seed=0)
        write_tiny_corpus(corpus, num_docs=60)
    return teacher, corpus


def tiny_homodistil_config(teacher, corpus, cache_dir, **train):
    from jaxdistill.configs import homodistil
    c = homodistil.base_experiment()
    c.teacher.path = teacher
    c.data.corpus.source = "text"
    c.data.corpus.path = corpus
    c.data.seq_len = 32
    c.data.cache_dir = cache_dir
    c.data.holdout_sequences = 8
    c.data.num_proc = 1
    c.pruning.update(dict(hidden=24, ffn=32, head_dim=6, warmup_steps=1, final_steps=2, every=2, window=2))
    c.train.update(dict(steps=8, batch_size=8, lr=1e-3, warmup_steps=2, dropout=False, log_every=4,
                        checkpoint_every=4, eval_every=0, async_checkpoint=True))
    c.train.update(train)
    c.metrics.progress = False
    c.metrics.tensorboard = False
    return c


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(config, path):
    with open(path, "w") as f:
        json.dump(config.to_dict(), f)
    return path


def driver_cmd(kind, *args):
    return [sys.executable, os.path.join(HERE, "drivers.py"), kind, *map(str, args)]


def env_with(**extra):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_driver(kind, *args, timeout=300, env=None, check=True):
    r = subprocess.run(driver_cmd(kind, *args), capture_output=True, text=True, timeout=timeout,
                       env=env or env_with())
    if check and r.returncode != 0:
        raise AssertionError(f"driver {kind} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r
