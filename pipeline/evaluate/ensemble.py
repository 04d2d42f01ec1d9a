"""Blend runs that share folds.csv: equal mean, rank average, or OOF-optimised weights (nested).

Writes output/ensembles/<name>/ (weights.json, oof.csv, test.csv, postprocess.json, summary.json)
and the submission CSV: blended test predictions with the blend's fitted post-processing applied.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pipeline.core import config as config_lib, files, layout
from pipeline.core.columns import ID, TARGETS
from pipeline.core.errors import MissingArtifact
from pipeline.data import folds as folds_lib, metrics, submission, tables
from pipeline.evaluate import postprocess
from pipeline.run import predict
from pipeline.run.rundir import Run, RunError

log = logging.getLogger(__name__)


def _ranks(p: np.ndarray) -> np.ndarray:
    return np.column_stack([rankdata(p[:, j]) / len(p) for j in range(p.shape[1])])


def blend(preds: list[np.ndarray], weights: np.ndarray, method: str) -> np.ndarray:
    if method == "rank":
        preds = [_ranks(p) for p in preds]
    return np.clip(sum(w * p for w, p in zip(weights, preds)), 0.0, 1.0)


def blend_members(members: list[pd.DataFrame], weights, method: str, pp: dict) -> pd.DataFrame:
    """Blend per-run prediction tables (qa_id + targets, rows in any order) and apply post-processing."""
    ids = members[0].index if members[0].index.name == ID else pd.Index(members[0][ID])
    frames = [m if m.index.name == ID else m.set_index(ID) for m in members]
    values = blend([f.loc[ids, list(TARGETS)].to_numpy() for f in frames], weights, method)
    if pp:
        values = postprocess.apply(values, pp, TARGETS)
    return submission.predictions_frame(ids, values)


def write_submission(path: Path, sample: pd.DataFrame, members: list[Path], weights, method: str, pp: dict) -> Path:
    """The Kaggle kernel's submission: members' prediction files through blend_members (as `ensemble` does)."""
    return submission.write(path, sample, blend_members([pd.read_csv(m) for m in members], weights, method, pp))


def _ascend(objective, n: int, grid) -> np.ndarray:
    """Coordinate ascent over grid weights from equal weights: each pass tries every grid value for every
    member and keeps a strict improvement; stops when a pass changes nothing. Returns weights summing to one.
    (A smooth optimiser started at equal weights never moves on this piecewise-constant objective.)"""
    w = np.ones(n)
    best = objective(w / n)
    for _ in range(5):
        changed = False
        for i in range(n):
            for g in grid:
                trial = w.copy()
                trial[i] = g
                if g == w[i] or trial.sum() <= 0:
                    continue
                score = objective(trial / trial.sum())
                if score > best + 1e-9:
                    best, w, changed = score, trial, True
        if not changed:
            break
    return w / w.sum()


def fit_weights(y: np.ndarray, preds: list[np.ndarray], method: str, per_column: bool = False,
                grid=(0.0, 1.0, 2.0, 4.0)) -> np.ndarray:
    """Equal weights, or for "optimize" weights from `grid` (normalised to sum to one) that maximise OOF
    Spearman: one per member, or with per_column one per member and target (shape members x targets)."""
    n = len(preds)
    if method != "optimize" or n == 1:
        return np.full(n, 1.0 / n)
    if per_column:
        return np.column_stack([
            _ascend(lambda w, j=j: postprocess.score_column(y[:, j], sum(wi * p[:, j] for wi, p in zip(w, preds))),
                    n, grid) for j in range(y.shape[1])])
    return _ascend(lambda w: metrics.spearman(y, blend(preds, w, "mean")).mean, n, grid)


def load_members(cfg, members: list[Run], test_csv: Path, train: pd.DataFrame):
    """OOF (rows present in every run) and test predictions of each run; all must share one folds.csv,
    the one cfg names. Test predictions are read from each run's `predict` output."""
    prints = {r.name: r.read_info().folds_fingerprint for r in members}
    if len(set(prints.values())) > 1:
        raise RunError(f"runs were trained on different fold splits {prints}; their OOF cannot be blended")
    data = tables.fingerprint(cfg)
    for r in members:
        r.check_folds(cfg)
        r.check_data(data)
        predict.check_backends(r, train)  # folds of another backend: used where they predict alike here
    oofs = [r.load_oof().set_index(ID) for r in members]
    common = oofs[0].index
    for o in oofs[1:]:
        common = common.intersection(o.index)
    outputs = {r: r.current_prediction(test_csv) for r in members}
    missing = [r.name for r, out in outputs.items() if out is None]
    if missing:
        raise MissingArtifact(f"no current predictions of {test_csv} for run(s) {missing}; run `python run.py "
                              "predict --set train.run_name=<run>` for each (`run.py ensemble` does this itself)")
    tests = [pd.read_csv(out).set_index(ID) for out in outputs.values()]
    return common, [o.loc[common, list(TARGETS)].to_numpy() for o in oofs], tests


def ensemble(cfg, run_names: list[str] | None = None) -> list[Path]:
    names = run_names or cfg.ensemble.runs or [str(cfg.run_dir)]
    members = [Run.resolve(n, cfg) for n in names]
    out = layout.ensemble(cfg)
    train, sample = tables.load(cfg, "train"), tables.load(cfg, "sample_submission")
    test_csv = cfg.data_file("test_file")
    tables.check_same_rows(tables.load(cfg, "test"), sample, test_csv, cfg.data_file("sample_submission_file"))
    common, oof_preds, tests = load_members(cfg, members, test_csv, train)
    stamp = files.sha256_text(*(files.sha256_file(r.oof) for r in members),
                              *(t.to_csv() for t in tests), config_lib.to_toml(cfg), files.sha256_file(test_csv))
    sub_path = cfg.submission_file
    if files.is_current(out.summary, stamp, out.submission, sub_path):
        return [out.summary, sub_path]
    truth = train.set_index(ID).loc[common]
    y = truth[list(TARGETS)].to_numpy()
    finished = folds_lib.by_id(cfg, train).loc[common].to_numpy()
    one_fold = len(np.unique(finished)) < 2  # sub-folds of it stand in for folds
    fold, _ = postprocess.split_for_nesting(finished, truth[cfg.folds.group_key])
    method, e = cfg.ensemble.method, cfg.ensemble
    weights = fit_weights(y, oof_preds, method, e.per_column, e.grid)
    nested = np.empty_like(y)
    for k in np.unique(fold):  # weights fitted without the held fold
        held = fold == k
        w = fit_weights(y[~held], [p[~held] for p in oof_preds], method, e.per_column, e.grid)
        nested[held] = blend([p[held] for p in oof_preds], w, method)
    equal = metrics.spearman(y, blend(oof_preds, np.full(len(oof_preds), 1 / len(oof_preds)), method)).mean
    oof_blend = blend(oof_preds, weights, method)
    pp = {}
    if cfg.postprocess.blend:
        pp = postprocess.fit(y, nested, fold, TARGETS, y, cfg.postprocess.methods, cfg.postprocess.round_grids,
                             cfg.postprocess.kmeans_levels, cfg.postprocess.eval_rows,
                             truth[cfg.folds.group_key].to_numpy(), cfg.postprocess.keep_margin, one_fold)
    test_blend = blend_members(tests, weights, method, pp)
    scores = {r.name: float(metrics.spearman(y, p).mean) for r, p in zip(members, oof_preds)}
    score = metrics.spearman(y, nested)
    summary = {"runs": [str(r.root) for r in members], "folds": {r.name: r.finished_folds() for r in members},
               "method": method,
               "weights": dict(zip(scores, weights.tolist())),
               "per_column": e.per_column and method == "optimize", "member_oof_spearman": scores,
               "blend_oof_spearman_nested": score.mean, "equal_weights_oof_spearman": equal,
               "nested_gain_over_equal": score.mean - equal,
               "n_constant": score.n_constant, "n_rows": len(common),
               "postprocess": postprocess.summary(pp, one_fold) if pp else None,
               "backends": {r.name: sorted({files.read_json(r.fold(k).metrics).get("backend", "tensorflow")
                                            for k in r.finished_folds()}) for r in members}}
    paths = [files.write_text(out.config, config_lib.to_toml(cfg)),
             files.write_json(out.weights, {"method": method, "runs": [r.name for r in members],
                                                     "weights": weights.tolist()}),
             files.write_csv(out.oof, submission.predictions_frame(common, oof_blend)),
             files.write_csv(out.test, test_blend),
             files.write_json(out.postprocess, pp),
             submission.write(out.submission, sample, test_blend)]
    paths += [files.copy_file(out.submission, sub_path),
              files.write_json(layout.submission_record(sub_path), {"ensemble": cfg.ensemble.name,
                                                                    "sha256": files.sha256_file(sub_path)})]
    paths.append(files.write_marker(out.summary, stamp, paths, **summary))  # last: marks every file above current
    pp_line = (f", post-processed {summary['postprocess']['after_nested']:.4f} "
               f"({summary['postprocess']['n_applied']} columns)") if pp else ""
    log.info("ensemble %s (%s, %d run(s)): nested OOF Spearman %.4f (equal weights %.4f)%s; weights %s",
             cfg.ensemble.name, method, len(members), score.mean, equal, pp_line,
             np.round(weights if weights.ndim == 1 else weights.mean(axis=1), 3).tolist())
    return paths

