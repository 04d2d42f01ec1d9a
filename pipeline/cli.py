"""Turn parsed command-line arguments into a config and call one stage."""
from __future__ import annotations

from . import config as config_lib
from . import data, folds, kaggle, modeldir, tokenizer

USER_ERRORS = (config_lib.ConfigError, data.DataError, folds.FoldsError, kaggle.KaggleUnavailable,
               modeldir.ModelDirError, tokenizer.TokenizerError, FileNotFoundError, ValueError)


def build_config(args) -> config_lib.Config:
    overrides = list(args.overrides)
    if args.folds:
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
    stage = args.stage
    if stage == "download":
        return stages.download(cfg, force=args.force)
    if stage == "folds":
        return stages.folds(cfg, force=args.force)
    if stage == "encode":
        return stages.encode(cfg)
    if stage == "train":
        return stages.train(cfg)
    if stage == "predict":
        return stages.predict(cfg, input_csv=args.input)
    if stage == "validate":
        return stages.validate(cfg, compare=args.runs)
    if stage == "ensemble":
        return stages.ensemble(cfg, runs=args.runs)
    if stage == "all":
        return stages.run_all(cfg)
    if stage == "demo":
        return stages.demo(cfg)
    if stage == "package":
        return stages.package(cfg, runs=args.runs, out=args.out, upload=args.upload)
    if stage == "kernel":
        return stages.kernel(cfg, out=args.out, push=args.push)
    raise ValueError(f"unknown stage {stage!r}")
