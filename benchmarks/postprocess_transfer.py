"""Does the post-processing estimate hold on unseen question groups, and does its printed uncertainty cover the
gain? (issues 28, 41)

    python benchmarks/postprocess_transfer.py                    # TF-IDF + ridge, about 5 minutes on 2 CPU cores
    python benchmarks/postprocess_transfer.py --compute-features configs/frozen-ridge.toml <model dir> F.npz
    python benchmarks/postprocess_transfer.py --features F.npz   # a ridge on frozen backbone features (qa_id, x)
    python benchmarks/postprocess_transfer.py --predictions output/runs/<run>   # a trained run (see below)

On the real rows beside the project (../shared/data/google-quest-challenge/train.csv: 4,867 rows of 2,867
questions), question-grouped, and for each keep margin (postprocess.keep_margin 0 and 1), two scenarios:

  one fold   the project's 5 folds (seed 42); for each rotation a model fitted on three folds predicts the other
             two, the "validated" fold v and the "unseen" fold u = v+1. Post-processing is fitted on fold v as
             `validate` does with one finished fold (sub-folds, 476-row held sets); its honest gain and printed
             uncertainty are compared with the gain its kept transforms give on 476-row subsets of fold u.
  five folds six question-grouped parts; each part in turn is the unseen one, the other five are a run's 5 folds:
             each fold's model (fitted on the other four) predicts its fold (the OOF) and the unseen part (averaged
             over the 5 models, as `predict` averages them over the test). Post-processing is fitted on the OOF as
             `ensemble` does, and its honest gain is compared with its kept transforms' gain on 476-row subsets of
             the unseen part.

No model ever saw the rows it is measured on: the validated fold and the unseen fold come from one model that
trained on neither (one fold), the unseen part from models that never saw it (five folds). Goal: five folds
within 0.005 of the measured gain; one fold's measured gain inside its printed uncertainty.

--predictions takes a run directory whose folds file merged two adjacent project folds into one held fold (the
run's model never saw either): `--write-folds DIR` writes such folds files, one per rotation, and prints the
command that trains each. Only the one-fold scenario runs on them (a run of 3,000 rows per rotation). A CSV of
5-fold out-of-fold predictions is refused: the model that predicted fold v trained on fold u.

Writes benchmarks/results/postprocess-transfer[-<name>].json and .md.
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
TEST_ROWS = 476  # the competition's test.csv
FIVE_FOLD_TOLERANCE = 0.005  # |honest estimate - measured gain| with five finished folds (issue 41's goal)
MARGINS = (0.0, 1.0)
METHODS = ("snap", "round", "clip")


def tfidf_ridge(train, y):
    """TF-IDF + ridge (evaluate/baseline.py's features, their vocabulary fitted on the model's own rows)."""
    from sklearn.linear_model import Ridge

    def predict(fit_rows, predict_rows):
        x = baseline._features(train, fit_rows)
        return np.clip(Ridge(alpha=baseline.ALPHA).fit(x[fit_rows], y[fit_rows]).predict(x[predict_rows]), 0, 1)
    return predict


def frozen_ridge(x, y, groups):
    """A ridge per target on frozen backbone features, its penalties chosen by question-grouped inner CV on the
    model's own rows, as train.kind = ridge does."""
    from pipeline.core import config
    from pipeline.modeling import targets
    from pipeline.train import ridge

    defaults = config.TrainConfig()

    def predict(fit_rows, predict_rows):
        coding = targets.fit("raw", y[fit_rows])
        r = ridge.fit(x[fit_rows], y[fit_rows], coding, groups[fit_rows], defaults.ridge_alphas,
                      defaults.ridge_inner_folds)
        return np.clip(coding.decode(r.predict(x[predict_rows])), 0, 1)
    return predict


def compute_features(config_path: str, data: Path, model_path: str, out: Path) -> Path:
    """Frozen features of every row of `data` as train.kind = ridge computes them (the config's backbone, pooling
    and inputs): an .npz of qa_id and x for --features. Inference only, minutes on a CPU for MiniLM."""
    import keras

    from pipeline.core import config, files
    from pipeline.modeling import model as model_lib, targets
    from pipeline.text import encode
    from pipeline.train import ridge

    cfg = config.load(config_path, [f"data.dir={data.parent}", f"data.train_file={data.name}",
                                    f"model.path={model_path}", f"output.dir={out.parent}"])
    train = tables.read_csv(data, "train")
    encoder = encode.Encoder.for_model(cfg)
    enc = encoder.encode(train, "train")
    keras.utils.set_random_seed(cfg.train.seed)
    model = model_lib.build(cfg, encoder.info.path, targets.fit("raw", tables.targets(train)),
                            model_lib.host_vocabulary(train))
    x = ridge.features(model, model.feed(enc, train), cfg.train, "train")
    with files.atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, qa_id=train[columns.ID].to_numpy(np.int64), x=x.astype(np.float32))
    return out


def run_predictions(run_dir: Path, train, fold):
    """A run's OOF, usable for the rotations (v, v+1) whose two folds one of its models held out together: a model
    that never saw either. Returns (predict, rotations it allows)."""
    import pandas as pd

    from pipeline.data import metrics
    from pipeline.run.rundir import Run

    run = Run(run_dir)
    cfg = run.load_config()
    ids = train[columns.ID].to_numpy()
    theirs = pd.read_csv(cfg.folds_file).set_index(columns.ID)["fold"]
    oof = run.load_oof()
    allowed = []
    for v in range(5):
        both = ids[np.isin(fold, [v, (v + 1) % 5])]
        held = theirs.reindex(both)
        if held.notna().all() and held.nunique() == 1 and int(held.iloc[0]) in run.finished_folds() and \
                (theirs == held.iloc[0]).sum() == len(both) and np.isin(both, oof[columns.ID]).all():
            allowed.append(v)
    out = np.full((len(train), len(columns.TARGETS)), np.nan)
    known = np.isin(ids, oof[columns.ID])
    out[known] = metrics.lookup(oof, ids[known])
    return (lambda fit_rows, rows: out[rows]), allowed


def write_folds(out_dir: Path, train, fold) -> list[str]:
    """For each rotation, a folds file of 4 folds: the three rest folds, and folds v and v+1 merged into fold 3;
    training fold 3 of it gives a model that never saw v or u, predicting both."""
    import pandas as pd

    from pipeline.core import files

    commands = []
    for v in range(5):
        u = (v + 1) % 5
        rest = [k for k in range(5) if k not in (v, u)]
        merged = np.where(np.isin(fold, [v, u]), 3, np.searchsorted(rest, fold))
        path = out_dir / f"folds-rotation{v}.csv"
        files.write_csv(path, pd.DataFrame({columns.ID: train[columns.ID].to_numpy(), "fold": merged}))
        commands.append(f"python run.py train --config <yours> --set folds.file={path} --set folds.n_folds=4 "
                        f"--set train.folds=[3] --set train.run_name=<name>-rotation{v}")
    return commands


def measured_gain(y_u, p_u, report: dict, rng_seed: int = 0) -> float:
    """Gain of the kept transforms on 476-row subsets of the unseen rows (mean over the columns and DRAWS subsets)."""
    rng = np.random.default_rng(rng_seed)
    size = min(TEST_ROWS, len(y_u))
    subsets = [rng.choice(len(y_u), size, replace=False) for _ in range(postprocess.DRAWS)]
    after = postprocess.apply(p_u, report, columns.TARGETS)
    return float(np.mean([[postprocess.score_column(y_u[s, j], after[s, j]) -
                           postprocess.score_column(y_u[s, j], p_u[s, j]) for s in subsets]
                          for j in range(len(columns.TARGETS))]))


def estimate(y, p, fold, groups, margin: float, one_fold: bool) -> tuple[dict, dict]:
    report = postprocess.fit(y, p, fold, columns.TARGETS, y, METHODS, eval_rows=TEST_ROWS, groups=groups,
                             margin=margin, one_fold=one_fold)
    return report, postprocess.summary(report, one_fold)


def one_fold(y, fold, groups, predict, v: int, margin: float, cache: dict) -> dict:
    u = (v + 1) % 5
    rows_v, rows_u = np.flatnonzero(fold == v), np.flatnonzero(fold == u)
    if v not in cache:  # one model per rotation, whatever the margin
        cache[v] = predict(np.flatnonzero(~np.isin(fold, [v, u])), np.concatenate([rows_v, rows_u]))
    p_v, p_u = cache[v][:len(rows_v)], cache[v][len(rows_v):]
    sub, _ = postprocess.split_for_nesting(fold[rows_v], groups[rows_v])
    report, s = estimate(y[rows_v], p_v, sub, groups[rows_v], margin, True)
    return _row(f"v{v} u{u}", s, measured_gain(y[rows_u], p_u, report))


def five_folds(y, part, groups, predict, t: int, margin: float, cache: dict) -> dict:
    """Part t unseen; parts != t are a run's folds (renumbered 0..4)."""
    seen = np.flatnonzero(part != t)
    unseen = np.flatnonzero(part == t)
    if t not in cache:
        oof = np.empty((len(seen), len(columns.TARGETS)))
        test = np.zeros((len(unseen), len(columns.TARGETS)))
        for k in np.unique(part[seen]):
            held = part[seen] == k
            pred = predict(seen[~held], np.concatenate([seen[held], unseen]))
            oof[held] = pred[:held.sum()]
            test += pred[held.sum():] / 5
        cache[t] = (oof, test)
    oof, test = cache[t]
    report, s = estimate(y[seen], oof, part[seen], groups[seen], margin, False)
    return _row(f"unseen part {t}", s, measured_gain(y[unseen], test, report))


def _row(name: str, s: dict, measured: float) -> dict:
    est, u = s["after_honest"] - s["before"], s["honest_uncertainty"]["plus_minus"]
    return {"rotation": name, "estimated": est, "uncertainty": u, "measured": measured, "error": est - measured,
            "covered": abs(est - measured) <= u, "columns_kept": s["n_applied"],
            "held_set_sd": s["honest_gain_by_held_set"]["sd"]}  # what the report says one test set's gain varies by


def summarize(rows: list[dict]) -> dict:
    err = np.array([r["error"] for r in rows])
    return {"n": len(rows), "estimated": float(np.mean([r["estimated"] for r in rows])),
            "measured": float(np.mean([r["measured"] for r in rows])), "mean_error": float(err.mean()),
            "measured_sd": float(np.std([r["measured"] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
            "rmse": float(np.sqrt(np.mean(err ** 2))),
            "max_error": float(np.abs(err).max()), "uncertainty": float(np.mean([r["uncertainty"] for r in rows])),
            "covered": int(sum(r["covered"] for r in rows)),
            "held_set_sd": float(np.mean([r.get("held_set_sd", np.nan) for r in rows])),
            "columns_kept": float(np.mean([r["columns_kept"] for r in rows]))}


def markdown(result: dict) -> str:
    lines = [f"# Post-processing estimates against unseen question groups ({result['date']})", "",
             f"Device: {result['device']}. Model: {result['model']}. Rows: {result['rows']} shared real rows, "
             "question-grouped. One fold: the project's 5 folds (seed 42), a model fitted on three predicts the "
             "validated fold v and the unseen fold v+1; post-processing fitted on v as `validate` does with one "
             "finished fold. Five folds: 6 parts, each unseen in turn; the other five are a run's folds, their "
             "models' OOF fits post-processing as `ensemble` does, their average predicts the unseen part. "
             f"Gains: honest estimate (mean over the 30 columns) against the kept transforms' gain measured on "
             f"{TEST_ROWS}-row subsets of the unseen rows (the measured gain itself varies from one unseen part to "
             f"the next: its sd is given). Uncertainty: what the report prints (+-). Goal: five folds' estimate "
             f"within {FIVE_FOLD_TOLERANCE} of the measured gain (mean over the rotations); one fold's gain inside "
             f"its printed uncertainty.", "",
             "| scenario | keep margin | rotations | columns kept | honest estimate | measured gain (sd) | mean error "
             "| RMSE | max error | printed +- | gain inside it | report's one-set sd |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in result["summary"].items():
        scenario, margin = key.rsplit(" margin ", 1)
        goal = f" ({'within' if abs(r['mean_error']) <= FIVE_FOLD_TOLERANCE else 'outside'} {FIVE_FOLD_TOLERANCE})" \
            if scenario == "five folds" else ""
        lines.append(f"| {scenario} | {margin} | {r['n']} | {r['columns_kept']:.1f} | {r['estimated']:+.4f} | "
                     f"{r['measured']:+.4f} ({r['measured_sd']:.4f}) | {r['mean_error']:+.4f}{goal} | {r['rmse']:.4f} | "
                     f"{r['max_error']:.4f} | {r['uncertainty']:.4f} | {r['covered']} of {r['n']} | {r['held_set_sd']:.4f} |")
    lines += ["", "Per rotation:", "", "| scenario | keep margin | rotation | estimate | +- | measured | error |",
              "|---|---|---|---|---|---|---|"]
    for key, rows in result["rotations"].items():
        scenario, margin = key.rsplit(" margin ", 1)
        lines += [f"| {scenario} | {margin} | {r['rotation']} | {r['estimated']:+.4f} | {r['uncertainty']:.4f} | "
                  f"{r['measured']:+.4f} | {r['error']:+.4f} |" for r in rows]
    return "\n".join(lines + [""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA), help="a train.csv of real QUEST rows")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--features", help="an .npz of frozen features (qa_id, x) for a ridge in place of TF-IDF")
    which.add_argument("--predictions", help="a run directory trained on --write-folds' folds files (fold 3 held)")
    which.add_argument("--write-folds", help="write the rotations' folds files into this directory, then stop")
    which.add_argument("--compute-features", nargs=3, metavar=("CONFIG", "MODEL_DIR", "OUT_NPZ"),
                       help="write frozen features for --features (e.g. configs/frozen-ridge.toml), then stop")
    parser.add_argument("--describe", help="what made the features or the run, for the table")
    parser.add_argument("--name", help="results file suffix (default: from the source)")
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"{args.data} not found: this check needs the shared real rows", file=sys.stderr)
        return 2
    import pandas as pd

    start = time.perf_counter()
    if args.compute_features:
        config_path, model_dir, out = args.compute_features
        print(compute_features(config_path, Path(args.data).resolve(), model_dir, Path(out).resolve()))
        return 0
    train = tables.read_csv(Path(args.data), "train")
    y = tables.targets(train).astype(float)
    groups = train[columns.BODY].to_numpy()
    fold = folds_lib.assign(train, 5, 42, columns.BODY, stratify=False)
    if args.write_folds:
        for line in write_folds(Path(args.write_folds), train, fold):
            print(line)
        return 0
    scenarios = {"one fold": list(range(5)), "five folds": list(range(6))}
    if args.predictions:
        predict, allowed = run_predictions(Path(args.predictions), train, fold)
        if not allowed:
            print(f"{args.predictions}: no model of this run held out two adjacent project folds together (v and "
                  "v+1), so a validated fold's model may have trained on the unseen fold; train it on a folds file "
                  "from --write-folds", file=sys.stderr)
            return 2
        scenarios = {"one fold": allowed}
        model, stem = args.describe or f"the run {Path(args.predictions).name}", Path(args.predictions).name
    elif args.features:
        with np.load(args.features) as z:
            at = pd.Index(z["qa_id"]).get_indexer(train[columns.ID].to_numpy())
            if (at < 0).any():
                print(f"{args.features} lacks {int((at < 0).sum())} of the train rows' qa_id", file=sys.stderr)
                return 2
            x = z["x"][at]
        predict = frozen_ridge(x, y, groups)
        model, stem = args.describe or f"a ridge on the features in {args.features}", Path(args.features).stem
    else:
        predict, model, stem = tfidf_ridge(train, y), "TF-IDF + ridge", ""
    part = folds_lib.assign(train, 6, 42, columns.BODY, stratify=False)
    caches = {"one fold": {}, "five folds": {}}
    rotations, summary = {}, {}
    for scenario, ks in scenarios.items():
        for margin in MARGINS:
            key = f"{scenario} margin {margin:g}"
            step = one_fold if scenario == "one fold" else five_folds
            rotations[key] = [step(y, fold if scenario == "one fold" else part, groups, predict, k, margin,
                                   caches[scenario]) for k in ks]
            summary[key] = summarize(rotations[key])
            print(f"{key}: done ({time.perf_counter() - start:.0f}s)", flush=True)
    result = {**record.stamp(__file__, argv, tensorflow=False), "model": model, "rows": len(train),
              "rotations": rotations, "summary": summary, "seconds": time.perf_counter() - start,
              "one_fold_rule": postprocess.ONE_FOLD_RMSE, "tolerance": FIVE_FOLD_TOLERANCE}
    text = markdown(result)
    name = args.name or stem
    record.write(result, text, record.RESULTS / f"postprocess-transfer{'-' + name if name else ''}.json")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
