"""What HomoDistil adds, isolated: one objective, equal budgets, ablated arms, confidence intervals (issue 13).

Teacher: all-MiniLM-L6-v2 made a genuine MLM teacher in two cached stages of `jaxdistill fit-mlm-head`: a head
fitted on the frozen encoder's cached features, then MLM training of the whole encoder with that head
("teacher adaptation"). Distillation corpus: the 1,500 Pang & Lee movie reviews; downstream task: the 4,000
Pang & Lee review sentences, split once (seeded) into train / validation / test. Both are fetched at run time
(`jaxdistill.data.offline`; personal-use licence, never committed).

Every arm uses HomoDistil's objective (MLM + prediction KL + hidden MSE, `configs/homodistil.py:recipe`), the
same batches, steps, learning rate and schedule, at two budgets (about 38 % and 15 % of the teacher's
backbone parameters):
  A  iterative + PLATON          HomoDistil: teacher copy, cubic schedule, PLATON importance
  B  one-shot + PLATON           every group cut to its target at the first pruning step (same warm-up)
  C  random init, compact shape  a random student of the final shape, no pruning
  D  iterative + magnitude       |theta| instead of PLATON
  E  iterative + PLATON, MLM only   no distillation terms (prediction KL and hidden MSE weights 0)

Measured per arm: the held-out teacher-student KL every `eval_every` steps (curve, area, maximum), the
held-out MLM loss on the true tokens, and fine-tuned test accuracy over seeds x learning rates, the learning
rate chosen per (arm, seed) on the validation split; paired bootstrap 95 % CIs of A-B, A-C, A-D, A-E.

    python bench/ablation.py                  # the study (~2 h on 2 idle cores); resumable stage by stage
    python bench/ablation.py --stages teacher # only the teacher (adaptation ~30-40 min)
    python bench/ablation.py --quick --teacher DIR --corpus FILE --task-file CSV --cache DIR  # toy sizes (tests)

Writes the section between `<!-- ablation:start -->` and `<!-- ablation:end -->` of `docs/results.md` and
`docs/ablation_kl.png`. Everything else (data, teachers, runs, markers) goes to `--cache`
(default `./jaxdistill-ablation`); each finished stage leaves a marker holding its settings, a rerun skips it,
and an interrupted distillation resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Fixed before any result was seen.
FULL = dict(seq_len=128, holdout=256,
            head_steps=150, head_batch=32, head_lr=1e-3, feature_batches=50,
            adapt_steps=800, adapt_batch=16, adapt_lr=1e-4, adapt_warmup=50, adapt_eval_every=50,
            teacher_eval_batches=8)
QUICK = dict(seq_len=32, holdout=8,
             head_steps=4, head_batch=4, head_lr=1e-3, feature_batches=2,
             adapt_steps=4, adapt_batch=4, adapt_lr=1e-4, adapt_warmup=1, adapt_eval_every=2,
             teacher_eval_batches=1)


def data_config(s, corpus, cache):
    from jaxdistill.data import default_data_config
    c = default_data_config()
    c.corpus.source = "text"
    c.corpus.path = corpus
    c.seq_len = s["seq_len"]
    c.holdout_sequences = s["holdout"]
    c.cache_dir = os.path.join(cache, "data-cache")
    c.num_proc = 0
    c.progress = False
    return c


def stage_teacher(s, base_teacher, corpus, cache):
    """The adapted teacher's directory, and both stages' results (cached by fit_mlm_head itself)."""
    from jaxdistill import mlm_head
    data_cfg = data_config(s, corpus, cache)
    head_dir, adapted_dir = os.path.join(cache, "teacher-head"), os.path.join(cache, "teacher-adapted")
    print(f"[teacher] head on frozen features: {s['head_steps']} steps", flush=True)
    head = mlm_head.fit_mlm_head(base_teacher, data_cfg, head_dir, mode="head", steps=s["head_steps"],
                                 batch_size=s["head_batch"], lr=s["head_lr"], warmup_steps=max(s["head_steps"] // 20, 1),
                                 feature_batches=s["feature_batches"], eval_batches=s["teacher_eval_batches"],
                                 overwrite=True, progress=False)
    print(f"[teacher] head: held-out accuracy {head['mlm_accuracy_before']:.4f} -> {head['mlm_accuracy_after']:.4f}",
          flush=True)
    print(f"[teacher] adapting the encoder: {s['adapt_steps']} steps", flush=True)
    adapted = mlm_head.fit_mlm_head(head_dir, data_cfg, adapted_dir, mode="encoder", steps=s["adapt_steps"],
                                    batch_size=s["adapt_batch"], lr=s["adapt_lr"], warmup_steps=s["adapt_warmup"],
                                    eval_every=s["adapt_eval_every"], eval_batches=s["teacher_eval_batches"],
                                    workdir=os.path.join(cache, "teacher-adapt-work"), overwrite=True,
                                    progress=False)
    print(f"[teacher] adapted: held-out accuracy {adapted['mlm_accuracy_before']:.4f} -> "
          f"{adapted['mlm_accuracy_after']:.4f} in {adapted['train_seconds']:.0f} s", flush=True)
    return adapted_dir, head, adapted


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default="jaxdistill-ablation")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--teacher", default=None, help="base teacher (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--corpus", default=None)
    p.add_argument("--task-file", default=None)
    p.add_argument("--stages", nargs="+", default=["teacher", "distill", "finetune", "report"])
    args = p.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = QUICK if args.quick else FULL
    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    if args.corpus is None or args.task_file is None:
        from jaxdistill.demo import prepare_data
        corpus, task_csv = prepare_data(os.path.join(cache, "data"))
    corpus, task_csv = args.corpus or corpus, args.task_file or task_csv
    from jaxdistill.configs.common import offline_teacher_path
    base_teacher = args.teacher or offline_teacher_path()
    t0 = time.time()
    teacher, head, adapted = stage_teacher(s, base_teacher, corpus, cache)
    print(f"[done] {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
