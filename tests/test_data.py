import numpy as np
import pytest

from conftest import make_config
from pipeline.core.columns import ID, INPUT_COLUMNS, SUBMISSION_COLUMNS, TARGETS, TRAIN_COLUMNS
from pipeline.data import tables
from pipeline.dev import synth


def test_clean_text_is_safe():
    assert tables.clean_text("a &amp; b&lt;c&gt;  \t d\r\n\n\n\ne ") == "a & b<c> d\n\ne"
    assert tables.clean_text("") == ""


def test_generated_files_have_the_competition_schema(synth_dir):
    train = tables.read_csv(synth_dir / "train.csv", "train")
    test = tables.read_csv(synth_dir / "test.csv", "test")
    sample = tables.read_csv(synth_dir / "sample_submission.csv", "sample_submission")
    assert list(train.columns) == list(TRAIN_COLUMNS) and len(TRAIN_COLUMNS) == 41
    assert list(test.columns) == list(INPUT_COLUMNS) and len(INPUT_COLUMNS) == 11
    assert list(sample.columns) == list(SUBMISSION_COLUMNS) and len(SUBMISSION_COLUMNS) == 31
    assert (sample[ID].to_numpy() == test[ID].to_numpy()).all()
    assert train["question_body"].nunique() < len(train)  # questions with several answers


def test_generated_targets_look_rated_and_carry_signal():
    train, _, _ = synth.generate(n_train=400, n_test=10, seed=3)
    y = train[list(TARGETS)].to_numpy()
    assert ((y >= 0) & (y <= 1)).all()
    assert set(np.round(np.unique(y), 3)) <= {0, 0.2, 0.333, 0.4, 0.5, 0.6, 0.667, 0.8, 1}
    # question targets are shared by all answers of a question
    q = train.groupby("url")["question_well_written"].nunique()
    assert (q == 1).all()


def test_real_toy_rows_load(toy_dir):
    train = tables.read_csv(toy_dir / "train_toy.csv", "train")
    sample = tables.read_csv(toy_dir / "sample_submission_toy.csv", "sample_submission")
    assert len(train) == 50 and list(sample.columns) == list(SUBMISSION_COLUMNS)
    assert train[list(TARGETS)].to_numpy().max() <= 1


def _write(tmp_path, frame, name="train.csv"):
    p = tmp_path / name
    frame.to_csv(p, index=False)
    return p


@pytest.fixture
def train_frame():
    return synth.generate(n_train=20, n_test=4, seed=0)[0]


def test_missing_column_is_named(tmp_path, train_frame):
    p = _write(tmp_path, train_frame.drop(columns=["answer_helpful"]))
    with pytest.raises(tables.DataError, match=r"train\.csv: missing column\(s\) \['answer_helpful'\]"):
        tables.read_csv(p, "train")


def test_duplicate_ids_and_bad_targets_are_named(tmp_path, train_frame):
    dup = train_frame.copy()
    dup.loc[1, ID] = dup.loc[0, ID]
    with pytest.raises(tables.DataError, match="'qa_id' must be unique"):
        tables.read_csv(_write(tmp_path, dup), "train")
    bad = train_frame.copy()
    bad["answer_plausible"] = bad["answer_plausible"].astype(object)
    bad.loc[3, "answer_plausible"] = "high"
    with pytest.raises(tables.DataError, match="'answer_plausible' must be numeric; row 3 holds 'high'"):
        tables.read_csv(_write(tmp_path, bad), "train")
    out = train_frame.copy()
    out.loc[2, "answer_relevance"] = 1.5
    with pytest.raises(tables.DataError, match=r"'answer_relevance' must lie in \[0, 1\]"):
        tables.read_csv(_write(tmp_path, out), "train")


def test_empty_text_becomes_empty_string_and_na_words_stay(tmp_path, train_frame, caplog):
    frame = train_frame.copy()
    frame.loc[0, "answer"] = ""
    frame.loc[1, "question_body"] = "NA"
    loaded = tables.read_csv(_write(tmp_path, frame), "train")
    assert loaded.loc[0, "answer"] == "" and loaded.loc[1, "question_body"] == "NA"
    assert "1 empty value(s) in 'answer'" in caplog.text
    tables.read_csv(_write(tmp_path, frame), "train")  # a stage reads a file several times: said once
    assert caplog.text.count("1 empty value(s) in 'answer'") == 1


def test_not_a_csv(tmp_path):
    p = tmp_path / "train.csv"
    p.write_bytes(b"")
    with pytest.raises(tables.DataError, match="train.csv: cannot parse"):
        tables.read_csv(p, "train")
    with pytest.raises(tables.DataError, match="train file not found"):
        tables.read_csv(tmp_path / "nope.csv", "train")


def test_load_applies_cleaning(tmp_path, train_frame):
    frame = train_frame.copy()
    frame.loc[0, "answer"] = "x &gt; y"
    _write(tmp_path, frame)
    cfg = make_config(tmp_path, tmp_path)
    assert tables.load(cfg, "train").loc[0, "answer"] == "x > y"
