import numpy as np
import pandas as pd
import pytest

from conftest import make_config
from pipeline.core import files
from pipeline.data import folds, tables


def _same_question_same_fold(train, fold, key="question_body"):
    return pd.Series(fold).groupby(train[key].to_numpy()).nunique().max() == 1


@pytest.mark.parametrize("stratify", [False, True])
def test_groups_never_split_and_file_is_reproducible(tmp_path, synth_dir, stratify):
    cfg = make_config(tmp_path, synth_dir, folds__n_folds=3, folds__stratify=str(stratify).lower())
    train = tables.load(cfg, "train")
    path, meta = folds.make(cfg, train)
    fold = folds.read(cfg, train)
    assert _same_question_same_fold(train, fold) and set(fold) == {0, 1, 2}
    first = path.read_bytes()
    path.unlink()
    folds.make(cfg, train)
    assert path.read_bytes() == first  # same seed, same bytes
    assert files.read_json(meta)["seed"] == cfg.folds.seed


def test_seed_changes_the_split(tmp_path, synth_dir):
    a = make_config(tmp_path / "a", synth_dir, folds__seed=1)
    b = make_config(tmp_path / "b", synth_dir, folds__seed=2)
    train = tables.load(a, "train")
    folds.make(a, train), folds.make(b, train)
    assert (folds.read(a, train) != folds.read(b, train)).any()


def test_existing_split_with_other_settings_is_not_overwritten(tmp_path, synth_dir):
    cfg = make_config(tmp_path, synth_dir)
    train = tables.load(cfg, "train")
    folds.make(cfg, train)
    cfg.folds.seed += 1
    with pytest.raises(folds.FoldsError, match="already exists with other settings"):
        folds.make(cfg, train)
    folds.make(cfg, train, force=True)
    assert files.read_json(cfg.folds_file.with_suffix(".json"))["seed"] == cfg.folds.seed


def test_read_rejects_a_split_of_other_data(tmp_path, synth_dir):
    cfg = make_config(tmp_path, synth_dir)
    train = tables.load(cfg, "train")
    with pytest.raises(folds.FoldsError, match="run `python run.py folds` first"):
        folds.read(cfg, train)
    folds.make(cfg, train)
    with pytest.raises(folds.FoldsError, match="does not match the train file"):
        folds.read(cfg, train.iloc[:-3])


def test_real_rows_keep_questions_together(tmp_path, toy_dir):
    cfg = make_config(tmp_path, toy_dir, toy=True, folds__n_folds=5)
    train = tables.load(cfg, "train")
    folds.make(cfg, train)
    assert _same_question_same_fold(train, folds.read(cfg, train))


def test_real_train_rows_keep_questions_together(tmp_path, real_dir):
    cfg = make_config(tmp_path, real_dir)
    train = tables.load(cfg, "train")
    folds.make(cfg, train)
    fold = folds.read(cfg, train)
    assert _same_question_same_fold(train, fold)
    sizes = np.bincount(fold)
    assert sizes.min() > 0.9 * sizes.max()


def test_the_inner_split_holds_out_whole_questions_seeded():
    """train.keep = inner: about `share` of a fold's training rows, whole question groups, drawn by the seed."""
    groups = np.repeat(np.arange(60), np.tile([1, 2, 3], 20))  # 120 rows, 60 questions of 1-3 answers
    rows = np.flatnonzero(groups % 5 != 0)  # a fold's training rows
    fit, inner = folds.inner_split(groups, rows, 0.2, seed=7)
    assert sorted(np.concatenate([fit, inner]).tolist()) == rows.tolist()
    assert not set(groups[fit]) & set(groups[inner])  # no question on both sides
    assert 0.2 * len(rows) <= len(inner) < 0.2 * len(rows) + 3  # whole questions: at most one group over
    again, other = folds.inner_split(groups, rows, 0.2, seed=7)[1], folds.inner_split(groups, rows, 0.2, seed=8)[1]
    assert again.tolist() == inner.tolist() and other.tolist() != inner.tolist()
    with pytest.raises(folds.FoldsError, match="inner_share"):
        folds.inner_split(np.zeros(10, int), np.arange(10), 0.2, seed=0)  # one question cannot be split
