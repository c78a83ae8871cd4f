"""The `jaxdistill` command: distill, finetune, evaluate, export, fit-mlm-head, demo.

Every subcommand takes `--verbose` (alias `--debug`: full tracebacks and library logs). Configs are Python files (`--config path.py[:preset]`)
with dotted overrides (`--config.train.steps=100`); see `jaxdistill.config_loader`.

Exit codes (stable, for scripts) are carried by the exceptions themselves; `jaxdistill.errors` lists them:
0 done or preempted, 1 internal error, 2 usage/config, 3 data/model, 4 non-finite loss, 5 workdir in use by
another run, 75 retryable storage failure, 130 interrupted (Ctrl-C ends the process within moments at any
phase, see `jaxdistill.interrupts`). An error is one line on stderr, `jaxdistill: error: ...`, naming the file
and the fix; the process then ends at once, so no library prints after it (the traceback: `--verbose`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple
from jaxdistill import interrupts
from jaxdistill.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UsageError, exit_code_for


log = logging.getLogger("jaxdistill.cli")



class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage and exits 2; we raise so main() owns the output
        raise UsageError(f"{message} (see `{self.prog} --help`)")


_FORMATTER = argparse.RawDescriptionHelpFormatter


def _doc(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# ------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--verbose", "--debug", dest="verbose", action="store_true",
                        help="show full tracebacks on errors and the libraries' own log messages")

    parser = _Parser(prog="jaxdistill", formatter_class=_FORMATTER, parents=[common], description=_doc("""
        Task-agnostic distillation of BERT teachers in JAX/Flax (HomoDistil and the classic recipes).

        Configs are Python files returning an ml_collections ConfigDict (configs/*.py); pick a preset with
        `--config file.py:preset` and change any field with `--config.section.field=value`.
        """), epilog=_doc("""
        examples:
          jaxdistill demo                                   # the whole pipeline offline on a CPU
          jaxdistill distill --config configs/homodistil.py:smoke --workdir /tmp/smoke
          jaxdistill distill --config configs/homodistil.py:tiny --workdir runs/tiny --config.train.steps=1000
          jaxdistill export --workdir runs/tiny --out runs/tiny/student
          jaxdistill finetune --config configs/finetune.py:glue_sst2 --config.model=runs/tiny/student \\
              --workdir runs/tiny/sst2

        exit codes: 0 ok (or preempted and saved), 1 internal error, 2 usage/config error,
        3 data/model error, 4 non-finite loss or exploded parameters, 5 workdir in use by another run,
        75 retryable storage failure (disk full, permission denied), 130 interrupted (Ctrl-C).
        """))
    from jaxdistill import __version__
    parser.add_argument("--version", action="version", version=f"jaxdistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, help_text, description, epilog):
        return sub.add_parser(name, help=help_text, parents=[common], formatter_class=_FORMATTER,
                              description=_doc(description), epilog=_doc(epilog))

    p = add("distill", "distil a teacher into a student (resumes in WORKDIR)", """
        Runs (or resumes) the distillation described by a config in WORKDIR: checkpoints, metrics.jsonl,
        TensorBoard events, config.json, summary.json, and the exported (compacted) student in
        WORKDIR/export. Rerunning the same command resumes from the newest checkpoint.
        """, """
        example:
          jaxdistill distill --config configs/homodistil.py:smoke --workdir /tmp/smoke \\
              --config.train.steps=10 --config.pruning.hidden=256
        """)
    p.add_argument("--config", required=True, metavar="FILE.py[:PRESET]", help="experiment config and preset")
    p.add_argument("--workdir", required=True, help="run directory (created; resumed when it holds a run)")
    p.add_argument("--dry-run", action="store_true", help="load and validate the config, print it, and exit")
    p.add_argument("--restart-from-scratch", action="store_true",
                   help="when every checkpoint in WORKDIR is damaged, move them to checkpoints.damaged and start "
                        "over from step 0 (without it such a run is refused)")

    p = add("prepare-data", "tokenize and pack a distillation config's corpus into its cache, and exit", """
        Prepares the packed corpus of a distillation config (data.cache_dir), as `distill` would before
        training, and nothing else: run it as a CPU job ahead of the TPU job. With several processes
        (launch/local_multihost.sh, a pod) each process packs its share of the shards of one shared cache.
        """, """
        example:
          jaxdistill prepare-data --config homodistil:smoke --config.data.cache_dir=/data/cache
        """)
    p.add_argument("--config", required=True, metavar="FILE.py[:PRESET]", help="experiment config and preset")

    p = add("export", "export the student of a distill WORKDIR as a model directory", """
        Restores the newest checkpoint of a distillation run (or --step), compacts the pruned student and
        writes it to OUT as a standard Hugging Face BERT directory (AutoModel, AutoModelForMaskedLM and
        pipeline("fill-mask") load it with the same outputs; non-standard head widths are zero-padded and the
        overhead reported), with the teacher's tokenizer files and a model card (README.md). The student of a
        task distillation (data.kind="task") is written as that run writes it: a BERT as a
        BertForSequenceClassification directory with the teacher's label names, a BiLSTM in jaxdistill's own
        BiLSTM format; `jaxdistill evaluate --model OUT` scores either.
        """, """
        examples:
          jaxdistill export --workdir /tmp/smoke --out /tmp/smoke-student --step 6
          jaxdistill export --workdir runs/tiny --out runs/tiny/student --push-to-hub me/homobert-tiny
        """)
    p.add_argument("--workdir", required=True, help="the --workdir of a `jaxdistill distill` run")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.add_argument("--own-format", action="store_true",
                   help="write non-standard head widths unpadded in jaxdistill's own format (jaxdistill loads "
                        "it; transformers does not)")
    p.add_argument("--push-to-hub", metavar="REPO", default=None,
                   help="also upload OUT to this Hugging Face hub repository (needs network and `hf auth login`)")

    p = add("finetune", "fine-tune a model on a classification task and evaluate it", """
        Fine-tunes config.model on config.task in WORKDIR and evaluates it on the validation split; writes
        metrics.jsonl, summary.json and (with save_model) the fine-tuned model to WORKDIR/model.
        """, """
        example:
          jaxdistill finetune --config configs/finetune.py:pang_lee \\
              --config.model=jaxdistill-demo/student --workdir runs/pang-lee
        """)
    p.add_argument("--config", required=True, metavar="FILE.py[:PRESET]", help="fine-tuning config and preset")
    p.add_argument("--workdir", required=True, help="output directory")

    p = add("evaluate", "score a fine-tuned model on a task's validation split", """
        Scores a model that has a classification head (the WORKDIR/model of `jaxdistill finetune`) on the
        validation split of a task: either the task of a fine-tuning config (--config) or a local file
        (--task-file). Prints the metrics as JSON and writes them to --out when given.
        """, """
        examples:
          jaxdistill evaluate --model runs/pang-lee/model --config configs/finetune.py:pang_lee
          jaxdistill evaluate --model runs/pang-lee/model --task-file sentences.csv --validation-fraction 0.2
        """)
    p.add_argument("--model", required=True, help="model directory with a classification head")
    p.add_argument("--config", metavar="FILE.py[:PRESET]", help="take the task from this fine-tuning config")
    p.add_argument("--task-file", help="a local CSV/TSV/JSONL task file instead of --config")
    p.add_argument("--text-fields", default="sentence", help="comma-separated text columns (default: sentence)")
    p.add_argument("--label-field", default="label", help="label column (default: label)")
    p.add_argument("--validation-fraction", type=float, default=None,
                   help="hold out this fraction of --task-file as validation (as when fine-tuning)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per example (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per batch (default: the config's)")
    p.add_argument("--out", help="also write the metrics JSON to this file")

    p = add("fit-mlm-head", "give a teacher that has none a trained MLM head (head only, or adapt the encoder)", """
        Some BERT checkpoints (e.g. sentence-transformers models) ship without their MLM head. --mode head
        fits a fresh head on a corpus with the encoder frozen (features cached, so epochs are cheap);
        --mode encoder continues MLM training of the whole model with its head (teacher adaptation:
        checkpointed in --workdir and resumed by rerunning the same command). Writes teacher + head to OUT,
        ready to be a distillation teacher (--config.teacher.path=OUT); rerunning a finished command
        reuses OUT.
        """, """
        examples:
          jaxdistill fit-mlm-head --teacher /path/to/all-MiniLM-L6-v2 --out teachers/minilm-head --steps 150
          jaxdistill fit-mlm-head --mode encoder --teacher teachers/minilm-head --out teachers/minilm-mlm \\
              --workdir runs/adapt --steps 1500 --batch-size 16 --lr 1e-4 --eval-every 100
        """)
    p.add_argument("--teacher", required=True, help="BERT directory (or hub id when online)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--corpus", default=None,
                   help="a .txt file or folder (default: the built-in python_docs corpus)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="packed-corpus cache (default: ~/.cache/jaxdistill/data)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.add_argument("--mode", choices=("head", "encoder"), default="head",
                   help="head: frozen encoder (default); encoder: adapt the whole model")
    p.add_argument("--eval-every", type=int, default=None, help="held-out MLM loss/accuracy every N steps")
    p.add_argument("--eval-batches", type=int, default=4, help="held-out batches per evaluation")
    p.add_argument("--feature-batches", type=int, default=None,
                   help="head mode: batches whose encoder features are cached (default min(steps, 256))")
    p.add_argument("--workdir", default=None, help="encoder mode: checkpoints and metrics.jsonl (resumable)")
    p.add_argument("--checkpoint-every", type=int, default=200)

    p = add("demo", "run the whole pipeline offline on a CPU (data, distill, fine-tune, compare)", """
        Fetches the offline demo data, fits the teacher's MLM head, distils all-MiniLM-L6-v2 with HomoDistil
        to half its width, fine-tunes teacher and student on movie-review sentences and writes results.md
        and plots to WORKDIR. A second run reuses every finished stage.
        """, """
        example:
          jaxdistill demo --workdir ./jaxdistill-demo --quick
        """)
    p.add_argument("--workdir", default="./jaxdistill-demo", help="output folder (default: ./jaxdistill-demo)")
    p.add_argument("--quick", action="store_true", help="a few-minute version with fewer steps")
    return parser


def split_overrides(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Separates `--config.a.b=v` / `--config.a.b v` overrides from the other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" in arg:
                overrides.append(arg)
            elif i + 1 < len(argv):
                overrides.append(f"{arg}={argv[i + 1]}")
                i += 1
            else:
                raise UsageError(f"{arg} needs a value: {arg}=VALUE")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


# --------------------------------------------------------------------------------------------- commands
def _is_main_process() -> bool:
    import jax
    try:
        return jax.process_index() == 0
    except Exception:
        return True


def _write_json(path: str, data: Dict[str, Any]) -> None:
    from jaxdistill import storage
    storage.write_json(path, data, indent=2, sort_keys=True, default=str)


def _fmt_params(n) -> str:
    return f"{n / 1e6:.2f}M" if isinstance(n, (int, float)) else str(n)


def cmd_distill(args, overrides) -> int:
    from jaxdistill import config_loader

    config = config_loader.load_config(args.config, overrides)
    if args.dry_run:
        from jaxdistill.experiment import resolve
        experiment = resolve(config)
        print(config.to_json_best_effort(indent=2, sort_keys=True))
        print(f"config OK: {experiment.describe()}")
        return EXIT_OK
    from jaxdistill import train
    summary = train.train_and_evaluate(config, args.workdir, restart_from_scratch=args.restart_from_scratch)
    if not _is_main_process():
        return EXIT_OK
    from jaxdistill import storage
    workdir = summary.get("workdir", storage.absolute(args.workdir))
    if summary.get("status") != "already_complete":  # keep the finished run's own summary
        _write_json(storage.join(workdir, "summary.json"), summary)
    status, step = summary.get("status"), summary.get("step")
    lines = [f"status: {status}", f"steps: {step}/{config.train.steps}", f"workdir: {workdir}"]
    metrics = summary.get("metrics") or {}
    if "loss" in metrics:
        lines.append(f"final loss: {metrics['loss']:.4f}")
    if summary.get("widths"):
        w = summary["widths"]
        lines.append(f"widths: hidden {w.get('hidden')}, ffn {sorted(set(w.get('ffn', [])))}, "
                     f"heads {sorted(set(w.get('heads', [])))}, attention {sorted(set(w.get('head_dims', [])))}")
    if summary.get("params"):
        p = summary["params"]
        lines.append(f"params: {_fmt_params(p.get('compact_total', p.get('total')))} "
                     f"(teacher {_fmt_params(p.get('full_total'))})")
    if summary.get("export_dir"):
        fmt = f" ({summary['export_format']} format)" if summary.get("export_format") else ""
        lines.append(f"export: {summary['export_dir']}{fmt}")
    if status == "preempted":
        lines.append("preempted: a checkpoint was saved; rerun the same command to resume")
    elif status == "already_complete":
        lines.append("this workdir already holds the finished run; nothing was done")
    print("\n".join(lines), flush=True)
    return EXIT_OK


def cmd_prepare_data(args, overrides) -> int:
    from jaxdistill import config_loader, sharding
    from jaxdistill.experiment import resolve
    from jaxdistill.train import prepare_data

    config = config_loader.load_config(args.config, overrides)
    sharding.maybe_initialize_distributed(config.get("multihost"))
    data = prepare_data(resolve(config))
    if _is_main_process():
        m = data.prepared.manifest
        print(f"prepared: {m['num_documents']} documents, {m['num_tokens']} tokens, {m['num_sequences']} sequences "
              f"of {m['seq_len']} in {m['num_shards']} shard(s): {data.prepared.path}", flush=True)
    return EXIT_OK


def cmd_export(args, overrides) -> int:
    if overrides:
        raise UsageError("export takes no --config.* overrides")
    from jaxdistill import storage, train
    if not storage.isdir(args.workdir):
        what = "is a file" if storage.exists(args.workdir) else "does not exist"
        raise FileNotFoundError(f"workdir {args.workdir!r} {what}; pass the --workdir of a "
                                "`jaxdistill distill` run")
    if args.push_to_hub:
        from jaxdistill.models import hub
        hub.check_can_push(args.push_to_hub)  # fail before the work when offline
    result = train.export_from_workdir(args.workdir, args.out, step=args.step, overwrite=args.overwrite,
                                       own_format=args.own_format)
    padding = (f", of which {_fmt_params(result['padding_params'])} zero padding that makes it a standard BERT"
               if result.get("padding_params") else "")
    print(f"exported step {result['step']} to {result['out_dir']} ({result['format']} format, "
          f"{_fmt_params(result.get('params'))} parameters{padding})", flush=True)
    if args.push_to_hub:
        print(f"pushed to {hub.push_to_hub(args.out, args.push_to_hub)}", flush=True)
    return EXIT_OK


def cmd_finetune(args, overrides) -> int:
    from jaxdistill import config_loader, finetune

    config = config_loader.load_config(args.config, overrides)
    finetune.validate_config(config)
    summary = finetune.finetune_and_evaluate(config, args.workdir)
    if not _is_main_process():
        return EXIT_OK
    from jaxdistill import storage
    _write_json(storage.join(storage.absolute(args.workdir), "summary.json"), summary)
    metrics = summary.get("metrics", {})
    print(f"task: {summary.get('task')}  steps: {summary.get('steps')}  validation: "
          + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())), flush=True)
    if summary.get("model_dir"):
        print(f"model: {summary['model_dir']}", flush=True)
    return EXIT_OK


def cmd_evaluate(args, overrides) -> int:
    from jaxdistill import config_loader, finetune

    if bool(args.config) == bool(args.task_file):
        raise UsageError("evaluate needs exactly one of --config FILE.py[:PRESET] or --task-file FILE")
    if args.config:
        config = config_loader.load_config(args.config, overrides)
        task_cfg = config.task
        max_length = args.max_length or int(config.max_length)
        batch_size = args.batch_size or int(config.get("eval_batch_size", 128))
    else:
        if overrides:
            raise UsageError("--config.* overrides need --config; with --task-file use the flags")
        from jaxdistill.data import default_task_config
        task_cfg = default_task_config()
        ext = os.path.splitext(args.task_file)[1].lower().lstrip(".")
        if ext not in ("csv", "tsv", "jsonl"):
            raise UsageError(f"--task-file {args.task_file!r}: expected a .csv, .tsv or .jsonl file")
        task_cfg.name = ext
        task_cfg.train_file = args.task_file
        task_cfg.text_fields = tuple(f.strip() for f in args.text_fields.split(",") if f.strip())
        task_cfg.label_field = args.label_field
        if args.validation_fraction is not None:
            task_cfg.validation_fraction = float(args.validation_fraction)
        max_length, batch_size = args.max_length or 128, args.batch_size or 128
    if max_length <= 0 or batch_size <= 0:
        raise UsageError("--max-length and --batch-size must be positive")
    if args.out:
        from jaxdistill import storage
        storage.check_writable(storage.dirname(args.out), "the folder of --out")
    result = finetune.evaluate(args.model, task_cfg, max_length=max_length, batch_size=batch_size)
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    if args.out:
        _write_json(args.out, result)
    return EXIT_OK


def cmd_fit_mlm_head(args, overrides) -> int:
    if overrides:
        raise UsageError("fit-mlm-head takes no --config.* overrides; use its flags")
    from jaxdistill import mlm_head
    from jaxdistill.data import default_data_config
    for name in ("seq_len", "steps", "batch_size"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    data_cfg = default_data_config()
    if args.corpus:
        data_cfg.corpus.source = "text"
        data_cfg.corpus.path = args.corpus
    else:
        data_cfg.corpus.source = "builtin"
        data_cfg.corpus.name = "python_docs"
    data_cfg.seq_len = args.seq_len
    if args.cache_dir:
        data_cfg.cache_dir = args.cache_dir
    result = mlm_head.fit_mlm_head(args.teacher, data_cfg, args.out, steps=args.steps, batch_size=args.batch_size,
                                   lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
                                   overwrite=args.overwrite, mode=args.mode, eval_every=args.eval_every,
                                   eval_batches=args.eval_batches, feature_batches=args.feature_batches,
                                   workdir=args.workdir, checkpoint_every=args.checkpoint_every)
    print(json.dumps(result, indent=2, sort_keys=True, default=str), flush=True)
    return EXIT_OK


def cmd_demo(args, overrides) -> int:
    if overrides:
        raise UsageError("demo takes no --config.* overrides")
    from jaxdistill import demo
    return int(demo.run_demo(args.workdir, quick=args.quick))


COMMANDS = {"distill": cmd_distill, "prepare-data": cmd_prepare_data, "export": cmd_export,
            "finetune": cmd_finetune, "evaluate": cmd_evaluate, "fit-mlm-head": cmd_fit_mlm_head, "demo": cmd_demo}


# ------------------------------------------------------------------------------------------------- main
def _error_line(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; a distill run resumes from its last checkpoint when rerun"
    msg = str(error).strip() or type(error).__name__
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in msg:
        msg = f"{msg}: {error.filename}"
    if exit_code_for(error) == EXIT_INTERNAL:
        msg = f"unexpected {type(error).__name__}: {msg} (rerun with --verbose for the traceback)"
    return " ".join(msg.split("\n")[0:1]) if exit_code_for(error) == EXIT_INTERNAL else msg


# Libraries whose logs repeat (or bury) what jaxdistill reports in one line: orbax logs every failed save with
# its traceback through absl, several times, asyncio reports the futures orbax leaves behind, and gcsfs logs
# every request that ran out of retries with its traceback.
QUIET_LIBRARIES = ("absl", "orbax", "asyncio", "tensorstore", "gcsfs", "google")


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
                            datefmt="%H:%M:%S")
    else:
        root.setLevel(logging.INFO)
    for noisy in ("absl", "jax._src", "orbax", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        for noisy in QUIET_LIBRARIES:
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


def end_process(code: int) -> None:
    """Ends the process with `code` at once, after flushing: library threads (an orbax save that failed,
    asyncio futures) cannot print anything after the error line, and none can hang the exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line `argv`; returns the exit code.

    Called without `argv` (the `jaxdistill` command, `python -m jaxdistill`) it owns the process: Ctrl-C ends
    it within moments with 130 (`jaxdistill.interrupts`), and after an error line it ends at once
    (`end_process`). Called with `argv` (tests, notebooks) it only returns the code.
    """
    owns_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or "--debug" in argv
    if owns_process and not verbose:
        sys.unraisablehook = lambda unraisable: None  # "Exception ignored in ...": orbax's closed event loops
    with interrupts.exit_on_interrupt() if owns_process else contextlib.nullcontext():
        code = run_command(argv, verbose)
    if owns_process and code != EXIT_OK:
        end_process(code)
    return code


def run_command(argv: List[str], verbose: bool) -> int:
    """Parses `argv` and runs its command; an error becomes one line on stderr and its exit code."""
    try:
        rest, overrides = split_overrides(argv)
        parser = build_parser()
        try:
            args = parser.parse_args(rest)
        except SystemExit as e:  # --help / --version
            return int(e.code or 0)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        _setup_logging(verbose)
        return COMMANDS[args.command](args, overrides)
    except (Exception, KeyboardInterrupt) as e:
        if verbose:
            import traceback
            traceback.print_exc()
        print(f"jaxdistill: error: {_error_line(e)}", file=sys.stderr, flush=True)
        return exit_code_for(e)


if __name__ == "__main__":
    sys.exit(main())
