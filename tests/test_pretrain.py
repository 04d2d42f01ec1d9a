"""Masked-LM pre-training (issue 14): masking statistics, text-only sources, the written model directory
loading for fine-tuning, resume after a kill."""
import os
import shutil
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
from pipeline.core.columns import TARGETS, TEXT_COLUMNS
from pipeline.data import tables
from pipeline.modeling import model
from pipeline.run.rundir import Run
from pipeline.text import masking, modeldir, tokenizer as tokenizer_lib

pytestmark = pytest.mark.backend  # run under JAX too (make jax-check)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return tokenizer_lib.load(tiny_model_dir)


@pytest.fixture(scope="module")
def windows(tok, synth_dir):
    """Generated texts where about a third of the words are glued to another word, so that the tiny vocabulary
    (which holds every generated word whole) splits them into several pieces."""
    train = pd.read_csv(synth_dir / "train.csv", keep_default_na=False)
    texts = list(dict.fromkeys(t for c in TEXT_COLUMNS for t in train[c] if t))
    rng = np.random.default_rng(0)
    words = [w.lower().strip(".?!") for t in texts for w in t.split()]
    docs = [" ".join(w + (str(rng.choice(words)) if rng.random() < 0.3 else "") for w in t.split()) for t in texts]
    return masking.windows(tok.encode_words(docs), tok, 64, whole_word=True)


def _masks(win, tok, n_batches=40, rate=0.15):
    rng = np.random.default_rng(0)
    replacements = masking.replacement_ids(tok.vocab_size, tok.special_ids)
    return [(rows, masking.mask_batch(win.token_ids[rows], win.word_ids[rows], rng, rate, tok.mask_id, replacements,
                                      masking.max_predictions(64, rate)))
            for rows in (rng.choice(len(win), 16, replace=False) for _ in range(n_batches))]


def test_masking_statistics(windows, tok):
    win = windows
    multi_piece = np.mean([np.bincount(w[w >= 0]).max() > 1 for w in win.word_ids])
    assert multi_piece > 0.5, "the test texts must have words of several pieces, or whole-word masking is untested"
    chosen = real = masked = swapped = kept = 0
    for rows, m in _masks(win, tok):
        for r, row in enumerate(rows):
            n = int(m["weights"][r].sum())
            pos = m["mask_positions"][r, :n]
            words = win.word_ids[row]
            assert (words[pos] >= 0).all(), "a special token or padding was chosen"
            assert (m["labels"][r, :n] == win.token_ids[row, pos]).all()  # the model predicts the original token
            picked = set(words[pos])
            assert set(np.flatnonzero(np.isin(words, list(picked)))) == set(pos), "a word was masked in part"
            new = m["token_ids"][r, pos]
            masked += int((new == tok.mask_id).sum())
            kept += int((new == win.token_ids[row, pos]).sum())
            swapped += int(((new != tok.mask_id) & (new != win.token_ids[row, pos])).sum())
            others = np.setdiff1d(np.arange(64), pos)
            assert (m["token_ids"][r, others] == win.token_ids[row, others]).all()  # nothing else changes
            assert not np.isin(new[new != tok.mask_id], list(tok.special_ids - {tok.mask_id})).any()
            chosen, real = chosen + n, real + int((words >= 0).sum())
    assert chosen / real == pytest.approx(0.15, abs=0.02)
    assert masked / chosen == pytest.approx(0.8, abs=0.03) and swapped / chosen == pytest.approx(0.1, abs=0.03)
    assert kept / chosen == pytest.approx(0.1, abs=0.03)  # a random swap may hit the original: counted as kept


def test_masks_repeat_for_a_seed_and_token_masking_ignores_words(windows, tok):
    again = _masks(windows, tok, n_batches=3)
    for (_, a), (_, b) in zip(_masks(windows, tok, n_batches=3), again):
        assert all((a[k] == b[k]).all() for k in a)
    encoded = [(list(range(5, 60)), [0] * 55)]  # one 55-piece "word": whole-word masking could never pick it
    per_token = masking.windows(encoded, tok, 64, whole_word=False)
    m = masking.mask_batch(per_token.token_ids, per_token.word_ids, np.random.default_rng(1), 0.15, tok.mask_id,
                           np.arange(5, 100), masking.max_predictions(64, 0.15))
    assert m["weights"].sum() == round(0.15 * 55)


def test_long_documents_become_several_windows(tok):
    win = masking.windows([(list(range(5, 205)), list(range(200)))], tok, 64, whole_word=True)
    assert len(win) == 4 and list(win.lengths) == [64, 64, 64, 200 - 3 * 62 + 2]
    assert (win.token_ids[:, 0] == tok.cls_id).all()
    kept = np.concatenate([win.token_ids[i, 1:win.lengths[i] - 1] for i in range(len(win))])
    assert (kept == np.arange(5, 205)).all()  # every token once, in order


def _pretrain_config(tmp, data_dir, model_dir, **sets):
    base = dict(pretrain__max_len=64, pretrain__steps=8, pretrain__batch_size=8, pretrain__checkpoint_every=4,
                pretrain__lr=2e-3, pretrain__verbose=0)
    return tiny_train_config(tmp, data_dir, model_dir, **{**base, **sets})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, synth_dir, tiny_model_dir):
    """A pre-training run on the generated texts whose train.csv labels are unreadable (text only is read)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    shutil.copytree(synth_dir, tmp / "data")
    train = pd.read_csv(tmp / "data" / "train.csv", keep_default_na=False)
    train[list(TARGETS)] = "not a label"
    train.to_csv(tmp / "data" / "train.csv", index=False)
    cfg = _pretrain_config(tmp, tmp / "data", tiny_model_dir)
    return cfg, stages.pretrain(cfg)[0]


def test_pretraining_reads_text_only_and_records_its_sources(pretrained):
    cfg, out = pretrained
    with pytest.raises(tables.DataError):  # the labels really are unreadable: no stage that reads them would run
        tables.load(cfg, "train")
    manifest = files.read_json(out / "pretrain.json")
    assert manifest["labels_read"] is False and manifest["masking"] == "word_ids"
    assert [s["split"] for s in manifest["sources"]] == ["train", "test"]
    assert manifest["sources"][0]["sha256"] == files.sha256_file(cfg.data_file("train_file"))
    assert manifest["sources"][0]["columns"] == list(TEXT_COLUMNS)
    assert manifest["steps"] == 8 and manifest["tokens_seen"] > 8 * 8 * 10 and manifest["masked_tokens"] > 0
    assert not layout.Pretrained(out).checkpoint_dir.exists() and not layout.Pretrained(out).staging.exists()
    assert stages.pretrain(cfg) == [out]  # done: a second call finds it current


def test_pretraining_changes_the_backbone_and_the_directory_fine_tunes(pretrained, tmp_path, synth_dir):
    import keras

    cfg, out = pretrained
    info = modeldir.inspect(out)
    assert info.layout == "keras_hub" and info.family == "bert" and info.has_weights
    assert tokenizer_lib.load(out).fingerprint == tokenizer_lib.load(cfg.path(cfg.model.path)).fingerprint
    keras.utils.set_random_seed(cfg.pretrain.seed)  # the weights pre-training started from
    start = model.load_backbone(cfg.path(cfg.model.path), random_init=True)
    after = model.load_backbone(out)
    moved = {v.path: np.abs(v.numpy() - w.numpy()).max() for v, w in zip(start.weights, after.weights)}
    assert len(moved) == len(start.weights)
    assert all(m > 0 for p, m in moved.items() if "pooled_dense" not in p)  # all trained but the unused pooler
    student = tiny_train_config(tmp_path, synth_dir, out, model__random_init="false", train__epochs=1,
                                train__folds="0")
    stages.folds(student)
    run_dir = stages.train(student)[0]
    assert Run(run_dir).finished_folds() == [0]
    recorded = files.read_json(run_dir / "run.json")["pretrained"]
    assert recorded["labels_read"] is False and recorded["steps"] == 8
    assert recorded["sources"] == files.read_json(out / "pretrain.json")["sources"]


def test_bad_text_sources_and_changed_settings_are_refused(pretrained, tmp_path):
    cfg, out = pretrained
    (tmp_path / "labels-only.csv").write_text("qa_id,answer_helpful\n1,0.5\n")
    cfg.pretrain.extra_csv = [str(tmp_path / "labels-only.csv")]
    try:
        with pytest.raises(tables.DataError, match=r"labels-only.csv: none of the text columns"):
            stages.pretrain(cfg)
        cfg.pretrain.extra_csv = []
        cfg.pretrain.steps = 9
        with pytest.raises(ValueError, match="holds a pre-training with other settings"):
            stages.pretrain(cfg)
    finally:
        cfg.pretrain.extra_csv, cfg.pretrain.steps = [], 8


@pytest.mark.slow
def test_pretraining_resumes_after_kill_as_if_never_stopped(tmp_path, synth_dir, tiny_model_dir):
    sets = {"data.dir": synth_dir, "output.dir": tmp_path / "out", "model.path": tiny_model_dir,
            "model.random_init": "true", "pretrain.max_len": 64, "pretrain.steps": 30, "pretrain.batch_size": 8,
            "pretrain.checkpoint_every": 3, "pretrain.lr": 2e-3, "pretrain.verbose": 2}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(ROOT / "run.py"), "pretrain", *args]
    target = layout.Pretrained(tmp_path / "out" / "pretrained" / f"{tiny_model_dir.name}-mlm-s42")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (target.state.is_file() and files.read_json(target.state)["step"] >= 3) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = files.read_json(target.state)["step"]
    assert 3 <= killed_at < 30 and not target.manifest.is_file()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resumed from the checkpoint at step {killed_at}" in out.stderr
    whole = subprocess.run([*cmd, "--set", f"output.dir={tmp_path / 'whole'}"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed, straight = (files.read_json(d / "pretrained" / target.root.name / "pretrain.json")
                         for d in (tmp_path / "out", tmp_path / "whole"))
    assert resumed["tokens_seen"] == straight["tokens_seen"] and resumed["masked_tokens"] == straight["masked_tokens"]
    a, b = (model.load_backbone(d / "pretrained" / target.root.name) for d in (tmp_path / "out", tmp_path / "whole"))
    assert max(np.abs(x - y).max() for x, y in zip(a.get_weights(), b.get_weights())) < 1e-5
