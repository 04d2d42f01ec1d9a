import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from pipeline.core.columns import ID, TARGETS
from pipeline.data import metrics


def test_matches_scipy_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, (200, 30)) / 3
    p = rng.random((200, 30))
    p[:, 5] = np.round(p[:, 5], 1)  # ties in predictions too
    expected = np.mean([spearmanr(y[:, j], p[:, j]).statistic for j in range(30)])
    score = metrics.spearman(y, p)
    assert score.mean == pytest.approx(expected, abs=1e-12)
    assert score.per_column[TARGETS[5]] == pytest.approx(spearmanr(y[:, 5], p[:, 5]).statistic)


def test_constant_columns_score_zero_and_are_counted():
    rng = np.random.default_rng(1)
    y, p = rng.random((50, 30)), rng.random((50, 30))
    y[:, 0] = 1.0
    p[:, 3] = 0.5
    score = metrics.spearman(y, p)
    assert score.constant_columns == [TARGETS[0], TARGETS[3]]
    assert score.per_column[TARGETS[0]] == 0.0
    assert score.mean == pytest.approx(sum(score.per_column.values()) / 30)


def test_alignment_by_qa_id():
    rng = np.random.default_rng(2)
    truth = pd.DataFrame(rng.random((40, 30)), columns=TARGETS)
    truth.insert(0, ID, np.arange(40) * 7)
    pred = truth.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert metrics.score_frames(truth, pred).mean == pytest.approx(1.0)
    with pytest.raises(ValueError, match="have no prediction"):
        metrics.score_frames(truth, pred.iloc[1:])
    with pytest.raises(ValueError, match="duplicate qa_id"):
        metrics.score_frames(truth, pd.concat([pred, pred.iloc[:1]]))
    bad = pred.copy()
    bad.iloc[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.score_frames(truth, bad)


def test_unique_question_view_weighs_each_question_once():
    rng = np.random.default_rng(3)
    truth = pd.DataFrame(rng.random((60, 30)), columns=TARGETS)
    truth.insert(0, ID, np.arange(60))
    truth["question_body"] = [f"q{i // 3}" for i in range(60)]
    q_cols = [t for t in TARGETS if t.startswith("question_")]
    truth[q_cols] = truth.groupby("question_body")[q_cols].transform("first")
    pred = truth.copy()
    pred[list(TARGETS)] += rng.normal(0, 0.3, (60, 30))
    s = metrics.score_unique_questions(truth, pred)
    first = truth.groupby("question_body").head(1)
    col = "question_well_written"
    pq = pred.groupby("question_body")[col].mean().loc[first["question_body"]]
    assert s.per_column[col] == pytest.approx(spearmanr(first[col], pq).statistic)


def test_fast_ranks_and_quantiles_equal_scipy_and_numpy_to_the_bit():
    """metrics.ranks and postprocess.quantile replace scipy's rankdata and np.quantile on the hot path of
    post-processing; they must give the very same numbers (ties, constants, one row, any q)."""
    from scipy.stats import rankdata

    from pipeline.evaluate import postprocess

    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(1, 200))
        x = np.round(rng.random(n) * rng.integers(1, 9), int(rng.integers(0, 3)))
        if case % 10 == 0:
            x[:] = 0.5
        assert np.array_equal(metrics.ranks(x), rankdata(x))
        q = float(rng.choice([0.0, 0.02, 0.25, 0.5, 0.9, 0.98, 1.0, rng.random()]))
        assert postprocess.quantile(x, q) == np.quantile(x, q)
