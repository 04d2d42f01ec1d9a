"""Leak-free pseudo-labels (issue 14): fold k's labels come from teacher fold k alone; a student on another
split is refused; pseudo rows join a fold's training rows, never its validation rows."""
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_train_config
from pipeline.cli import stages
from pipeline.core import files, layout
from pipeline.core.columns import ID, TARGETS
from pipeline.data import folds as folds_lib, tables
from pipeline.modeling import targets
from pipeline.run import predict


@pytest.fixture(scope="module")
def unlabeled(trained, tmp_path_factory):
    """Test rows that ask no train question, plus copies (new ids) of three fold-0 train rows: questions fold 0
    holds out."""
    cfg, _ = trained
    test = tables.read_csv(cfg.data_file("test_file"), "test")
    train = tables.read_csv(cfg.data_file("train_file"), "train")
    test = test[~test["question_body"].isin(train["question_body"])]
    fold = folds_lib.read(cfg, tables.load(cfg, "train"))
    copies = train.loc[np.flatnonzero(fold == 0)[:3], list(test.columns)].copy()
    copies[ID] = np.arange(3) + 10 ** 6
    path = tmp_path_factory.mktemp("unlabeled") / "unlabeled.csv"
    pd.concat([test, copies]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def pseudo_set(trained, unlabeled):
    cfg, (teacher, _) = trained
    return stages.pseudo(cfg, teachers=[str(teacher)], input_csv=str(unlabeled))[0]


@pytest.mark.backend  # under JAX: both trained runs (the dual-tower one too), pseudo-labels, predict
def test_fold_k_labels_come_from_teacher_fold_k_only(trained, unlabeled, pseudo_set):
    cfg, (teacher, _) = trained
    predictor = predict.Predictor.of(teacher, cfg.cache_dir)
    rows = predictor.rows(tables.read_csv(unlabeled, "predict"))
    by_fold = dict(predictor.fold_predictions(rows, [0, 1]))
    manifest = files.read_json(layout.Pseudo(pseudo_set).manifest)
    assert manifest["folds"] == [0, 1] and manifest["stamp"]["folds_fingerprint"] == folds_lib.fingerprint(cfg)
    for k, other in ((0, 1), (1, 0)):
        labels = pd.read_csv(layout.Pseudo(pseudo_set).fold(k)).set_index(ID).loc[rows[ID], list(TARGETS)].to_numpy()
        assert np.allclose(labels, by_fold[k], atol=1e-6)  # teacher fold k, which never trained on fold k's rows
        assert not np.allclose(labels, by_fold[other], atol=1e-3)  # not the fold that did, nor their mean
        assert not np.allclose(labels, (by_fold[0] + by_fold[1]) / 2, atol=1e-3)
    assert stages.pseudo(cfg, teachers=[str(teacher)], input_csv=str(unlabeled)) == [pseudo_set]  # current


def test_a_student_on_another_split_or_missing_folds_is_refused(trained, pseudo_set, tmp_path):
    cfg, _ = trained
    student = tiny_train_config(tmp_path, cfg.path(cfg.data.dir), cfg.path(cfg.model.path), folds__seed=7,
                                train__pseudo=str(pseudo_set))
    stages.folds(student)
    with pytest.raises(ValueError, match=r"trained on another split .* leak"):
        stages.train(student)
    three = tiny_train_config(tmp_path / "three", cfg.path(cfg.data.dir), cfg.path(cfg.model.path), folds__n_folds=3,
                              train__pseudo=str(pseudo_set))
    stages.folds(three)
    with pytest.raises(ValueError, match="another split"):  # 3 folds: another fingerprint too
        stages.train(three)


def test_pseudo_rows_train_a_fold_but_never_validate_it(trained, pseudo_set, tmp_path):
    cfg, _ = trained
    student = tiny_train_config(tmp_path, cfg.path(cfg.data.dir), cfg.path(cfg.model.path), train__epochs=1,
                                train__pseudo=str(pseudo_set), train__pseudo_weight=0.5, train__run_name="student")
    student.folds.file = str(cfg.folds_file)  # the teacher's split
    run_dir = stages.train(student)[0]
    n_test = len(pd.read_csv(layout.Pseudo(pseudo_set).rows)) - 3
    pseudo_rows = {k: files.read_json(layout.RunPaths(run_dir).fold(k).metrics)["pseudo_rows"] for k in (0, 1)}
    # the three copies ask fold-0 questions: fold 0 (which validates on them) drops them, fold 1 trains on them
    assert pseudo_rows == {0: n_test, 1: n_test + 3}
    oof = pd.read_csv(run_dir / "oof.csv")
    assert sorted(oof[ID]) == sorted(tables.load(cfg, "train")[ID])  # validation rows only, no pseudo row
    recorded = files.read_json(run_dir / "run.json")["pseudo"]
    assert recorded["weight"] == 0.5 and recorded["stamp"] == files.read_json(layout.Pseudo(pseudo_set).manifest)["stamp"]


def test_ordinal_coding_decodes_soft_labels_exactly():
    y = np.array([[0.0], [1 / 3], [2 / 3], [1.0]])
    coding = targets.fit("ordinal", y)
    soft = np.array([[0.1], [0.5], [0.9], [2 / 3]])
    assert np.allclose(coding.decode(coding.encode(soft)), soft, atol=1e-6)
    assert (coding.encode(y) == np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])).all()  # hard on the grid
