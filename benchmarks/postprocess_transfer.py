"""Does the post-processing estimate hold on unseen question groups? (issue 28)

    python benchmarks/postprocess_transfer.py            # the shared real rows, about 2 minutes on 2 CPU cores

On the real rows beside the project (../shared/data/google-quest-challenge/train.csv: 4,867 rows of 2,867
questions) split into the project's 5 question-grouped folds (folds.assign, seed 42). For each of 5 rotations:
a model fitted on three folds predicts the other two, the "validated" fold v and the "unseen" fold u (question
groups no step has seen). Post-processing is fitted on fold v's predictions exactly as `validate` does with one
finished fold (split_for_nesting, then fit), and its kept transforms are applied to fold u as a whole and to
476-row subsets of it (the competition's test size). Per method: the gain the report estimated (summed over
the columns that kept it, / 30) against the gain measured on u.

Two estimates in the same run, the ratio printed: the old one (eval_rows = 0: three question-grouped sub-folds of
~325 rows, each scored after the transform chosen on the other two) and the one the project uses now
(postprocess.eval_rows = 476: random question-grouped held sets of 476 rows, each scored after the transform
chosen on the rest, 20 draws). The model is TF-IDF + ridge (evaluate/baseline.py's features): minutes on a CPU, so
anyone can re-run it; its ties differ from a transformer's, so the table states the model it used.

With --predictions, a transformer's (or any model's) out-of-fold predictions take the ridge's place: a CSV of
qa_id and the 30 targets, each row predicted by a model that never saw it, such as a run's oof.csv trained on
these 5 folds (`python run.py train` with data.dir on the shared rows). Only the rotations whose two folds it
covers are run; the results go to postprocess-transfer-<file stem>.json and .md.

    python benchmarks/postprocess_transfer.py --predictions output/runs/minilm-s42/oof.csv --describe "MiniLM, ..."

Writes benchmarks/results/postprocess-transfer.json and .md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core import columns  # noqa: E402
from pipeline.data import folds as folds_lib, tables  # noqa: E402
from pipeline.evaluate import baseline, postprocess  # noqa: E402

import record  # noqa: E402  (benchmarks/record.py: date, device, command; results written whole)

DATA = ROOT.parent / "shared" / "data" / "google-quest-challenge" / "train.csv"
METHODS = ("snap", "round", "clip")
TEST_ROWS = 476  # the competition's test.csv
TOLERANCE = 0.004  # |estimated - measured| per method, mean over the rotations (see the README of benchmarks/)


def ridge_predictions(train, y, fold, fit_folds, predict_rows):
    from sklearn.linear_model import Ridge

    fit_rows = np.flatnonzero(np.isin(fold, fit_folds))
    x = baseline._features(train, fit_rows)
    return np.clip(Ridge(alpha=baseline.ALPHA).fit(x[fit_rows], y[fit_rows]).predict(x[predict_rows]), 0, 1)


def method_gains(report: dict, gain_of) -> dict:
    """{method: sum over the columns that kept it of gain_of(column, report entry) / 30}."""
    out = {m: 0.0 for m in METHODS}
    for j, col in enumerate(columns.TARGETS):
        r = report[col]
        if r["applied"]:
            out[r["method"]] += gain_of(j, r) / len(columns.TARGETS)
    return out


def measured(y_u, p_u, report: dict, size: int) -> dict:
    """Gain on the unseen rows of each kept transform, on the whole fold (size 0) or 476-row subsets of it."""
    def gain(j, r):
        subsets = [np.arange(len(y_u))] if not size else [
            np.random.default_rng(i).choice(len(y_u), size, replace=False) for i in range(postprocess.DRAWS)]
        return float(np.mean([postprocess.score_column(y_u[s, j], postprocess.apply_one(p_u[s, j], r["method"],
                                                                                          r["params"]))
                              - postprocess.score_column(y_u[s, j], p_u[s, j]) for s in subsets]))
    return method_gains(report, gain)


def file_predictions(path: Path, train):
    """Predictions of each train row from an out-of-fold CSV (qa_id + targets); NaN rows where it has none."""
    import pandas as pd

    from pipeline.data import metrics

    frame = pd.read_csv(path)
    known = train[columns.ID].isin(frame[columns.ID])
    out = np.full((len(train), len(columns.TARGETS)), np.nan)
    out[known.to_numpy()] = metrics.lookup(frame, train.loc[known, columns.ID])
    return lambda fit_folds, rows: out[rows]


def rotation(train, y, fold, groups, v: int, u: int, predict=None) -> dict:
    rest = [k for k in range(5) if k not in (v, u)]
    rows_v, rows_u = np.flatnonzero(fold == v), np.flatnonzero(fold == u)
    predict = predict or (lambda fit_folds, rows: ridge_predictions(train, y, fold, fit_folds, rows))
    pred = predict(rest, np.concatenate([rows_v, rows_u]))
    p_v, p_u = pred[:len(rows_v)], pred[len(rows_v):]
    out = {"validated_fold": v, "unseen_fold": u, "rows_validated": len(rows_v), "rows_unseen": len(rows_u)}
    sub, _ = postprocess.split_for_nesting(fold[rows_v], groups[rows_v])
    for name, eval_rows in (("old", 0), ("now", TEST_ROWS)):
        report = postprocess.fit(y[rows_v], p_v, sub, columns.TARGETS, y[rows_v], METHODS, eval_rows=eval_rows,
                                 groups=groups[rows_v])
        out[name] = {
                     "estimated": method_gains(report, lambda j, r: r["gain"]),
                     "measured_unseen": measured(y[rows_u], p_u, report, 0),
                     "measured_476": measured(y[rows_u], p_u, report, TEST_ROWS),
                     "kept": {m: sum(r["applied"] and r["method"] == m for r in report.values()) for m in METHODS},
                     "honest_total": float(np.mean([r["after_honest"] - r["before"] for r in report.values()]))}
    return out


def summarize(rotations: list[dict]) -> dict:
    out = {}
    for name in ("old", "now"):
        out[name] = {}
        for m in METHODS:
            est = np.array([r[name]["estimated"][m] for r in rotations])
            meas = np.array([r[name]["measured_unseen"][m] for r in rotations])
            meas476 = np.array([r[name]["measured_476"][m] for r in rotations])
            out[name][m] = {"estimated": float(est.mean()), "measured_unseen": float(meas.mean()),
                            "measured_476": float(meas476.mean()), "error": float((est - meas).mean()),
                            "measured_sd": float(meas.std(ddof=1)),
                            "columns_kept": float(np.mean([r[name]["kept"][m] for r in rotations]))}
        out[name]["total"] = {
            "estimated": float(np.mean([sum(r[name]["estimated"].values()) for r in rotations])),
            "honest": float(np.mean([r[name]["honest_total"] for r in rotations])),
            "measured_unseen": float(np.mean([sum(r[name]["measured_unseen"].values()) for r in rotations]))}
    return out


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"# Post-processing estimates against unseen question groups ({result['date']})", "",
             f"Device: {result['device']}. Model: {result['model']}. Rows: {result['rows']} shared real rows, "
             f"5 question-grouped folds (seed 42), {len(result['rotations'])} rotations (validated fold v, unseen "
             f"fold v+1). Gains are per method, summed over the columns that kept it, / 30; means over the "
             f"rotations. Tolerance: |estimated - measured| <= {TOLERANCE}.", "",
             "| estimate | method | columns kept | estimated gain | measured, unseen fold | measured, 476-row "
             "subsets | error | within tolerance |", "|---|---|---|---|---|---|---|---|"]
    for name, label in (("old", "old (3 sub-folds)"), ("now", "now (476-row held sets)")):
        for m in METHODS:
            r = s[name][m]
            lines.append(f"| {label} | {m} | {r['columns_kept']:.1f} | {r['estimated']:+.4f} | "
                         f"{r['measured_unseen']:+.4f} | {r['measured_476']:+.4f} | {r['error']:+.4f} | "
                         f"{'yes' if abs(r['error']) <= TOLERANCE else 'no'} |")
    lines += ["", "All methods together: the nested estimate of the kept transforms (selected because they gained, so "
              "optimistic), the keep-decision-nested (honest) estimate, and the gain measured on the unseen fold:", "",
              "| estimate | nested, kept columns | honest | measured, unseen fold |", "|---|---|---|---|"]
    for name, label in (("old", "old (3 sub-folds)"), ("now", "now (476-row held sets)")):
        t = s[name]["total"]
        lines.append(f"| {label} | {t['estimated']:+.4f} | {t['honest']:+.4f} | {t['measured_unseen']:+.4f} |")
    ratio = [abs(s["now"][m]["error"]) / max(abs(s["old"][m]["error"]), 1e-9) for m in METHODS]
    lines += ["", "Error of the estimate now / before, per method: " +
              ", ".join(f"{m} {r:.2f}" for m, r in zip(METHODS, ratio)), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA), help="a train.csv of real QUEST rows")
    parser.add_argument("--predictions", help="out-of-fold predictions (qa_id + 30 targets) in place of TF-IDF + ridge")
    parser.add_argument("--describe", help="what made --predictions (backbone, inputs, epochs, its OOF), for the table")
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"{args.data} not found: this check needs the shared real rows", file=sys.stderr)
        return 2
    start = time.perf_counter()
    train = tables.read_csv(Path(args.data), "train")
    y = tables.targets(train).astype(float)
    fold = folds_lib.assign(train, 5, 42, columns.BODY, stratify=False)
    groups = train[columns.BODY].to_numpy()
    predict, model, stem = None, "TF-IDF + ridge", "postprocess-transfer"
    if args.predictions:
        predict = file_predictions(Path(args.predictions), train)
        model = f"out-of-fold predictions of {args.describe}" if args.describe else \
            f"out-of-fold predictions from {args.predictions}"
        stem = f"postprocess-transfer-{Path(args.predictions).stem}"
    covered = {k for k in range(5) if predict is None or not np.isnan(predict(None, np.flatnonzero(fold == k))).any()}
    rotations = []
    for v in range(5):
        if {v, (v + 1) % 5} <= covered:
            rotations.append(rotation(train, y, fold, groups, v, (v + 1) % 5, predict))
            print(f"rotation {v}: done ({time.perf_counter() - start:.0f}s)", flush=True)
    if not rotations:
        print(f"{args.predictions} covers folds {sorted(covered)} of the 5 (seed 42): a rotation needs two adjacent "
              "ones (v and v+1)", file=sys.stderr)
        return 2
    result = {**record.stamp(__file__, argv, tensorflow=False), "model": model, "rows": len(train), "rotations": rotations,
              "summary": summarize(rotations), "seconds": time.perf_counter() - start, "tolerance": TOLERANCE}
    text = markdown(result)
    record.write(result, text, record.RESULTS / f"{stem}.json")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
