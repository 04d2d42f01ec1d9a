#!/usr/bin/env python
"""What predicting in a lower precision costs a trained run: each finished fold predicts its own held rows in
float32 and in the other precisions, and their out-of-fold Spearman, their largest difference and the rate are
compared on the same rows with the same weights.

    python benchmarks/precision_quality.py output/runs/minilm-s42               # float32 vs bfloat16, every fold
    python benchmarks/precision_quality.py RUN --precisions none float16 --folds 0 1
The train file is the run's own (data.dir of its config.toml), its folds those of its folds file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import record  # noqa: E402  (benchmarks/record.py)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory with finished folds")
    p.add_argument("--precisions", nargs="+", default=["none", "bfloat16"], choices=["none", "bfloat16", "float16"],
                   help="the first is the reference")
    p.add_argument("--folds", nargs="*", type=int, help="default: every finished fold")
    p.add_argument("--name", help="result file stem (default: precision-quality-<run name>)")
    return p.parse_args(argv)


def measure(run_dir: Path, precisions: list[str], folds: list[int] | None) -> dict:
    import numpy as np

    from pipeline.data import folds as folds_lib, metrics, tables
    from pipeline.run.predict import Predictor

    base = Predictor.of(run_dir)
    rcfg = base.rcfg
    train = tables.load(rcfg, "train")
    fold_of = folds_lib.read(rcfg, train)
    y = tables.targets(train)
    wanted = folds if folds else base.run.finished_folds()
    out = {"run": base.run.name, "trained_precision": {}, "folds": {}}
    for k in wanted:
        held = np.flatnonzero(fold_of == k)
        frame = base.rows(train.iloc[held])
        row = {"rows": len(held)}
        preds = {}
        for p in precisions:
            predictor = Predictor.of(run_dir, precision=p)
            predictor.encode(frame)  # encoded (and cached) before the clock starts
            start = time.perf_counter()
            (_, preds[p]), = predictor.fold_predictions(frame, [k])
            row[p] = {"spearman": metrics.spearman(y[held], preds[p]).mean,
                      "samples_per_s": len(held) / (time.perf_counter() - start)}
        ref = precisions[0]
        for p in precisions[1:]:
            row[p]["spearman_minus_reference"] = row[p]["spearman"] - row[ref]["spearman"]
            row[p]["max_abs_diff"] = float(np.abs(preds[p] - preds[ref]).max())
        out["folds"][str(k)] = row
    return out


def markdown(res: dict) -> str:
    ref, *others = res["precisions"]
    lines = [f"### {res['name']}", "", f"- {res['date']}, {res['device']}; run {res['run']}; each fold's own held rows",
             f"- command: `{res['command']}`", "",
             "| fold | rows | " + " | ".join(f"{p} Spearman" for p in res["precisions"]) + " | "
             + " | ".join(f"{p} - {ref} | {p} max abs diff" for p in others) + " | "
             + " | ".join(f"{p} samples/s" for p in res["precisions"]) + " |",
             "|" + "---|" * (2 + len(res["precisions"]) * 2 + 2 * len(others))]
    for k, row in res["folds"].items():
        lines.append(f"| {k} | {row['rows']} | " + " | ".join(f"{row[p]['spearman']:.4f}" for p in res["precisions"])
                     + " | " + " | ".join(f"{row[p]['spearman_minus_reference']:+.4f} | {row[p]['max_abs_diff']:.4f}"
                                          for p in others) + " | "
                     + " | ".join(f"{row[p]['samples_per_s']:.1f}" for p in res["precisions"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    stamp = record.stamp(__file__, argv)
    res = {**stamp, **measure(Path(args.run), args.precisions, args.folds), "precisions": args.precisions}
    res["name"] = args.name or f"precision-quality-{res['run']}"
    record.write(res, markdown(res), record.RESULTS / f"{res['name']}.json")
    print(markdown(res))


if __name__ == "__main__":
    main()
