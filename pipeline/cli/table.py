"""Turn parsed command-line arguments into a config and call one stage."""
from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Callable

from pipeline.core import config as config_lib, settings
from pipeline.core.errors import PipelineError

USER_ERRORS = PipelineError  # anything else is a bug and keeps its traceback, but for the machine's answers below
# What the file system says of a path the user chose (missing, read-only, full, a folder for a file ...).
USER_OS_ERRORS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR,
                  errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTEMPTY, errno.EBUSY, errno.EXDEV}


def user_message(err: BaseException) -> str | None:
    """The one line a user gets for err, or None for a bug (which keeps its traceback)."""
    if isinstance(err, USER_ERRORS):
        return str(err)
    if isinstance(err, OSError) and err.errno in USER_OS_ERRORS:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return f"{where}: {err.strerror}" if where else str(err)
    return None


def build_config(args) -> config_lib.Config:
    overrides = list(args.overrides)
    if args.folds:
        if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", args.folds):
            raise config_lib.ConfigError(f"--folds {args.folds}: expected comma-separated fold numbers, e.g. 0,2")
        overrides.append(f"train.folds=[{args.folds}]")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.n_folds is not None:
        overrides.append(f"folds.n_folds={args.n_folds}")
    path = args.config
    if path is None and args.stage == "demo":
        path = config_lib.ROOT / "configs" / "demo.toml"
    return config_lib.load(path, overrides)


@dataclass(frozen=True)
class Stage:
    """One row of the stage table: it drives the command line, `--help` and the README's stage table."""
    name: str
    help: str
    call: Callable  # (stages module, config, parsed args) -> list of paths written
    options: tuple = ()  # (flag, [alias,] argparse keyword arguments) of the options only this stage takes
    sections: tuple = ()  # the config sections it reads: `run.py <stage> --help` lists their fields
    print_paths: bool = True  # run.py lists the paths written (the demo ends on its summary instead)

    def settings_help(self) -> str:
        """Every field of the sections this stage reads: default, what it is for, the allowed values."""
        if not self.sections:
            return ""
        cfg = config_lib.Config()
        lines = ["settings this stage reads (--set section.key=value; defaults shown):"]
        for name in self.sections:
            lines += settings.describe(name, getattr(cfg, name))
        return "\n".join(lines)


RUNS = "--runs", {"nargs": "+", "default": []}
STAGES = (
    Stage("download", "fetch competition files (and kaggle.model weights) with the kaggle API; the only online stage",
          lambda s, cfg, a: s.download(cfg, force=a.force),
          sections=("data", "kaggle")),
    Stage("folds", "write folds.csv once: GroupKFold over question groups, seeded; later stages read it",
          lambda s, cfg, a: s.folds(cfg, force=a.force),
          sections=("data", "folds")),
    Stage("encode", "tokenise train/test: [CLS] title [SEP] body [SEP] answer [SEP] (encode.mode=triple), "
                    "question/answer pairs (pair) or two sequences (encode.inputs=dual), per-field budgets, "
                    "head+tail truncation; cached",
          lambda s, cfg, a: s.encode(cfg),
          sections=("data", "encode", "model")),
    Stage("pretrain", "masked-LM pre-training of model.path on the competition's text (+ pretrain.extra_csv): a model "
                      "directory for model.path; text only, never labels; resumable",
          lambda s, cfg, a: s.pretrain(cfg),
          sections=("data", "model", "pretrain")),
    Stage("train", "K-fold fine-tuning (train.kind = ridge: a ridge per target on frozen backbone features); "
                   "resumable: finished folds are skipped; --folds trains a subset",
          lambda s, cfg, a: s.train(cfg),
          sections=("data", "folds", "encode", "model", "train")),
    Stage("validate", "OOF report for the run: per target/fold scores, truncation, TF-IDF baseline, plots, nested "
                      "post-processing (--runs: compare)",
          lambda s, cfg, a: s.validate(cfg, compare=a.runs),
          ((RUNS[0], {**RUNS[1], "help": "run names/dirs to compare in one table"}),),
          sections=("postprocess",)),
    Stage("pseudo", "leak-free pseudo-labels: teacher fold k labels --input rows for student fold k only "
                    "(train with --set train.pseudo=<name>)",
          lambda s, cfg, a: s.pseudo(cfg, teachers=a.runs, input_csv=a.input),
          ((RUNS[0], {**RUNS[1], "help": "teacher run names/dirs (pseudo.teachers), trained on this folds file"}),
           ("--input", {"help": "CSV of unlabeled rows: qa_id, question_title, question_body, answer (+ category, "
                                "host); default: pseudo.input, else data.test_file"})),
          sections=("pseudo",)),
    Stage("predict", "average the run's fold models over the test set (or --input CSV)",
          lambda s, cfg, a: s.predict(cfg, input_csv=a.input),
          (("--input", {"help": "CSV to predict: qa_id, question_title, question_body, answer (other columns "
                                "ignored; default: data.test_file)"}),),
          sections=("data",)),
    Stage("ensemble", "blend runs (mean/rank/optimize), fit post-processing, write the submission CSV",
          lambda s, cfg, a: s.ensemble(cfg, runs=a.runs),
          ((RUNS[0], {**RUNS[1], "help": "run names/dirs to blend (ensemble.runs)"}),),
          sections=("ensemble", "postprocess")),
    Stage("all", "folds -> encode -> train -> validate -> predict -> ensemble; current outputs are skipped",
          lambda s, cfg, a: s.run_all(cfg),
          sections=("data", "folds", "encode", "model", "train", "postprocess", "ensemble")),
    Stage("demo", "the whole chain offline on generated QUEST-shaped data with a tiny backbone (minutes on CPU)",
          lambda s, cfg, a: s.demo(cfg), print_paths=False),
    Stage("package", "write a Kaggle dataset folder: code, fold weights, tokenizer, blend, wheels (--upload); "
                     "--code-only: code, split and wheels for training kernels",
          lambda s, cfg, a: s.package(cfg, runs=a.runs, out=a.out, upload=a.upload, code_only=a.code_only),
          ((RUNS[0], {**RUNS[1], "help": "run names/dirs to bundle (default: this run)"}),
           ("--out", {"help": "bundle folder (default: <output.dir>/kaggle-bundle, --code-only: kaggle-code)"}),
           ("--upload", {"action": "store_true", "help": "create/version the Kaggle dataset"}),
           ("--code-only", {"action": "store_true", "help": "no runs: the code, folds.csv and the wheels a training "
                                                           "kernel needs (kaggle.code_dataset)"})),
          sections=("kaggle",)),
    Stage("kernel", "write kernel-metadata.json beside the inference notebook (--push: wait for the dataset, publish); "
                    "--train: a training kernel for --folds",
          lambda s, cfg, a: s.kernel(cfg, out=a.out, push=a.push, wait=a.wait, train=a.train),
          (("--push", {"action": "store_true", "help": "push the notebook as a Kaggle kernel"}),
           ("--train", {"action": "store_true", "help": "a training kernel (GPU, internet off) that trains --folds "
                                                        "of this config's run; `collect` brings them back"}),
           ("--out", {"help": "folder for the notebook + kernel-metadata.json"}),
           ("--wait", {"type": float, "default": 900,
                       "help": "seconds to wait for the bundle dataset to be ready before pushing (default 900)"})),
          sections=("kaggle",)),
    Stage("collect", "download training kernels' folds, check them against this run (settings, split, tokenizer, "
                     "weights) and merge them in",
          lambda s, cfg, a: s.collect(cfg, kernels=a.kernels, wait=a.wait),
          (("--kernels", "--kernel", {"nargs": "+", "default": [], "dest": "kernels",
                                      "help": "owner/slug of each training kernel (default: those pushed from here "
                                              "for this run)"}),
           ("--wait", {"type": float, "default": 0,
                       "help": "seconds to wait for each kernel to finish (polls its status; default 0: look once)"})),
          sections=("kaggle",)),
    Stage("submit", "submit a pushed kernel version's submission.csv to the competition (--version N)",
          lambda s, cfg, a: s.submit(cfg, version=a.version, message=a.message),
          (("--version", {"type": int, "required": True, "help": "kernel version (printed by kernel --push)"}),
           ("--message", {"default": "", "help": "submission description"})),
          sections=("kaggle",)),
)
BY_NAME = {s.name: s for s in STAGES}


def run_stage(args):
    from pipeline.cli import stages  # heavy imports (TensorFlow) only once a stage runs

    return BY_NAME[args.stage].call(stages, build_config(args), args)
