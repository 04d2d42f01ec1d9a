import numpy as np
import pytest
from scipy.stats import spearmanr

from pipeline.evaluate import postprocess


def test_transforms_are_monotone_and_snap_copies_label_values():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    labels = rng.choice([0, 1 / 3, 2 / 3, 1], 1000, p=[0.5, 0.2, 0.2, 0.1])
    for method, params in postprocess.candidates(labels, ("snap", "round", "clip"), (2, 5)):
        out = postprocess.apply_one(p, method, params)
        order = np.argsort(p)
        assert (np.diff(out[order]) >= -1e-12).all(), method  # never reorders, only ties
    snap = dict(postprocess.candidates(labels, ("snap",), ()))["snap"]
    snapped = postprocess.apply_one(p, "snap", snap)
    assert set(np.round(snapped, 6)) <= set(np.round(labels, 6))
    assert abs((snapped == 0).mean() - 0.5) < 0.02  # the label distribution is copied


def test_ties_help_a_rare_positive_column_and_the_gain_is_nested():
    rng = np.random.default_rng(1)
    n = 1500
    fold = rng.integers(0, 5, n)
    y = (rng.random(n) < 0.08).astype(float)  # mostly-zero column, like question_type_spelling
    p = np.where(y > 0, rng.normal(0.6, 0.2, n), rng.normal(0.3, 0.2, n))
    report = postprocess.fit(y[:, None], p[:, None], fold, ["c"], y[:, None])
    r = report["c"]
    assert r["applied"] and r["method"] in ("snap", "clip", "round") and r["after_nested"] > r["before"]
    per_fold = [spearmanr(y[fold == k], p[fold == k]).statistic for k in range(5)]
    assert r["before"] == pytest.approx(np.mean(per_fold))  # fold-mean, like the held-out scores


def test_continuous_truth_gains_little_and_unapplied_columns_stay_untouched():
    rng = np.random.default_rng(2)
    n, cols = 800, 6
    fold = rng.integers(0, 4, n)
    y = rng.random((n, cols))  # continuous truth: ties carry almost no information
    p = y + rng.normal(0, 0.3, (n, cols))
    report = postprocess.fit(y, p, fold, [f"c{j}" for j in range(cols)], y)
    s = postprocess.summary(report)
    assert abs(s["after_honest"] - s["before"]) < 0.005 and abs(s["after_nested"] - s["before"]) < 0.005
    out = postprocess.apply(p, report, list(report))
    for j, r in enumerate(report.values()):
        if not r["applied"]:
            assert r["method"] == "none" and np.array_equal(out[:, j], np.clip(p[:, j], 0, 1))


def test_the_honest_score_does_not_reward_lucky_keep_decisions():
    """Pure noise: the nested score keeps whatever happened to help on the held folds; the honest score decides
    without them, so it cannot exceed that selection."""
    rng = np.random.default_rng(7)
    n, cols = 600, 12
    fold = rng.integers(0, 3, n)
    y = np.round(rng.random((n, cols)) * 4) / 4  # rater-like ties
    p = rng.random((n, cols))  # predictions unrelated to the truth
    s = postprocess.summary(postprocess.fit(y, p, fold, [f"c{j}" for j in range(cols)], y))
    assert s["after_honest"] < s["after_nested"] and s["n_applied"] > 0


def test_noise_predictions_gain_nothing_honestly():
    rng = np.random.default_rng(3)
    n, cols = 600, 10
    y = rng.choice([0, 0.5, 1], (n, cols))
    p = rng.random((n, cols))  # no signal: in-sample fitting would still find "gains"
    fold = rng.integers(0, 5, n)
    report = postprocess.fit(y, p, fold, [f"c{j}" for j in range(cols)], y)
    gains = [r["gain"] for r in report.values()]
    assert np.mean(gains) < 0.02


def test_apply_uses_saved_transforms_and_stays_in_unit_range():
    p = np.linspace(-0.1, 1.1, 13)[:, None].repeat(2, 1)
    report = {"a": {"method": "round", "params": {"k": 2}}, "b": {"method": "none", "params": {}}}
    out = postprocess.apply(p, report, ["a", "b"])
    assert set(out[:, 0]) <= {0.0, 0.5, 1.0} and out.min() >= 0 and out.max() <= 1
    assert np.allclose(out[:, 1], np.clip(p[:, 1], 0, 1))


def test_low_high_clipping_and_kmeans_levels():
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    lohi = postprocess.apply_one(p, "lohi", {"lo": 0.1, "hi": 0.9})
    assert (lohi == lohi.min()).mean() == pytest.approx(0.1, abs=0.01)
    assert (lohi == lohi.max()).mean() == pytest.approx(0.1, abs=0.01)
    assert np.array_equal(lohi[(p > np.quantile(p, 0.1)) & (p < np.quantile(p, 0.9))],
                          p[(p > np.quantile(p, 0.1)) & (p < np.quantile(p, 0.9))])  # the middle is untouched
    clustered = np.concatenate([rng.normal(c, 0.01, 200) for c in (0.1, 0.5, 0.9)])
    levels = postprocess.kmeans_levels(clustered, 3)
    assert np.allclose(levels, [0.1, 0.5, 0.9], atol=0.01)
    snapped = postprocess.apply_one(clustered, "kmeans", {"k": 3})
    assert len(np.unique(snapped)) == 3
    names = {m for m, _ in postprocess.candidates(np.array([0.0, 1.0]), ("lohi", "kmeans"), (), (3, 5))}
    assert names == {"none", "lohi", "kmeans"}


def test_kmeans_and_lohi_are_chosen_nested_and_help_a_discrete_column():
    """Labels in 4 levels, predictions = labels + noise: collapsing predictions onto levels is chosen on the
    other folds and scores better on each held fold."""
    rng = np.random.default_rng(3)
    y = rng.choice([0.0, 0.0, 0.0, 1 / 3, 2 / 3, 1.0], size=(1200, 1))
    p = y + rng.normal(0, 0.08, y.shape)
    fold = np.arange(1200) % 4
    report = postprocess.fit(y, p, fold, ["c"], y, methods=("kmeans", "lohi"), round_grids=(), kmeans_ks=(3, 4, 5))
    r = report["c"]
    assert r["method"] in ("kmeans", "lohi") and r["after_nested"] > r["before"]
    assert r["after_honest"] > r["before"]


def test_snap_levels_in_the_nested_scores_come_from_the_training_folds_only(monkeypatch):
    """A label value planted in the held fold alone: the snap the nested score applies to that fold can never
    produce it (its levels come from the other folds), while the transform kept for predict time, fitted on
    every row, may."""
    rng = np.random.default_rng(3)
    n = 1200
    fold = np.repeat([0, 1, 2, 3], n // 4)  # 4 folds: no training part is fold 2 alone, in any nesting
    y = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], n)
    planted = (fold == 2) & (rng.random(n) < 0.3)
    y[planted] = 0.777  # a value no other fold has
    p = y + rng.normal(0, 0.1, n)
    seen = []
    real_apply = postprocess.apply_one

    def recording(values, method, params):
        out = real_apply(values, method, params)
        if method == "snap" and np.array_equal(values, p[fold == 2]):  # fold 2 held, in any nesting
            seen.append(bool(np.isclose(out, 0.777).any()))
        return out

    cands = postprocess.candidates
    manual = []  # the nested score computed by hand with training-only levels
    for k in range(4):
        held = fold == k
        m, params = postprocess.choose(y[~held], p[~held], cands(y[~held], ("snap",), ()))
        manual.append(postprocess.score_column(y[held], real_apply(p[held], m, params)))
    monkeypatch.setattr(postprocess, "apply_one", recording)
    report = postprocess.fit(y[:, None], p[:, None], fold, ["c"], y[:, None], methods=("snap",), round_grids=())
    assert report["c"]["after_nested"] == pytest.approx(np.mean(manual))
    assert seen and not any(seen)  # fold 2, held, never snapped to its own planted value
    leaky = cands(y, ("snap",), ())[1][1]  # levels from every label, the held fold's included
    assert 0.777 in np.round(leaky["values"], 3)  # so the planted value was there to leak


def _rare_positive(seed: int, n: int = 1500):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(float)[:, None]  # like question_type_spelling: a handful of positives
    p = np.where(y > 0, rng.normal(0.5, 0.2, y.shape), rng.normal(0.3, 0.2, y.shape))
    return y, p, rng.integers(0, 5, n)


def test_held_sets_are_whole_questions_of_the_size_that_will_be_scored():
    y, p, fold = _rare_positive(4)
    groups = np.arange(len(y)) // 3  # three answers per question
    held_by = postprocess.Held(fold, groups, 120)
    sets = held_by.sets(np.ones(len(y), bool))
    assert len(sets) == postprocess.DRAWS and all(120 <= h.sum() < 123 for h in sets)
    assert all(len(set(h[groups == g])) == 1 for h in sets[:3] for g in np.unique(groups))  # whole questions
    assert all((a == b).all() for a, b in zip(sets, held_by.sets(np.ones(len(y), bool))))  # reproducible
    report = postprocess.fit(y, p, fold, ["c"], y, methods=("round",), eval_rows=120, groups=groups)["c"]
    assert report["before"] == pytest.approx(np.mean([postprocess.score_column(y[h, 0], p[h, 0]) for h in sets]))
    folds = postprocess.fit(y, p, fold, ["c"], y, methods=("round",))["c"]  # no eval_rows: the folds, as before
    assert folds["before"] == pytest.approx(np.mean([spearmanr(y[fold == k], p[fold == k]).statistic
                                                     for k in range(5)]))


def test_the_size_table_is_the_report_s_estimate_at_each_size():
    """Each method's row of the by-size table is the nested gain `fit` reports with that method alone and held
    sets of that size (0: the folds): one estimate, read at several sizes."""
    y, p, fold = _rare_positive(5, n=2000)
    y2 = np.column_stack([y[:, 0], np.round(np.clip(p[:, 0] + 0.2, 0, 1) * 3) / 3])  # a second, 4-level column
    p2 = np.column_stack([p[:, 0], np.clip(p[:, 0] + 0.2, 0, 1) + np.random.default_rng(0).normal(0, 0.1, 2000)])
    table = postprocess.gain_by_size(y2, p2, fold, ["a", "b"], [80, 400, 0], methods=("round", "clip"))
    assert set(table) == {"round", "clip"} and set(table["round"]) == {"80", "400", "0"}
    for method in ("round", "clip"):
        for size in (80, 400, 0):
            r = postprocess.fit(y2, p2, fold, ["a", "b"], methods=(method,), eval_rows=size)
            gain = np.mean([c["after_nested"] - c["before"] for c in r.values()])
            assert table[method][str(size)] == pytest.approx(gain), (method, size)


def test_the_honest_gain_s_spread_is_per_scored_set_and_shrinks_as_the_sets_grow():
    """The summary's spread is over the scored sets' own gains (honest minus untouched, mean over the columns):
    what one test set of that size may see. Larger sets average more rows, so their gains vary less."""
    rng = np.random.default_rng(2)
    n = 2400
    fold = rng.integers(0, 5, n)
    y2 = (rng.random((n, 2)) < [0.08, 0.3]).astype(float)  # two binary-like columns: ties gain
    p2 = np.where(y2 > 0, rng.normal(0.6, 0.2, y2.shape), rng.normal(0.3, 0.2, y2.shape))
    spread = {}
    for size in (100, 400):
        report = postprocess.fit(y2, p2, fold, ["a", "b"], eval_rows=size)
        first = postprocess.Held(fold, None, size).units()[0][1][0]  # fold 0's first scored set
        assert len(postprocess.Held(fold, None, size).units()) == 5 and first.sum() == size and (fold[first] == 0).all()
        assert [c["by_held_set"]["before"][0] for c in report.values()] == pytest.approx(
            [postprocess.score_column(y2[first, j], p2[first, j]) for j in range(2)], abs=1e-6)
        s = postprocess.summary(report)
        gains = np.mean([np.subtract(c["by_held_set"]["honest"], c["by_held_set"]["before"])
                         for c in report.values()], axis=0)
        assert s["after_honest"] - s["before"] == pytest.approx(gains.mean(), abs=1e-5)
        spread[size] = s["honest_gain_by_held_set"]
        assert spread[size]["n"] == 5 * postprocess.DRAWS and spread[size]["min"] <= gains.mean() <= spread[size]["max"]
        assert s["after_honest"] > s["before"]  # a real gain, uncertain by a per-set spread
    assert spread[100]["sd"] > 1.5 * spread[400]["sd"] > 0


def test_the_honest_estimate_is_the_shipped_procedure_fitted_without_the_fold_it_scores():
    """Each fold's honest gain is what `ensemble` ships, run on the other folds alone (fit, then apply), applied to
    the fold's own 476-row-like sets: the fold's labels never choose a transform nor decide to keep it."""
    rng = np.random.default_rng(11)
    n = 1500
    fold, groups = rng.integers(0, 5, n), np.arange(n) // 2
    y = np.column_stack([(rng.random(n) < 0.1).astype(float), np.round(rng.random(n) * 3) / 3])
    p = np.clip(y * 0.4 + rng.random((n, 2)) * 0.6, 0, 1)
    report = postprocess.fit(y, p, fold, ["a", "b"], eval_rows=120, groups=groups, margin=0.5)
    units = postprocess.Held(fold, groups, 120).units()
    for k, (held, scored) in enumerate(units):
        rest = ~held
        shipped = postprocess.fit(y[rest], p[rest], fold[rest], ["a", "b"], eval_rows=120, groups=groups[rest],
                                  margin=0.5)
        for j, col in enumerate("ab"):
            after = np.mean([postprocess.score_column(y[s, j], postprocess.apply(p[s], shipped, ["a", "b"])[:, j])
                             for s in scored])
            assert report[col]["by_part"]["after"][k] == pytest.approx(after, abs=1e-6), (k, col)
    assert any(r["applied"] for r in report.values())


def test_the_uncertainty_comes_from_the_folds_or_from_the_measured_rule_with_one():
    rng = np.random.default_rng(4)
    n = 1500
    fold = rng.integers(0, 5, n)
    y = (rng.random((n, 2)) < 0.1).astype(float)
    p = np.where(y > 0, rng.normal(0.6, 0.2, y.shape), rng.normal(0.3, 0.2, y.shape))
    s = postprocess.summary(postprocess.fit(y, p, fold, ["a", "b"], eval_rows=150))
    parts = np.array(s["honest_gain_by_part"])
    assert len(parts) == 5 and s["after_honest"] - s["before"] == pytest.approx(parts.mean(), abs=1e-5)
    assert s["honest_uncertainty"]["plus_minus"] == pytest.approx(2 * parts.std(ddof=1) / np.sqrt(5), abs=1e-5)
    one = fold == 0
    sub, _ = postprocess.split_for_nesting(fold[one], np.arange(one.sum()))
    s1 = postprocess.summary(postprocess.fit(y[one], p[one], sub, ["a", "b"], eval_rows=100, one_fold=True),
                             one_fold=True)
    assert s1["honest_uncertainty"]["plus_minus"] == 2 * postprocess.ONE_FOLD_RMSE  # one fold cannot show it
    assert "+- " in postprocess.gain_text(s1) and "measured rule" in postprocess.gain_text(s1)


def test_a_keep_margin_keeps_only_gains_that_clear_their_own_uncertainty():
    """margin 0 keeps any nested gain; a margin keeps fewer columns, never more; a huge one keeps none."""
    rng = np.random.default_rng(9)
    n, cols = 1200, 8
    fold = rng.integers(0, 4, n)
    y = np.round(rng.random((n, cols)) * 4) / 4
    p = np.clip(y * rng.random(cols) * 0.5 + rng.random((n, cols)), 0, 1)  # columns from weak to no signal
    kept = [sum(r["applied"] for r in postprocess.fit(y, p, fold, list(range(cols)), eval_rows=200,
                                                        margin=m).values()) for m in (0.0, 1.0, 3.0, 1e6)]
    assert kept[0] > 0 and kept == sorted(kept, reverse=True) and kept[-1] == 0
    gains = np.array([0.01, 0.03, -0.01, 0.02])
    held_by = postprocess.Held(fold, None, 200)
    assert postprocess.clears(np.zeros(4), gains, 0.0, held_by, 1200)  # any positive mean gain
    se = gains.std(ddof=1) / np.sqrt(1200 / 200)
    assert postprocess.clears(np.zeros(4), gains, 0.99 * gains.mean() / se, held_by, 1200)
    assert not postprocess.clears(np.zeros(4), gains, 1.01 * gains.mean() / se, held_by, 1200)
