"""Turn parsed command-line arguments into a config and call one stage."""
from __future__ import annotations

import re

from . import config as config_lib
from . import data, folds, kaggle, modeldir, tokenizer, wheels

USER_ERRORS = (config_lib.ConfigError, data.DataError, folds.FoldsError, kaggle.KaggleUnavailable,
               kaggle.KaggleApiError, wheels.WheelError, modeldir.ModelDirError, tokenizer.TokenizerError,
               FileNotFoundError, ValueError)


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


def run_stage(args):
    from . import stages  # heavy imports (TensorFlow) only once a stage runs

    cfg = build_config(args)
    handlers = {
        "download": lambda: stages.download(cfg, force=args.force),
        "folds": lambda: stages.folds(cfg, force=args.force),
        "encode": lambda: stages.encode(cfg),
        "train": lambda: stages.train(cfg),
        "predict": lambda: stages.predict(cfg, input_csv=args.input),
        "validate": lambda: stages.validate(cfg, compare=args.runs),
        "ensemble": lambda: stages.ensemble(cfg, runs=args.runs),
        "all": lambda: stages.run_all(cfg),
        "demo": lambda: stages.demo(cfg),
        "package": lambda: stages.package(cfg, runs=args.runs, out=args.out, upload=args.upload),
        "kernel": lambda: stages.kernel(cfg, out=args.out, push=args.push, wait=args.wait),
        "submit": lambda: stages.submit(cfg, version=args.version, message=args.message),
    }
    return handlers[args.stage]()
