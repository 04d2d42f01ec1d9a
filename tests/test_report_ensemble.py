import time

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_train_config
from pipeline.cli import stages
from pipeline.core import files, layout
from pipeline.core.columns import ID, SUBMISSION_COLUMNS, TARGETS, TEXT_COLUMNS
from pipeline.data import metrics, submission, tables
from pipeline.dev import tinymodel
from pipeline.evaluate import ensemble, scores


def assert_postprocess_consistent(summary: dict, columns: dict):
    """The summary is the mean over columns of the nested score of what is applied; applied means better."""
    kept = [c["after_nested"] if c["applied"] else c["before"] for c in columns.values()]
    assert summary["after_nested"] == pytest.approx(np.mean(kept))
    assert summary["n_applied"] == sum(c["applied"] for c in columns.values())
    assert all(c["after_nested"] > c["before"] for c in columns.values() if c["applied"])
    assert all(c["method"] == "none" and c["params"] == {} for c in columns.values() if not c["applied"])


def test_validate_writes_report_and_plots(trained):
    cfg, (run_dir, _) = trained
    paths = stages.validate(cfg)
    rep = files.read_json(run_dir / "report" / "report.json")
    for name in ("per_target.png", "learning_curves.png"):
        assert (run_dir / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert set(rep["per_column"]) == set(TARGETS) and sorted(rep["per_fold"]) == ["0", "1"]
    assert_postprocess_consistent(rep["postprocess"], rep["postprocess_columns"])
    assert rep["oof_spearman"] == pytest.approx(files.read_json(run_dir / "summary.json")["oof_spearman"])
    md = (run_dir / "report" / "report.md").read_text()
    assert "question_type_spelling" in md and scores.markdown() in md  # every score named, and what it means
    for name, _ in scores.SCORE_MEANINGS:
        assert f"- {name}" in md, name
    assert (run_dir / "postprocess.json") in paths
    spread = rep["postprocess"]["honest_gain_by_held_set"]  # one held set's gain: what one test set may see
    assert spread["min"] <= rep["postprocess"]["after_honest"] - rep["postprocess"]["before"] <= spread["max"]
    assert f"standard deviation of {spread['sd']:.4f}" in md


def test_compare_table_lists_each_run(trained):
    cfg, run_dirs = trained
    table = stages.validate(cfg, compare=[str(d) for d in run_dirs])[0].read_text()
    assert all(d.name in table for d in run_dirs) and table.count("\n") == 4


def test_ensemble_of_two_seeds_writes_a_valid_submission(trained):
    cfg, run_dirs = trained
    for method in ("mean", "rank", "optimize"):
        cfg.ensemble.method, cfg.ensemble.name = method, f"ens-{method}"
        paths = stages.ensemble(cfg, runs=[str(d) for d in run_dirs])
        ens = layout.ensemble(cfg)
        summary = files.read_json(ens.summary)
        sub = pd.read_csv(cfg.submission_file)
        sample = tables.load(cfg, "sample_submission")
        assert {ens.summary, cfg.submission_file} <= set(paths) and all(p.is_file() for p in paths)  # as it says
        assert list(sub.columns) == list(SUBMISSION_COLUMNS) and (sub[ID] == sample[ID]).all()
        assert sub[list(TARGETS)].notna().all().all() and sub[list(TARGETS)].to_numpy().min() >= 0
        assert len(summary["weights"]) == 2 and sum(summary["weights"].values()) == pytest.approx(1.0)
        assert np.isfinite(summary["blend_oof_spearman_nested"])
        assert_postprocess_consistent(summary["postprocess"], files.read_json(ens.postprocess))
    cfg.ensemble.method, cfg.ensemble.name = "mean", "ensemble"


def test_optimised_weights_prefer_the_better_member():
    rng = np.random.default_rng(0)
    y = rng.random((400, 30))
    good, noise = y + rng.normal(0, 0.2, y.shape), rng.random(y.shape)
    w = ensemble.fit_weights(y, [noise, good], "optimize")
    assert w[1] > 0.8 and w.min() >= 0 and w.sum() == pytest.approx(1.0)


def test_the_optimiser_moves_off_equal_weights_and_per_column_weights_follow_each_target():
    """Four members (the issue's case: a smooth optimiser returned 0.25 each); one is pure noise, and
    member 0 is good only on the first 15 targets, member 1 only on the last 15."""
    rng = np.random.default_rng(1)
    y = rng.random((500, 30))
    near = lambda s: y + rng.normal(0, s, y.shape)  # noqa: E731
    half_a, half_b = near(0.3), near(0.3)
    half_a[:, 15:], half_b[:, :15] = rng.random((500, 15)), rng.random((500, 15))
    members = [half_a, half_b, near(0.5), rng.random(y.shape)]
    w = ensemble.fit_weights(y, members, "optimize")
    assert not np.allclose(w, 0.25) and w[3] < 0.5 * w[:3].min() and w.sum() == pytest.approx(1.0)
    wc = ensemble.fit_weights(y, members, "optimize", per_column=True, grid=(0, 1, 2, 4))
    assert wc.shape == (4, 30) and np.allclose(wc.sum(axis=0), 1.0)
    assert wc[3].mean() < 0.1  # noise: (nearly) never used
    assert wc[0, :15].mean() > wc[0, 15:].mean() + 0.2 and wc[1, 15:].mean() > wc[1, :15].mean() + 0.2
    per_col = metrics.spearman(y, ensemble.blend(members, wc, "mean")).mean
    equal = metrics.spearman(y, ensemble.blend(members, np.full(4, 0.25), "mean")).mean
    assert per_col > equal + 0.02


def test_optimised_ensemble_reports_its_nested_gain_over_equal_weights(trained):
    cfg, run_dirs = trained
    cfg.ensemble.method, cfg.ensemble.per_column, cfg.ensemble.name = "optimize", True, "ens-columns"
    try:
        stages.ensemble(cfg, runs=[str(d) for d in run_dirs])
        summary = files.read_json(layout.ensemble(cfg).summary)
        weights = files.read_json(layout.ensemble(cfg).weights)["weights"]
    finally:
        cfg.ensemble.method, cfg.ensemble.per_column, cfg.ensemble.name = "mean", False, "ensemble"
    assert summary["per_column"] and np.asarray(weights).shape == (2, 30)
    assert summary["nested_gain_over_equal"] == pytest.approx(
        summary["blend_oof_spearman_nested"] - summary["equal_weights_oof_spearman"])
    sub = pd.read_csv(cfg.submission_file)
    assert sub[list(TARGETS)].notna().all().all()


def test_runs_on_different_folds_cannot_be_blended(trained, tmp_path):
    cfg, run_dirs = trained
    other = tmp_path / "other"
    import shutil
    shutil.copytree(run_dirs[1], other)
    info = files.read_json(other / "run.json")
    files.write_json(other / "run.json", {**info, "folds_fingerprint": "something-else"})
    with pytest.raises(ValueError, match="different fold splits"):
        stages.ensemble(cfg, runs=[str(run_dirs[0]), str(other)])


def test_submission_is_checked_before_writing(tmp_path, synth_dir):
    sample = tables.read_csv(synth_dir / "sample_submission.csv", "sample_submission")
    preds = sample.copy()
    preds[list(TARGETS)] = 0.5
    path = tmp_path / "submission.csv"
    with pytest.raises(submission.SubmissionError, match="have no prediction"):
        submission.write(path, sample, preds.iloc[1:])
    bad = preds.copy()
    bad.loc[0, TARGETS[0]] = 1.2
    with pytest.raises(submission.SubmissionError, match=r"values must lie in \[0, 1\]"):
        submission.write(path, sample, bad)
    bad.loc[0, TARGETS[0]] = np.nan
    with pytest.raises(submission.SubmissionError, match="NaN"):
        submission.write(path, sample, bad)
    assert not path.exists()  # nothing half-written
    submission.write(path, sample, preds.sample(frac=1.0, random_state=0))
    assert (pd.read_csv(path)[ID] == sample[ID]).all()


def test_predict_uses_weights_for_a_new_csv_and_matches_saved_fold_predictions(trained, tmp_path):
    from pipeline.run import predict

    cfg, (run_dir, _) = trained
    test_csv = cfg.data_file("test_file")
    fast = pd.read_csv(predict.predict_run(run_dir, test_csv, out_dir=tmp_path / "a"))
    slow = pd.read_csv(predict.predict_run(run_dir, test_csv, out_dir=tmp_path / "b", reuse=False,
                                           cache_dir=tmp_path / "cache"))
    assert np.allclose(fast[list(TARGETS)], slow[list(TARGETS)], atol=1e-4)


def test_all_rerun_is_a_fast_no_op(trained):
    cfg, (run_dir, _) = trained
    stages.run_all(cfg)
    marks = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    sub = cfg.submission_file
    marks[sub] = sub.stat().st_mtime_ns
    start = time.perf_counter()
    stages.run_all(cfg)
    assert time.perf_counter() - start < 30
    assert {p: p.stat().st_mtime_ns for p in marks} == marks  # nothing rewritten


@pytest.mark.slow
def test_validate_and_ensemble_on_real_rows(tmp_path, toy_dir):
    train = tables.read_csv(toy_dir / "train_toy.csv", "train")
    texts = [t for c in TEXT_COLUMNS for t in train[c]]
    model_dir = tinymodel.make(tmp_path / "tiny", texts, hidden=32, layers=1, heads=2, vocab_size=2000)
    cfg = tiny_train_config(tmp_path, toy_dir, model_dir, toy=True, train__epochs=1)
    stages.folds(cfg)
    stages.train(cfg)
    stages.validate(cfg)
    rep = files.read_json(cfg.run_dir / "report" / "report.json")
    assert rep["n_rows"] == 50 and (cfg.run_dir / "report" / "per_target.png").is_file()
    assert_postprocess_consistent(rep["postprocess"], rep["postprocess_columns"])
    stages.ensemble(cfg)
    sub = pd.read_csv(cfg.submission_file)
    assert (sub[ID] == tables.load(cfg, "sample_submission")[ID]).all()


def test_the_report_scores_the_kept_the_last_and_the_other_folds_epochs(trained):
    """Beside the kept epochs' OOF (said how they were chosen), the last epochs' and an honest one: each
    fold at the epoch the other fold scores best. Every epoch's predictions are kept, and the kept epoch's equal
    oof.csv."""
    from pipeline.run.rundir import Run

    cfg, (run_dir, _) = trained
    stages.validate(cfg)
    e = files.read_json(run_dir / "report" / "report.json")["epochs"]
    run = Run(run_dir)
    curves = {k: pd.read_csv(run.fold(k).history)["val_spearman"].to_numpy() for k in (0, 1)}
    assert e["other_folds_epochs"] == {"0": int(np.argmax(curves[1])) + 1, "1": int(np.argmax(curves[0])) + 1}
    frames = {}
    for k in (0, 1):
        with np.load(run.fold(k).epoch_oof) as z:
            preds, ids = z["preds"], z["qa_id"]
        kept = pd.read_csv(run.fold(k).oof).set_index(ID).loc[ids, list(TARGETS)].to_numpy()
        assert len(preds) == len(curves[k]) and np.allclose(preds[e["kept_epochs"][str(k)] - 1], kept, atol=1e-6)
        frames[k] = pd.DataFrame(preds[-1], columns=list(TARGETS)).assign(**{ID: ids})
    last = pd.concat(frames.values())
    train = tables.load(cfg, "train").set_index(ID).loc[last[ID]]
    assert e["last"] == pytest.approx(metrics.spearman(train[list(TARGETS)].to_numpy(), last[list(TARGETS)].to_numpy()).mean)
    md = (run_dir / "report" / "report.md").read_text()
    assert f"- OOF at the last epoch: {e['last']:.4f}" in md and scores.KEPT_EPOCH[cfg.train.keep][1] in md


def test_a_fold_from_another_backend_is_used_only_where_it_predicts_alike_here(trained, tmp_path):
    """A fold whose metrics say another backend predicts a few of its held rows here; equal to what it predicted
    when trained: accepted and said; its saved predictions off by more than the tolerance: refused, naming it."""
    import shutil

    import keras

    from pipeline.run import predict
    from pipeline.run.rundir import RunError

    cfg, (run_dir, _) = trained
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    other = {"tensorflow": "jax", "jax": "tensorflow"}[keras.config.backend()]
    metrics_path = copy / "fold0" / "metrics.json"
    files.write_json(metrics_path, {**files.read_json(metrics_path), "backend": other})
    train = tables.load(cfg, "train")
    said = predict.check_backends(copy, train)
    assert len(said) == 1 and f"fold 0 was trained on {other}" in said[0]  # fold 1 is this backend's: not checked
    oof = pd.read_csv(copy / "fold0" / "oof.csv")
    oof.loc[3, TARGETS[0]] += 0.01  # what it "predicted there" differs by more than float32 allows
    oof.to_csv(copy / "fold0" / "oof.csv", index=False)
    with pytest.raises(RunError, match=f"fold 0 was trained on {other}.*KERAS_BACKEND={other}"):
        predict.check_backends(copy, train)
