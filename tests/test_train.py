import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, tiny_train_config
from pipeline.cli import stages
from pipeline.core import files, layout
from pipeline.core.columns import ID, TARGETS
from pipeline.data import metrics, tables
from pipeline.dev import synth
from pipeline.modeling import model
from pipeline.run.rundir import Run


def test_run_directory_records_everything(trained):
    cfg, (run_dir, _) = trained
    info = files.read_json(run_dir / "run.json")
    assert info["seed"] == 1 and info["git_commit"] and info["command"] and info["family"] == "bert"
    assert Run(run_dir).load_config().train.seed == 1
    assert (run_dir / "model.json").is_file() and (run_dir / "tokenizer" / "tokenizer.json").is_file()
    for k in (0, 1):
        d = layout.RunPaths(run_dir).fold(k).root
        for name in ("model.weights.h5", "oof.csv", "test.csv", "history.csv", "metrics.json", "finished.json"):
            assert (d / name).is_file(), name
        assert len(pd.read_csv(d / "history.csv")) == cfg.train.epochs
    oof = pd.read_csv(run_dir / "oof.csv")
    train = tables.load(cfg, "train")
    assert sorted(oof[ID]) == sorted(train[ID])  # every row predicted once, by the fold that held it out
    summary = files.read_json(run_dir / "summary.json")
    assert summary["folds_done"] == [0, 1]
    assert summary["oof_spearman"] == pytest.approx(metrics.score_frames(train, oof).mean)


def test_oof_comes_from_the_held_out_fold(trained):
    cfg, (run_dir, _) = trained
    fold_of = dict(zip(*[pd.read_csv(cfg.folds_file)[c] for c in (ID, "fold")]))
    for k in (0, 1):
        ids = pd.read_csv(layout.RunPaths(run_dir).fold(k).oof)[ID]
        assert {fold_of[i] for i in ids} == {k}
        model_k = Run(run_dir).load_fold(k)  # weights reload into a rebuilt model
        assert model_k.count_params() > 0


def test_changed_settings_refuse_to_mix_into_a_run(trained):
    cfg, _ = trained
    changed = tiny_train_config(cfg.path(cfg.output.dir).parent, cfg.path(cfg.data.dir), cfg.path(cfg.model.path),
                                train__seed=1, train__epochs=5)
    with pytest.raises(ValueError, match="trained with other settings.*train.epochs"):
        stages.train(changed)


def _write_frames(d, train, test, sample):
    d.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", train), ("test", test), ("sample_submission", sample)):
        frame.to_csv(d / f"{name}.csv", index=False)


@pytest.mark.slow
def test_learns_clearly_above_a_shuffled_label_control(tmp_path, tiny_model_dir):
    train, test, sample = synth.generate(n_train=600, n_test=20, seed=5)
    shuffled = train.copy()
    shuffled[list(TARGETS)] = train[list(TARGETS)].sample(frac=1.0, random_state=0).to_numpy()
    scores = {}
    for name, frame in (("real", train), ("shuffled", shuffled)):
        _write_frames(tmp_path / name / "data", frame, test, sample)
        cfg = tiny_train_config(tmp_path / name, tmp_path / name / "data", tiny_model_dir, train__epochs=5,
                                train__lr_backbone=5e-3, train__lr_head=7.5e-3)
        cfg.train.folds = [0]  # trained on 300 rows, scored on the other 300: the second fold would only repeat it
        stages.folds(cfg)
        scores[name] = files.read_json(stages.train(cfg)[1])["oof_spearman"]
    # 300 held rows x 30 columns: the control's mean Spearman has a standard error near 0.011 (1/sqrt(299) per
    # column over sqrt(30) columns; more where the columns move together), so 0.06 is several standard errors
    assert scores["real"] > 0.08 and scores["real"] > scores["shuffled"] + 0.06, scores


def _untrained_and_trained(cfg, run_dir, k, enc_inputs):
    import keras

    keras.utils.set_random_seed(cfg.train.seed * 1000 + k)  # the seed train_fold builds the model with
    bb = model.load_backbone(cfg.path(cfg.model.path), cfg.model.random_init)
    untrained = model.QuestModel(bb, pooling=cfg.model.pooling, dropout=cfg.model.dropout)
    trained = Run(run_dir).load_fold(k)
    return np.asarray(untrained.predict(enc_inputs, verbose=0)), np.asarray(trained.predict(enc_inputs, verbose=0))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["real", "generated"])
def test_minilm_fine_tunes_a_few_steps(tmp_path, minilm_dir, toy_dir, synth_dir, source):
    if source == "real":
        cfg = tiny_train_config(tmp_path, toy_dir, minilm_dir, toy=True)
    else:
        cfg = tiny_train_config(tmp_path, synth_dir, minilm_dir)
    cfg.model.random_init = False
    cfg.encode.max_len, cfg.encode.title_weight, cfg.encode.question_weight, cfg.encode.answer_weight = 64, 8, 24, 28
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr_backbone, cfg.train.lr_head = 1, 8, 5e-5, 1e-3
    cfg.train.folds = [0]
    stages.folds(cfg)
    run_dir = stages.train(cfg)[0]
    assert Run(run_dir).finished_folds() == [0]
    from pipeline.text import encode
    encoder = dataclasses.replace(encode.Encoder.for_model(cfg), uses_segments=True)
    enc = encoder.encode(tables.load(cfg, "test"), "test")
    before, after = _untrained_and_trained(cfg, run_dir, 0, enc.arrays)
    assert np.abs(after - before).max() > 1e-3  # the steps moved the model
    history = pd.read_csv(layout.RunPaths(run_dir).fold(0).history)
    assert np.isfinite(history["loss"]).all()


@pytest.mark.slow
def test_killed_run_resumes_only_missing_folds(tmp_path, synth_dir, tiny_model_dir):
    sets = {"data.dir": synth_dir, "folds.file": tmp_path / "folds.csv", "encode.cache_dir": tmp_path / "cache",
            "output.dir": tmp_path / "out", "model.path": tiny_model_dir, "model.random_init": "true",
            "folds.n_folds": 2, "encode.max_len": 64, "train.epochs": 1, "train.verbose": 0, "train.batch_size": 16}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(ROOT / "run.py")]
    assert subprocess.run(cmd + ["folds", *args], env=env, capture_output=True).returncode == 0
    proc = subprocess.Popen(cmd + ["train", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "out" / "runs" / "default-s42"
    deadline = time.time() + 300
    while not layout.RunPaths(run_dir).fold(0).finished.exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert layout.RunPaths(run_dir).fold(0).finished.exists() and not layout.RunPaths(run_dir).fold(1).finished.exists()
    first = layout.RunPaths(run_dir).fold(0).finished.stat().st_mtime_ns
    leftovers = [p for p in run_dir.rglob(".*") if p.is_file()]
    out = subprocess.run(cmd + ["train", *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fold 0: already finished, skipped" in out.stderr
    assert layout.RunPaths(run_dir).fold(0).finished.stat().st_mtime_ns == first
    assert Run(run_dir).finished_folds() == [0, 1]
    assert files.read_json(run_dir / "summary.json")["folds_done"] == [0, 1]
    assert not [p for p in run_dir.rglob(".*") if p.is_file() and p not in leftovers]


@pytest.mark.slow
def test_bf16_trained_run_predicts_in_fp16_and_fp32(tmp_path, synth_dir, tiny_model_dir, monkeypatch):
    """A run trained under mixed_bfloat16 (TPU / Ampere+) predicts on a P100/T4 (float16) and a CPU (float32):
    the saved architecture carries no dtype policy, and the results agree within 2e-2 (fp16 has a 10-bit
    mantissa; the targets are sigmoid outputs in [0, 1])."""
    import keras

    from pipeline.run import predict

    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__mixed_precision="bfloat16", train__epochs=1)
    stages.folds(cfg)
    try:
        run_dir = stages.train(cfg)[0]
        assert files.read_json(run_dir / "run.json")["precision"] == "mixed_bfloat16"
        assert '"dtype"' not in json.dumps(json.loads((run_dir / "model.json").read_text())["config"]["backbone"]["config"])
        test_csv = cfg.data_file("test_file")
        out = {p: pd.read_csv(predict.predict_run(run_dir, test_csv, out_dir=tmp_path / p, reuse=False, precision=p))
               for p in ("none", "float16")}
        fp32, fp16 = (out[p][list(TARGETS)].to_numpy() for p in ("none", "float16"))
        assert np.isfinite(fp16).all() and 0 < np.abs(fp32 - fp16).max() < 2e-2  # fp16 really ran, and agrees

        real = predict.Predictor._fold  # a fold that overflows in float16 is recomputed in float32
        monkeypatch.setattr(predict.Predictor, "_fold", lambda self, *a, **k: real(self, *a, **k) * (
            np.nan if keras.mixed_precision.global_policy().name == "mixed_float16" else 1.0))
        again = pd.read_csv(predict.predict_run(run_dir, test_csv, out_dir=tmp_path / "retry", reuse=False,
                                                precision="float16"))[list(TARGETS)].to_numpy()
        assert np.isfinite(again).all() and np.abs(again - fp32).max() < 1e-5
    finally:
        keras.mixed_precision.set_global_policy("float32")
