"""What a first real run meets: one finished fold, a text-only CSV to predict, a step-limited probe,
validation predicted once per fold, logs in a file, and a report that shows truncation and a baseline."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, tiny_train_config
from pipeline.cli import stages
from pipeline.core import config, files, layout
from pipeline.core.columns import ID, TARGETS, TEXT_COLUMNS
from pipeline.data import folds as folds_lib, tables
from pipeline.modeling import feeding
from pipeline.run import predict
from pipeline.run.rundir import Run
from pipeline.text import encode


@pytest.fixture(scope="module")
def one_fold(tmp_path_factory, synth_dir, tiny_model_dir):
    """A 3-fold split with only fold 0 trained (`train --folds 0`, the usual first step)."""
    tmp = tmp_path_factory.mktemp("onefold")
    cfg = tiny_train_config(tmp, synth_dir, tiny_model_dir, folds__n_folds=3, train__folds="0", train__epochs=2)
    stages.folds(cfg)
    calls = []
    real = feeding.predict
    feeding.predict = lambda model, feed, *a, **k: calls.append(len(feed)) or real(model, feed, *a, **k)
    try:
        run_dir = stages.train(cfg)[0]
    finally:
        feeding.predict = real
    return cfg, run_dir, calls


def test_validation_rows_are_predicted_once_per_epoch_not_again(one_fold):
    cfg, run_dir, calls = one_fold
    fold = pd.read_csv(cfg.folds_file)
    n_val, n_test = int((fold["fold"] == 0).sum()), len(tables.load(cfg, "test"))
    assert calls == [n_val, n_val, n_test]  # two epochs' validation, then the test set; no extra OOF pass
    oof = pd.read_csv(run_dir / "fold0" / "oof.csv")
    history = pd.read_csv(run_dir / "fold0" / "history.csv")
    saved = files.read_json(run_dir / "fold0" / "metrics.json")
    assert cfg.train.keep == "last" and saved["best_epoch"] == len(history)  # the default keeps the last epoch
    assert len(oof) == n_val and saved["val_spearman"] == pytest.approx(history["val_spearman"].iloc[-1])


def test_one_finished_fold_validates_with_nested_held_sets(one_fold):
    cfg, run_dir, _ = one_fold
    paths = stages.validate(cfg)
    rep = files.read_json(run_dir / "report" / "report.json")
    assert rep["folds_done"] == [0] and np.isfinite(rep["oof_spearman"])
    assert "only fold 0 is finished" in rep["postprocess"]["split"] and (run_dir / "postprocess.json") in paths
    assert "random question-grouped sets of" in (run_dir / "report" / "report.md").read_text()
    config.override(cfg, "postprocess.eval_rows=0")  # the folds' way: 3 sub-folds of the one fold
    try:
        stages.validate(cfg)
        assert "question-grouped sub-folds" in (run_dir / "report" / "report.md").read_text()
    finally:
        config.override(cfg, "postprocess.eval_rows=476")


def test_report_shows_truncation_per_field_and_a_text_baseline(one_fold):
    cfg, run_dir, _ = one_fold
    stages.validate(cfg)
    rep = files.read_json(run_dir / "report" / "report.json")
    assert [t["field"] for t in rep["truncation"]] == list(TEXT_COLUMNS)
    assert sum(t["budget"] for t in rep["truncation"]) == cfg.encode.max_len - 4  # [CLS] + 3 [SEP]
    assert any(t["truncated_share"] > 0 for t in rep["truncation"])  # generated rows run past 128 tokens
    base = rep["baseline_per_column"]
    assert set(base) == set(TARGETS) and all(-1 <= v <= 1 for v in base.values())
    assert rep["below_baseline"] == [c for c in TARGETS if rep["per_column"][c] < base[c]]
    md = (run_dir / "report" / "report.md").read_text()
    assert "rows truncated" in md and "TF-IDF ridge" in md


def test_predict_needs_only_the_fields_a_run_reads(one_fold, tmp_path):
    cfg, run_dir, _ = one_fold
    test = tables.load(cfg, "test")
    slim = tmp_path / "slim.csv"
    test[[ID, *TEXT_COLUMNS]].to_csv(slim, index=False)
    out = pd.read_csv(predict.predict_run(run_dir, slim, out_dir=tmp_path / "p"))
    assert list(out[ID]) == list(test[ID]) and np.isfinite(out[list(TARGETS)].to_numpy()).all()
    test[[ID, "question_title", "answer"]].to_csv(tmp_path / "nobody.csv", index=False)
    with pytest.raises(tables.DataError, match=r"nobody.csv: missing column\(s\) \['question_body'\]"):
        predict.predict_run(run_dir, tmp_path / "nobody.csv", out_dir=tmp_path / "p")


def test_a_step_limited_probe_is_never_a_finished_fold(tmp_path, synth_dir, tiny_model_dir):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__folds="0", train__max_steps=3)
    stages.folds(cfg)
    stages.train(cfg)
    probe = files.read_json(layout.RunPaths(cfg.run_dir).probe(0))
    assert probe["probe"] and probe["steps"] == 3 and probe["train_samples_per_s"] > 0
    assert Run(cfg.run_dir).finished_folds() == [] and not (cfg.run_dir / "fold0" / "model.weights.h5").exists()
    assert not (cfg.run_dir / "summary.json").exists()
    cfg.train.max_steps = 0  # the real run afterwards trains the fold in full, in the same run directory
    stages.train(cfg)
    assert Run(cfg.run_dir).finished_folds() == [0]


@pytest.mark.slow
def test_logs_to_a_file_are_plain_lines_with_rate_and_eta(tmp_path, synth_dir, tiny_model_dir):
    sets = {"data.dir": synth_dir, "folds.file": tmp_path / "folds.csv", "encode.cache_dir": tmp_path / "cache",
            "output.dir": tmp_path / "out", "model.path": tiny_model_dir, "model.random_init": "true",
            "folds.n_folds": 2, "encode.max_len": 64, "train.epochs": 1, "train.verbose": 1, "train.batch_size": 8,
            "train.folds": "0"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(ROOT / "run.py")]
    assert subprocess.run(cmd + ["folds", *args], env=env, capture_output=True).returncode == 0
    out = subprocess.run(cmd + ["train", *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    steps = [line for line in text.splitlines() if " step " in line and "samples/s" in line and "ETA" in line]
    assert 2 <= len(steps) <= 12  # about one line per tenth of an epoch, not one per step
    assert "\x1b[" not in text and "shuffle=True" not in text and "No accelerator found" in text
    quiet = subprocess.run(cmd + ["train", "-q", *args, "--set", "train.run_name=quiet"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and " step " not in quiet.stdout + quiet.stderr


@pytest.mark.backend
@pytest.mark.parametrize("keep", ["best", "last", "inner"])
def test_the_kept_epoch_is_what_is_saved(tmp_path, synth_dir, tiny_model_dir, keep, monkeypatch):
    """keep=best restores the best epoch's weights (keep=last the last's; keep=inner the epoch its inner rows,
    held out of training, score best); the saved score, OOF and weights agree.
    On TensorFlow, the fold's train step is traced once for all its epochs and batch shapes (its Python runs only
    to trace); JAX compiles each batch shape (backend.py)."""
    import keras

    traced = []
    if keras.config.backend() == "tensorflow":
        from pipeline.modeling import accumulate

        step = accumulate.train_step
        monkeypatch.setattr(accumulate, "train_step", lambda *a: traced.append(1) or step(*a))
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__epochs=3, train__keep=keep, train__folds="0")
    stages.folds(cfg)
    run_dir = stages.train(cfg)[0]
    assert len(traced) == (keras.config.backend() == "tensorflow")
    fold = layout.RunPaths(run_dir).fold(0)
    history, saved = pd.read_csv(fold.history), files.read_json(fold.metrics)
    scores = history["val_spearman"]
    chosen = {"best": int(scores.idxmax()) + 1, "last": 3}.get(keep)
    if keep == "inner":  # chosen by the inner rows' curve, whatever the held fold says; they were not trained on
        chosen = int(history["inner_spearman"].idxmax()) + 1
        held_out = (folds_lib.read(cfg, tables.load(cfg, "train")) != 0).sum()
        assert saved["inner_rows"] > 0 and saved["train_rows"] + saved["inner_rows"] == held_out
    assert saved["best_epoch"] == chosen and saved["val_spearman"] == pytest.approx(scores.iloc[chosen - 1])
    oof = pd.read_csv(fold.oof)
    train = tables.load(cfg, "train").set_index(ID).loc[oof[ID]].reset_index()
    encoder = encode.Encoder.for_model(cfg)
    tok, info = encoder.tok, encoder.info
    enc = encode.encode_frame(train, tok, cfg.encode, info.uses_segments)
    again = feeding.predict(Run(run_dir).load_fold(0), enc.feed(), 64)
    assert np.allclose(again, oof[list(TARGETS)].to_numpy(), atol=1e-5)  # the weights are that epoch's


def test_patience_stops_when_the_score_stalls(tmp_path, synth_dir, tiny_model_dir):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__epochs=6, train__patience=2, train__keep="best",
                            train__lr_backbone=0.0, train__lr_head=0.0, train__folds="0")  # nothing can improve
    stages.folds(cfg)
    run_dir = stages.train(cfg)[0]
    saved = files.read_json(layout.RunPaths(run_dir).fold(0).metrics)
    assert saved["epochs_run"] == 3 and saved["best_epoch"] == 1  # epoch 1, then two without improvement
