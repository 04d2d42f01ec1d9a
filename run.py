#!/usr/bin/env python
"""QUEST pipeline entry point: `python run.py <stage> [--config configs/X.toml] [--set section.key=value ...]`.

This file only parses the command line and calls stage functions in pipeline/stages.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

STAGES = {
    "download": "fetch competition files (and kaggle.model weights) with the kaggle API; the only online stage",
    "folds": "write output/folds.csv once: GroupKFold over question groups, seeded; later stages read it",
    "encode": "tokenise train/test: [CLS] title [SEP] body [SEP] answer [SEP] (encode.mode=triple) or "
              "question/answer pairs (pair), per-field budgets, head+tail truncation; cached in output/cache/",
    "train": "K-fold fine-tuning; resumable: finished folds are skipped; --folds trains a subset",
    "predict": "average the run's fold models over the test set (or --input CSV)",
    "validate": "OOF report for the run: per target/fold scores, plots, nested post-processing (--runs: compare)",
    "ensemble": "blend runs (mean/rank/optimize), fit post-processing, write the submission CSV",
    "all": "folds -> encode -> train -> validate -> predict -> ensemble; current outputs are skipped",
    "demo": "the whole chain offline on generated QUEST-shaped data with a tiny backbone (minutes on CPU)",
    "package": "write a Kaggle dataset folder with code, fold weights and tokenizer (--upload to publish)",
    "kernel": "write kernel-metadata.json for the inference notebook (--push: wait for the dataset, publish)",
    "submit": "submit a pushed kernel version's submission.csv to the competition (--version N)",
}


def parse_args(argv=None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config (default: built-in defaults; demo: configs/demo.toml)")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable, e.g. --set train.epochs=2")
    common.add_argument("--folds", help="comma-separated folds to train/predict, e.g. 0,2 (train.folds)")
    common.add_argument("--seed", type=int, help="run seed (train.seed); folds use folds.seed")
    common.add_argument("--n-folds", type=int, help="number of folds (folds.n_folds)")
    common.add_argument("--force", action="store_true", help="download: fetch again; folds: overwrite an existing split")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    parser = argparse.ArgumentParser(prog="run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage", title="stages")
    subs = {name: sub.add_parser(name, parents=[common], help=desc, description=desc) for name, desc in STAGES.items()}
    subs["predict"].add_argument("--input", help="CSV to predict: qa_id, question_title, question_body, answer (other columns ignored; default: data.test_file)")
    subs["validate"].add_argument("--runs", nargs="+", default=[], help="run names/dirs to compare in one table")
    subs["ensemble"].add_argument("--runs", nargs="+", default=[], help="run names/dirs to blend (ensemble.runs)")
    subs["package"].add_argument("--runs", nargs="+", default=[], help="run names/dirs to bundle (default: this run)")
    subs["package"].add_argument("--out", help="bundle folder (default: output/kaggle-bundle)")
    subs["package"].add_argument("--upload", action="store_true", help="create/version the Kaggle dataset")
    subs["kernel"].add_argument("--push", action="store_true", help="push the notebook as a Kaggle kernel")
    subs["kernel"].add_argument("--out", help="folder for the notebook + kernel-metadata.json")
    subs["kernel"].add_argument("--wait", type=float, default=900,
                                help="seconds to wait for the bundle dataset to be ready before pushing (default 900)")
    subs["submit"].add_argument("--version", type=int, required=True, help="kernel version (printed by kernel --push)")
    subs["submit"].add_argument("--message", default="", help="submission description")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("pipeline")  # its own handler: TensorFlow's absl handler joins the root logger
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    if args.stage != "download":  # every other stage runs as on a Kaggle kernel: no hub downloads
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from pipeline import cli  # noqa: E402  (imports after the offline switches are set)

    try:
        paths = cli.run_stage(args)
    except cli.USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in paths or []:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
