"""A simple text baseline on the run's own folds: TF-IDF of title + body + answer, one ridge per fold.

validate puts it beside each target's OOF score, so a user sees where the transformer is weaker than
bag-of-words (the answer-quality targets, often, when the answer budget hides answer length).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.columns import ANSWER, BODY, TITLE
from pipeline.data import metrics

MAX_FEATURES = 50_000
ALPHA = 10.0


def _features(frame: pd.DataFrame, fit_rows: np.ndarray):
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    blocks = []
    for text in (frame[TITLE] + " " + frame[BODY], frame[ANSWER]):  # question and answer words kept apart
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=MAX_FEATURES, sublinear_tf=True)
        vec.fit(text.iloc[fit_rows])
        blocks.append(vec.transform(text))
    lengths = np.log1p(np.column_stack([frame[c].str.len() for c in (TITLE, BODY, ANSWER)]).astype(float))
    return hstack(blocks + [lengths / lengths.max(0).clip(1)]).tocsr()


def oof_scores(train: pd.DataFrame, y: np.ndarray, fold: np.ndarray, held_folds) -> dict[str, float]:
    """Per-target Spearman of ridge predictions for the rows of held_folds, each fold fitted on the others."""
    from sklearn.linear_model import Ridge

    rows = np.flatnonzero(np.isin(fold, list(held_folds)))
    pred = np.zeros((len(rows), y.shape[1]))
    for k in held_folds:
        fit_rows, held = np.flatnonzero(fold != k), np.isin(rows, np.flatnonzero(fold == k))
        x = _features(train, fit_rows)
        pred[held] = Ridge(alpha=ALPHA).fit(x[fit_rows], y[fit_rows]).predict(x[rows[held]])
    return metrics.spearman(y[rows], pred).per_column
