#!/usr/bin/env python
"""QUEST pipeline entry point: `python run.py <stage> [--config configs/X.toml] [--set section.key=value ...]`.

This file only parses the command line (from the stage table in pipeline/cli/table.py) and calls the stage.
"""
from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from pipeline.cli import table  # the stage table (light: no TensorFlow)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config (default: built-in defaults; demo: configs/demo.toml)")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable, e.g. --set train.epochs=2")
    common.add_argument("--folds", help="comma-separated folds to train/predict, e.g. 0,2 (train.folds)")
    common.add_argument("--seed", type=int, help="run seed (train.seed); folds use folds.seed")
    common.add_argument("--n-folds", type=int, help="number of folds (folds.n_folds)")
    common.add_argument("--force", action="store_true", help="download: fetch again; folds: overwrite an existing split")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="also TensorFlow's native start-up lines (oneDNN, CUDA probing), hidden by default")

    parser = argparse.ArgumentParser(prog="run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage", title="stages")
    for stage in table.STAGES:
        p = sub.add_parser(stage.name, parents=[common], help=stage.help, description=stage.help,
                           epilog=stage.settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
        for *flags, kwargs in stage.options:
            p.add_argument(*flags, **kwargs)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from pipeline.cli import terminal  # light: no TensorFlow

    if not args.verbose and argv is None:  # a process of its own (not a test calling main)
        terminal.quiet_native_logs()
    terminal.log_to_stderr(args.quiet)
    if args.stage != "download":  # every other stage runs as on a Kaggle kernel: no hub downloads
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from pipeline.cli import table  # noqa: E402  (imports after the offline switches are set)

    try:
        paths = table.run_stage(args)
    except Exception as err:
        message = table.user_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    for p in (paths or []) if table.BY_NAME[args.stage].print_paths else []:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
