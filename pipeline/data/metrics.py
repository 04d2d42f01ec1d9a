"""The competition metric: mean column-wise Spearman correlation.

A column whose truth or prediction is constant has no defined Spearman; it scores 0 (as the
leaderboard effectively did) and is counted in `n_constant`, never silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.core.columns import ID, QUESTION_TARGETS, TARGETS


@dataclass
class Score:
    mean: float
    per_column: dict[str, float]
    constant_columns: list[str] = field(default_factory=list)

    @property
    def n_constant(self) -> int:
        return len(self.constant_columns)

    def as_dict(self) -> dict:
        return {"spearman": self.mean, "n_constant": self.n_constant,
                "constant_columns": self.constant_columns, "per_column": self.per_column}


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their average rank: scipy's rankdata(method="average"),
    without its per-call overhead (post-processing scores columns some 100,000 times per report)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x))
    out[order] = sorted_ranks(x[order])
    return out


def sorted_ranks(ordered: np.ndarray) -> np.ndarray:
    """The average ranks of values already in non-decreasing order (equal neighbours share theirs)."""
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(ordered)))
    return np.repeat(starts + (counts + 1) / 2, counts)


def centred_ranks(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ranks minus their mean, and their sum of squares: one side of a Spearman, reusable."""
    a = ranks(x)
    a = a - a.mean()
    return a, float((a * a).sum())


def spearman_ranked(a: np.ndarray, aa: float, y_pred: np.ndarray) -> float:
    """Spearman of y_pred against a side already given as centred_ranks (a, aa); nan when either is constant."""
    b = ranks(y_pred)
    b = b - b.mean()
    denom = np.sqrt(aa * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman_column(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman of one column (average ranks for ties); nan when either side is constant."""
    return spearman_ranked(*centred_ranks(y_true), y_pred)


def spearman(y_true: np.ndarray, y_pred: np.ndarray, columns=TARGETS) -> Score:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != len(columns):
        raise ValueError(f"expected two (rows, {len(columns)}) arrays, got {y_true.shape} and {y_pred.shape}")
    if not np.isfinite(y_pred).all():
        raise ValueError(f"predictions hold {int((~np.isfinite(y_pred)).sum())} NaN/inf value(s)")
    per, constant = {}, []
    for j, col in enumerate(columns):
        rho = spearman_column(y_true[:, j], y_pred[:, j])
        if np.isnan(rho):
            constant.append(col)
            rho = 0.0
        per[col] = rho
    return Score(float(np.mean(list(per.values()))), per, constant)


def _check_frame(frame: pd.DataFrame, what: str, error):
    missing = [c for c in (ID, *TARGETS) if c not in frame.columns]
    if missing:
        raise error(f"{what} frame lacks column(s) {missing}")
    if frame[ID].duplicated().any():
        raise error(f"{what} frame has duplicate {ID} values")


def lookup(pred: pd.DataFrame, ids: pd.Series, error=ValueError) -> np.ndarray:
    """The 30 predictions of each id, in the order of ids; each id needs exactly one prediction row."""
    _check_frame(pred, "prediction", error)
    indexed = pred.set_index(ID)
    absent = ~ids.isin(indexed.index)
    if absent.any():
        raise error(f"{int(absent.sum())} {ID}(s) have no prediction, e.g. {int(ids[absent].iloc[0])}")
    return indexed.loc[ids, list(TARGETS)].to_numpy(float)


def align(truth: pd.DataFrame, pred: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Match prediction rows to truth rows by qa_id; every truth row needs exactly one prediction."""
    _check_frame(truth, "truth", ValueError)
    return truth[list(TARGETS)].to_numpy(float), lookup(pred, truth[ID])


def score_frames(truth: pd.DataFrame, pred: pd.DataFrame) -> Score:
    return spearman(*align(truth, pred))


def score_unique_questions(truth: pd.DataFrame, pred: pd.DataFrame, group_key: str = "question_body") -> Score:
    """Question targets scored once per question (mean over its answers), answer targets over all rows.

    Repeated questions give their question targets many tied copies; this view weighs every question once.
    """
    y, p = align(truth, pred)
    groups = pd.factorize(truth[group_key])[0]
    is_q = np.isin(TARGETS, QUESTION_TARGETS)
    yq = pd.DataFrame(y[:, is_q]).groupby(groups).mean().to_numpy()
    pq = pd.DataFrame(p[:, is_q]).groupby(groups).mean().to_numpy()
    q_cols = [t for t in TARGETS if t in QUESTION_TARGETS]
    a_cols = [t for t in TARGETS if t not in QUESTION_TARGETS]
    sq, sa = spearman(yq, pq, q_cols), spearman(y[:, ~is_q], p[:, ~is_q], a_cols)
    per = {c: {**sq.per_column, **sa.per_column}[c] for c in TARGETS}
    return Score(float(np.mean(list(per.values()))), per, sq.constant_columns + sa.constant_columns)
