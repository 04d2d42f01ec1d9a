"""What the pipeline guarantees (README): nothing lost, nothing silently wrong, names confined to their roots."""
import argparse
import dataclasses
import errno
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import holding_process, tiny_train_config
from pipeline.cli import stages, table
from pipeline.core import config, files, layout
from pipeline.core.errors import UnsafePath, UsageError
from pipeline.data import folds as folds_lib, tables
from pipeline.run.rundir import Run, RunError
from pipeline.text import encode


def _two_of_three_config(root, model_dir):
    return tiny_train_config(root, root / "data", model_dir, folds__n_folds=3, train__folds="0,1", train__epochs=1)


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory, synth_dir, tiny_model_dir):
    root = tmp_path_factory.mktemp("two-of-three")
    shutil.copytree(synth_dir, root / "data")
    cfg = _two_of_three_config(root, tiny_model_dir)
    stages.folds(cfg)
    stages.train(cfg)
    return root


@pytest.fixture
def two_of_three(_trained_once, tmp_path, tiny_model_dir):
    """Folds 0 and 1 of a 3-fold split trained, in a copy of its own (data included), so tests may damage it."""
    shutil.copytree(_trained_once, tmp_path, dirs_exist_ok=True)
    return _two_of_three_config(tmp_path, tiny_model_dir)


def test_output_dir_moves_every_artifact_with_it(tmp_path):
    cfg = config.load(None, [f"output.dir={tmp_path / 'other'}"])
    assert cfg.submission_file == tmp_path / "other" / "submission.csv"
    assert cfg.folds_file == tmp_path / "other" / "folds.csv" and cfg.cache_dir == tmp_path / "other" / "cache"
    assert cfg.run_dir.parent == tmp_path / "other" / "runs"


def test_a_changed_split_is_refused_everywhere(two_of_three):
    cfg = two_of_three
    cfg.folds.seed = 7
    stages.folds(cfg, force=True)  # a new split behind the run's back
    cfg.train.folds = [2]
    for stage in (stages.train, stages.validate, stages.ensemble):
        with pytest.raises(RunError, match=r"folds.csv changed since .* was trained on it"):
            stage(cfg)
    assert Run(cfg.run_dir).finished_folds() == [0, 1]  # fold 2 was not trained on the other split


def test_a_summary_killed_before_writing_is_rebuilt(two_of_three):
    cfg = two_of_three
    summary = cfg.run_dir / "summary.json"
    files.write_json(summary, {**files.read_json(summary), "folds_done": [0]})
    stages.train(cfg)
    assert files.read_json(summary)["folds_done"] == [0, 1]


def test_damaged_weights_are_named_before_validate_or_package_use_them(two_of_three, tmp_path):
    cfg = two_of_three
    weights = cfg.run_dir / "fold1" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for call in (lambda: stages.validate(cfg), lambda: stages.package(cfg, out=str(tmp_path / "bundle"))):
        with pytest.raises(RunError, match=r"fold1/model.weights.h5 is damaged .* train --folds 1"):
            call()
    assert not (tmp_path / "bundle").exists()
    finished = cfg.run_dir / "fold1" / "finished.json"  # a run without a recorded hash: the load fails clearly
    files.write_json(finished, {k: v for k, v in files.read_json(finished).items() if k != "weights_sha256"})
    with pytest.raises(RunError, match=r"fold1/model.weights.h5 cannot be loaded"):
        Run(cfg.run_dir).load_fold(1)


def test_one_trainer_per_run_and_stale_temp_files_go(two_of_three):
    run_dir = two_of_three.run_dir
    stale = run_dir / "fold0" / f".model.weights.h5{files.TEMP_MARK}x1y2.weights.h5"
    stale.write_bytes(b"half a file")
    mine = [run_dir / ".notes.md", run_dir / "tokenizer" / ".gitkeep"]  # a user's dotfiles are not the pipeline's
    for p in mine:
        p.write_text("keep me")
    with Run(run_dir).lock():
        assert not stale.exists() and all(p.read_text() == "keep me" for p in mine)
        with pytest.raises(RunError, match=r"is being written by pid \d+"):
            with Run(run_dir).lock():
                pass
    with Run(run_dir).lock():  # released
        pass
    assert not (run_dir / ".lock").exists()  # the lock goes with its release


def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(two_of_three, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    lock = Run(two_of_three.run_dir).lock_file
    lock.symlink_to(target)
    with pytest.raises(UnsafePath, match=r"\.lock is a symbolic link"):
        with Run(two_of_three.run_dir).lock():
            pass
    assert target.read_text() == "keep me"
    lock.unlink()


def test_moving_only_file_locations_still_resumes(two_of_three, tmp_path):
    cfg = two_of_three
    shutil.copy(cfg.folds_file, tmp_path / "moved-folds.csv")
    shutil.copytree(cfg.path(cfg.model.path), tmp_path / "moved-model")  # the same backbone somewhere else
    cfg.folds.file, cfg.encode.cache_dir = str(tmp_path / "moved-folds.csv"), str(tmp_path / "moved-cache")
    cfg.model.path = str(tmp_path / "moved-model")
    cfg.train.folds = [2]
    stages.train(cfg)
    assert Run(cfg.run_dir).finished_folds() == [0, 1, 2]


def test_a_run_never_changes_its_tokenizer(two_of_three, tmp_path):
    cfg = two_of_three
    other = tmp_path / "other-model"
    shutil.copytree(cfg.path(cfg.model.path), other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = list(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two words trade ids: same sizes, other inputs
    (other / "tokenizer.json").write_text(json.dumps(spec))
    run = Run(cfg.run_dir)
    before = (run.info.read_bytes(), (run.tokenizer / "tokenizer.json").read_bytes())
    cfg.model.path, cfg.train.folds = str(other), [2]
    with pytest.raises(RunError, match=r"trained from another backbone or tokenizer .*tokenizer_fingerprint"):
        stages.train(cfg)
    assert run.finished_folds() == [0, 1] and (run.info.read_bytes(), (run.tokenizer / "tokenizer.json").read_bytes()) == before


def test_a_damaged_run_record_is_named_not_a_traceback(two_of_three):
    cfg = two_of_three
    info = cfg.run_dir / "run.json"
    info.write_text(info.read_text()[:40])
    cfg.train.folds = [2]
    for stage in (stages.train, stages.validate):
        with pytest.raises(RunError, match=r"run.json is damaged") as err:
            stage(cfg)
        assert str(err.value).count(" is damaged") == 1 and str(err.value).count(";") == 1  # one cause, one remedy
    model = cfg.run_dir / "model.json"
    model.write_text(model.read_text()[:40])
    with pytest.raises(RunError, match=r"model.json is damaged"):
        Run(cfg.run_dir).load_fold(0)


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with files.staged_dir(dest) as staging:
            (staging / "new.txt").write_text("half")
            raise OSError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (dest / "old.txt").read_text() == "old"
    with files.staged_dir(dest) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in dest.iterdir()] == ["new.txt"]


def test_test_and_sample_ids_are_checked_before_any_training(two_of_three):
    cfg = two_of_three
    sample_path = cfg.data_file("sample_submission_file")
    sample = pd.read_csv(sample_path)
    sample.iloc[1:].to_csv(sample_path, index=False)
    cfg.train.folds = [2]
    with pytest.raises(tables.DataError, match=r"test.csv and .*sample_submission.csv disagree on qa_id: 0 id\(s\) "
                                             r"only in the sample submission .* 1 only in the test file"):
        stages.train(cfg)
    assert Run(cfg.run_dir).finished_folds() == [0, 1]


@pytest.mark.parametrize("content, message", [
    ("qa_id,question_title,question_body,answer\n1000.5,t,b,a\n", r"'qa_id' must be integers; row 0 holds '1000.5'"),
    ("qa_id,question_title,question_body,answer\n", "no rows"),
    ("qa_id,question_title,question_body,answer\n9223372036854775808,t,b,a\n", r"must fit a 64-bit integer \(.*\); row 0"),
    ("qa_id,question_title,question_body,answer\n-9223372036854775809,t,b,a\n", "must fit a 64-bit integer"),
    ("qa_id,question_title,question_body,answer\n1e3,t,b,a\n", "must be integers; row 0 holds '1e3'"),
])
def test_bad_ids_and_empty_files(tmp_path, content, message):
    (tmp_path / "x.csv").write_text(content)
    with pytest.raises(tables.DataError, match=message):
        tables.read_csv(tmp_path / "x.csv", "predict")


def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, synth_dir, tiny_model_dir, caplog):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir)
    encoder = encode.Encoder.for_model(cfg)
    frame = tables.load(cfg, "test")
    first, path = encoder.cached(frame, "test")
    path.write_bytes(path.read_bytes()[:100])
    again, path2 = encoder.cached(frame, "test")
    assert path2 == path and np.array_equal(first.arrays["token_ids"], again.arrays["token_ids"])
    assert f"{path} is damaged" in caplog.text
    with pytest.raises(ValueError, match="nothing to encode"):
        dataclasses.replace(encoder, cache_dir=tmp_path / "c2").cached(frame.iloc[:0], "test")


@pytest.mark.parametrize("override, message", [
    ("train.run_name=../../../escape", "plain name"), ("train.run_name=/abs/run", "plain name"),
    ("ensemble.name=../x", "plain name"), ("train.run_name=.hidden", "plain name"),
    ("kaggle.wheels=--index-url=http://evil", "not a pip option"),
    ("encode.title_weight=0", None), ("encode.answer_weight=-5", "expected weights >= 0"),
    ("train.lr_backbone=-1e-5", "train.lr_backbone"), ("train.warmup=1.5", r"train.warmup = 1.5; expected a value in \[0, 1\]"),
    ("model.dropout=1.0", r"model.dropout"), ("train.weight_decay=-0.1", "train.weight_decay"),
])
def test_bad_values_are_refused_with_the_key(override, message):
    if message is None:  # a zero weight leaves the field out: allowed
        config.load(None, [override])
        return
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, [override])


def test_budgets_that_leave_a_field_nothing():
    with pytest.raises(config.ConfigError, match="all-zero|positive sum"):
        config.load(None, ["encode.title_weight=0", "encode.question_weight=0", "encode.answer_weight=0"])
    with pytest.raises(config.ConfigError, match=r"encode.max_len = 16 leaves \['title_weight'\] no token"):
        config.load(None, ["encode.max_len=16", "encode.title_weight=1", "encode.question_weight=500",
                           "encode.answer_weight=500"])


def test_folds_flag_must_be_numbers():
    args = argparse.Namespace(overrides=[], folds="a,b", seed=None, n_folds=None, config=None, stage="train")
    with pytest.raises(config.ConfigError, match=r"--folds a,b: expected comma-separated fold numbers"):
        table.build_config(args)


def test_hostile_run_name_writes_nothing_outside_output(tmp_path):
    with pytest.raises(config.ConfigError):
        config.load(None, [f"output.dir={tmp_path}", "train.run_name=../../escape"])
    ok = config.load(None, [f"output.dir={tmp_path}", "train.run_name=ok-name_1.2"])
    assert ok.run_dir.resolve().parent == (tmp_path / "runs").resolve()


def test_a_changed_model_description_is_refused_before_its_weights_load(two_of_three):
    cfg = two_of_three
    model = cfg.run_dir / "model.json"
    description = json.loads(model.read_text())
    assert description["config"]["pooling"] == "mean"
    description["config"]["pooling"] = "cls"  # loads the same weights, predicts something else
    model.write_text(json.dumps(description))
    with pytest.raises(RunError, match=r"model.json changed since fold 0 was trained"):
        Run(cfg.run_dir).load_fold(0)
    with pytest.raises(RunError, match=r"model.json changed since fold 0 was trained"):
        stages.validate(cfg)


def test_a_changed_target_coding_is_refused(two_of_three):
    cfg = two_of_three
    coding = cfg.run_dir / "fold1" / "targets.json"
    coding.write_text(coding.read_text().replace("raw", "rank"))
    with pytest.raises(RunError, match=r"fold1/targets.json is missing or changed since fold 1 was trained"):
        Run(cfg.run_dir).load_fold(1)


def test_cached_rows_are_checked_against_the_data(tmp_path, synth_dir, tiny_model_dir, caplog):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir)
    encoder = encode.Encoder.for_model(cfg)
    frame = tables.load(cfg, "test")
    first, path = encoder.cached(frame, "test")
    order = np.random.default_rng(0).permutation(len(frame))  # a valid cache file, rows in another order
    shuffled = encode.Encoded(first.qa_id[order], {k: v[order] for k, v in first.arrays.items()},
                              first.seq_lengths[order], first.field_lengths[order], first.prefixes,
                              first.tokenizer_fingerprint)
    shuffled.save(path)
    again, _ = encoder.cached(frame, "test")
    assert "holds other rows or another order" in caplog.text
    assert np.array_equal(again.qa_id, first.qa_id) and np.array_equal(again.arrays["token_ids"], first.arrays["token_ids"])


@pytest.mark.parametrize("label, message", [(-1, "fold label -1"), ("x", "must be integers"), (2.5, "must be integers")])
def test_fold_labels_are_checked(tmp_path, synth_dir, tiny_model_dir, label, message):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir)
    stages.folds(cfg)
    table = pd.read_csv(cfg.folds_file).astype({"fold": object})
    table.loc[3, "fold"] = label
    table.to_csv(cfg.folds_file, index=False)
    with pytest.raises(folds_lib.FoldsError, match=message):
        folds_lib.read(cfg, tables.load(cfg, "train"))


def test_a_fold_without_rows_is_refused_before_training(tmp_path, synth_dir, tiny_model_dir):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, folds__n_folds=3)
    stages.folds(cfg)
    table = pd.read_csv(cfg.folds_file)
    table.loc[table["fold"] == 1, "fold"] = 0
    table.to_csv(cfg.folds_file, index=False)
    with pytest.raises(folds_lib.FoldsError, match=r"folds \[1\] hold no rows"):
        stages.train(cfg)
    assert not (cfg.run_dir / "run.json").exists() and not list(cfg.run_dir.glob("fold*"))


def test_a_missing_or_folder_input_is_one_clear_line(two_of_three, tmp_path):
    cfg = two_of_three
    with pytest.raises(tables.DataError, match="predict file not found"):
        stages.predict(cfg, input_csv=str(tmp_path / "nope.csv"))
    with pytest.raises(tables.DataError, match="is a folder; expected a CSV file"):
        stages.predict(cfg, input_csv=str(tmp_path))


@pytest.mark.parametrize("name", ["../../victim", ".hidden", "a/b", "", "/abs"])
def test_names_read_from_files_stay_in_their_folder(tmp_path, name):
    # a run name in a bundle's bundle.json, a kernel handle to collect: each becomes a folder, so each is confined
    with pytest.raises(UsageError, match="expected a plain name"):
        layout.Bundle(tmp_path).run(name)
    with pytest.raises(UsageError, match="expected a plain name"):
        layout.KernelWork(tmp_path).predictions(name)
    with pytest.raises(UsageError, match="expected a plain name"):
        layout.collected(config.load(None, [f"output.dir={tmp_path}"]), f"someone/{name}")
    assert not list(tmp_path.iterdir())


def test_a_refused_write_names_the_file_asked_for(tmp_path):
    target = tmp_path / "no-such-dir-as-file"
    target.write_text("a file where a folder should be")
    with pytest.raises(OSError) as err:
        files.write_text(target / "x.json", "{}")
    assert str(target) in str(err.value.filename) and files.TEMP_MARK not in str(err.value)
    with pytest.raises(OSError) as err:
        files.write_text("/proc/quest.json", "{}")  # mkstemp's own error: named as the target, not the temp name
    assert err.value.filename == "/proc/quest.json"


def test_a_damaged_json_artifact_is_named_and_a_damaged_stamp_is_remade(tmp_path):
    from pipeline.core.errors import DamagedArtifact

    record = tmp_path / "summary.json"
    record.write_text('{"folds_done": [0, 1')
    with pytest.raises(DamagedArtifact, match=r"summary.json is damaged"):
        files.read_json(record)
    out = files.write_text(tmp_path / "out.csv", "x\n")
    assert not files.is_current(record, {"a": 1}, out)  # not current: the stage writes it again
    files.write_json(record, {"stamp": {"a": 1}})
    assert files.is_current(record, {"a": 1}, out)


def test_a_full_disk_is_one_line_naming_the_file_and_the_space_it_needs(two_of_three, monkeypatch):
    """Saving a fold's weights on a full disk crashed HDF5 (exit 139): the space is checked first, and the fold
    is not finished. An encoder's writer that names no file (numpy's zip writer) gets the cache file's name."""
    cfg = two_of_three
    real_usage = files.shutil.disk_usage
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=4096))
    config.override(cfg, "train.folds=[2]")
    with pytest.raises(OSError) as err:
        stages.train(cfg)
    line = table.user_message(err.value)
    assert line.startswith(str(Run(cfg.run_dir).fold(2).weights)) and "MiB are free" in line and "\n" not in line
    assert not Run(cfg.run_dir).fold(2).finished.exists()
    monkeypatch.undo()

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(encode.np, "savez", full)
    encoder = dataclasses.replace(encode.Encoder.for_model(cfg), cache_dir=cfg.cache_dir / "fresh")
    with pytest.raises(OSError) as err:
        encoder.cached(tables.load(cfg, "test"), "test")
    assert table.user_message(err.value).startswith(str(cfg.cache_dir / "fresh")) and ".npz: No space" in \
        table.user_message(err.value)


def test_ensemble_and_predict_never_read_a_run_another_process_is_writing(two_of_three):
    cfg = two_of_three
    writer = holding_process("from pipeline.run.rundir import Run", f"lock = Run({str(cfg.run_dir)!r}).lock()",
                     "lock.__enter__()")
    try:
        for stage in (lambda: stages.ensemble(cfg), lambda: stages.predict(cfg)):
            with pytest.raises(RunError, match=rf"{cfg.run_dir} is being written by pid {writer.pid} "):
                stage()
    finally:
        writer.kill()
        writer.wait()
    assert stages.ensemble(cfg)  # the writer gone (killed): its lock went with it


def test_two_encoders_on_one_cache_both_finish_with_the_same_whole_file(tmp_path, synth_dir, tiny_model_dir):
    """Two `encode` processes at once on one cache folder: each writes under its own temp name and renames; both
    succeed, the cache file loads, no temp file is left."""
    import subprocess
    import sys

    from conftest import ROOT

    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir)
    args = [sys.executable, str(ROOT / "run.py"), "encode", "-q"] + [f"--set={k}={v}" for k, v in (
        ("data.dir", synth_dir), ("encode.cache_dir", cfg.cache_dir), ("output.dir", tmp_path / "out"),
        ("model.path", tiny_model_dir), ("encode.max_len", 128), ("model.random_init", "true"))]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-800:] for _, e in outs]
    assert outs[0][0] == outs[1][0]  # both name the same cache files
    for path in outs[0][0].split():
        assert encode.Encoded.load(path).qa_id.size
    assert not [p for p in cfg.cache_dir.rglob("*") if files.TEMP_MARK in p.name]


def test_ids_are_read_as_exact_integers_never_through_floats(tmp_path):
    (tmp_path / "x.csv").write_text("qa_id,question_title,question_body,answer\n9007199254740993,t,b,a\n7,t,b,a\n"
                                    "12.0,t,b,a\n")
    assert tables.read_csv(tmp_path / "x.csv", "predict")[tables.ID].tolist() == [9007199254740993, 7, 12]


def test_a_folds_file_listing_one_id_twice_is_refused(two_of_three):
    cfg = two_of_three
    table = pd.read_csv(cfg.folds_file)
    pd.concat([table, table.iloc[[3]].assign(fold=(table.fold.iloc[3] + 1) % 3)]).to_csv(cfg.folds_file, index=False)
    with pytest.raises(folds_lib.FoldsError, match=rf"listed twice, e.g. {table.qa_id.iloc[3]}"):
        folds_lib.read(cfg, tables.load(cfg, "train"))


def test_folds_are_exactly_fold0_to_fold_n_minus_1(two_of_three, tmp_path):
    """A user's fold0.bak is no fold (every stage used to crash on it); a copied fold7 in a 3-fold run is refused
    by every reader instead of counting fold 0 twice; a fold holding another fold's predictions is refused."""
    cfg = two_of_three
    run = Run(cfg.run_dir)
    shutil.copytree(run.fold(0).root, run.root / "fold0.bak")
    assert run.finished_folds() == [0, 1]
    stages.validate(cfg)
    shutil.copytree(run.fold(0).root, run.root / "fold7")
    for stage in (lambda: stages.validate(cfg), lambda: stages.ensemble(cfg),
                  lambda: stages.package(cfg, out=str(tmp_path / "b"))):
        with pytest.raises(RunError, match=r"fold7 are not folds of this 3-fold run \(fold0 .. fold2\)"):
            stage()
    shutil.rmtree(run.root / "fold7")
    shutil.copy(run.fold(0).oof, run.fold(1).oof)
    with pytest.raises(RunError, match=r"out-of-fold rows of folds \[0, 1\] overlap"):
        stages.validate(cfg)


def test_a_run_refuses_changed_labels_text_or_text_settings_between_commands(two_of_three):
    """Labels changed in train.csv (same ids and texts) no longer rescore every fold: extending the run, validate
    and ensemble refuse; a changed data.clean_text is refused and config.toml is left as it was."""
    cfg = two_of_three
    path = cfg.data_file("train_file")
    original = path.read_text()
    frame = pd.read_csv(path)
    frame["answer_helpful"] = 1.0 - frame["answer_helpful"]
    frame.to_csv(path, index=False)
    cfg.train.folds = [2]
    for stage in (stages.train, stages.validate, stages.ensemble):
        with pytest.raises(RunError, match=r"train file's labels changed since .* folds \[0, 1\] were trained"):
            stage(cfg)
    path.write_text(original)
    config_before = Run(cfg.run_dir).config.read_text()
    config.override(cfg, "data.clean_text=false")
    with pytest.raises(RunError, match=r"other settings \{'data.clean_text': \(True, False\)\}"):
        stages.train(cfg)
    assert Run(cfg.run_dir).config.read_text() == config_before


def test_a_command_that_makes_no_fold_leaves_the_runs_records_alone(two_of_three):
    """A probe (train.max_steps) on a run trains nothing: run.json and config.toml stay byte for byte; each fold
    records its own provenance (versions, command, commit) when it finishes."""
    cfg = two_of_three
    run = Run(cfg.run_dir)
    before = {p: p.read_bytes() for p in (run.info, run.config)}
    config.override(cfg, "train.folds=[2]")
    config.override(cfg, "train.max_steps=1")
    stages.train(cfg)
    assert run.probe(2).is_file() and {p: p.read_bytes() for p in before} == before
    for k in run.finished_folds():
        made = files.read_json(run.fold(k).metrics)["provenance"]
        assert set(made["versions"]) >= {"keras", "keras-hub"} and made["command"] and made["git_commit"]


@pytest.mark.parametrize("sets, message", [
    ({"model__pooling": "weighted", "model__pool_layers": 5}, r"pool_layers = 5: the backbone .* has 2 layers; "
                                                               r"expected 1 \.\. 2"),
    ({"train__grad_accum": 8}, r"= 128 rows per optimizer step, more than the \d+ training rows of the smallest fold"),
])
def test_settings_beyond_the_backbone_or_the_data_are_refused_before_training(tmp_path, synth_dir, tiny_model_dir,
                                                                              sets, message):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, folds__n_folds=2, **sets)
    stages.folds(cfg)
    with pytest.raises(UsageError, match=message):
        stages.train(cfg)
    assert not Run(cfg.run_dir).finished_folds()


def test_eval_rows_of_one_is_refused_with_the_valid_range():
    with pytest.raises(config.ConfigError, match=r"postprocess.eval_rows.*0 \(all held rows\) or at least 20"):
        config.load(None, ["postprocess.eval_rows=1"])


def test_a_run_refuses_folds_from_another_pseudo_label_set(two_of_three):
    cfg = two_of_three
    info = Run(cfg.run_dir).info
    files.write_json(info, {**files.read_json(info), "pseudo": {"source": "x", "weight": 1.0, "stamp": "made-before"}})
    cfg.train.folds = [2]
    with pytest.raises(RunError, match="another pseudo-label set .*made-before"):
        stages.train(cfg)


def test_a_swap_killed_between_its_two_renames_is_finished_or_undone(tmp_path):
    """staged_dir swaps by renames only (old -> aside, new -> place); the next writer puts back an old folder a
    kill left aside with nothing in place, or deletes it when the new one is in place."""
    dest = tmp_path / "bundle"
    with files.staged_dir(dest) as staging:
        (staging / "v1").write_text("1")
    layout.aside(dest).parent.mkdir(exist_ok=True)
    dest.rename(layout.aside(dest))  # killed after the first rename: the old folder aside, nothing in place
    files.settle_swap(dest)
    assert (dest / "v1").is_file() and not layout.aside(dest).exists()
    with files.staged_dir(dest) as staging:
        (staging / "v2").write_text("2")
        layout.aside(dest).mkdir()  # killed after both renames, before the delete: both there
        (layout.aside(dest) / "v1").write_text("1")
    files.settle_swap(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"] and (dest / "v2").is_file()
    real_rename, calls = files.os.rename, []

    def dies_on_second(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between the two renames
        return real_rename(a, b)

    files.os.rename = dies_on_second
    try:
        with pytest.raises(KeyboardInterrupt):
            with files.staged_dir(dest) as staging:
                (staging / "v3").write_text("3")
    finally:
        files.os.rename = real_rename
    assert not dest.exists() and (layout.aside(dest) / "v2").is_file()
    with files.staged_dir(dest) as staging:  # the next writer first puts the old folder back, then swaps
        assert (dest / "v2").is_file()
        (staging / "v4").write_text("4")
    assert [p.name for p in dest.iterdir()] == ["v4"] and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_no_link_inside_a_run_is_read_or_written_through(two_of_three, tmp_path):
    """A run's report/ or predictions/ folder made a link (to somewhere else on the disk) is refused by every
    stage that reads or writes the run, naming it; nothing is written where it points."""
    cfg = two_of_three
    run = Run(cfg.run_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name, stage in (("report", stages.validate), ("predictions", stages.predict), ("predictions", stages.ensemble)):
        shutil.rmtree(run.root / name, ignore_errors=True)
        (run.root / name).symlink_to(elsewhere)
        with pytest.raises(UnsafePath, match=f"{name} is a symbolic link"):
            stage(cfg)
        (run.root / name).unlink()
    assert not list(elsewhere.iterdir())


def test_a_prediction_made_before_a_fold_was_trained_again_is_not_current(two_of_three):
    cfg = two_of_three
    run = Run(cfg.run_dir)
    test_csv = cfg.data_file("test_file")
    stages.predict(cfg)
    assert run.current_prediction(test_csv) is not None
    finished = run.fold(1).finished
    files.write_json(finished, {**files.read_json(finished), "weights_sha256": "0" * 64})  # fold 1 trained again
    assert run.current_prediction(test_csv) is None
