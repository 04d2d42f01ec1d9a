"""Turn parsed command-line arguments into a config and call one stage."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from . import config as config_lib
from .errors import PipelineError

USER_ERRORS = PipelineError  # anything else is a bug and keeps its traceback


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
    options: tuple = ()  # (flags, argparse keyword arguments) of the options only this stage takes


RUNS = "--runs", {"nargs": "+", "default": []}
STAGES = (
    Stage("download", "fetch competition files (and kaggle.model weights) with the kaggle API; the only online stage",
          lambda s, cfg, a: s.download(cfg, force=a.force)),
    Stage("folds", "write folds.csv once: GroupKFold over question groups, seeded; later stages read it",
          lambda s, cfg, a: s.folds(cfg, force=a.force)),
    Stage("encode", "tokenise train/test: [CLS] title [SEP] body [SEP] answer [SEP] (encode.mode=triple), "
                    "question/answer pairs (pair) or two sequences (encode.inputs=dual), per-field budgets, "
                    "head+tail truncation; cached",
          lambda s, cfg, a: s.encode(cfg)),
    Stage("train", "K-fold fine-tuning; resumable: finished folds are skipped; --folds trains a subset",
          lambda s, cfg, a: s.train(cfg)),
    Stage("validate", "OOF report for the run: per target/fold scores, truncation, TF-IDF baseline, plots, nested "
                      "post-processing (--runs: compare)",
          lambda s, cfg, a: s.validate(cfg, compare=a.runs),
          ((RUNS[0], {**RUNS[1], "help": "run names/dirs to compare in one table"}),)),
    Stage("predict", "average the run's fold models over the test set (or --input CSV)",
          lambda s, cfg, a: s.predict(cfg, input_csv=a.input),
          (("--input", {"help": "CSV to predict: qa_id, question_title, question_body, answer (other columns "
                                "ignored; default: data.test_file)"}),)),
    Stage("ensemble", "blend runs (mean/rank/optimize), fit post-processing, write the submission CSV",
          lambda s, cfg, a: s.ensemble(cfg, runs=a.runs),
          ((RUNS[0], {**RUNS[1], "help": "run names/dirs to blend (ensemble.runs)"}),)),
    Stage("all", "folds -> encode -> train -> validate -> predict -> ensemble; current outputs are skipped",
          lambda s, cfg, a: s.run_all(cfg)),
    Stage("demo", "the whole chain offline on generated QUEST-shaped data with a tiny backbone (minutes on CPU)",
          lambda s, cfg, a: s.demo(cfg)),
    Stage("package", "write a Kaggle dataset folder: code, fold weights, tokenizer, blend, wheels (--upload)",
          lambda s, cfg, a: s.package(cfg, runs=a.runs, out=a.out, upload=a.upload),
          ((RUNS[0], {**RUNS[1], "help": "run names/dirs to bundle (default: this run)"}),
           ("--out", {"help": "bundle folder (default: <output.dir>/kaggle-bundle)"}),
           ("--upload", {"action": "store_true", "help": "create/version the Kaggle dataset"}))),
    Stage("kernel", "write kernel-metadata.json beside the inference notebook (--push: wait for the dataset, publish)",
          lambda s, cfg, a: s.kernel(cfg, out=a.out, push=a.push, wait=a.wait),
          (("--push", {"action": "store_true", "help": "push the notebook as a Kaggle kernel"}),
           ("--out", {"help": "folder for the notebook + kernel-metadata.json"}),
           ("--wait", {"type": float, "default": 900,
                       "help": "seconds to wait for the bundle dataset to be ready before pushing (default 900)"}))),
    Stage("submit", "submit a pushed kernel version's submission.csv to the competition (--version N)",
          lambda s, cfg, a: s.submit(cfg, version=a.version, message=a.message),
          (("--version", {"type": int, "required": True, "help": "kernel version (printed by kernel --push)"}),
           ("--message", {"default": "", "help": "submission description"}))),
)
BY_NAME = {s.name: s for s in STAGES}


def run_stage(args):
    from . import stages  # heavy imports (TensorFlow) only once a stage runs

    return BY_NAME[args.stage].call(stages, build_config(args), args)
