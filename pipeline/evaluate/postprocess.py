"""Per-column rank post-processing, fitted on OOF predictions and judged nested.

QUEST labels are averages of a few raters, so most columns hold a handful of values; predictions
that tie the way labels tie can rank better. Candidate transforms (all monotone, scale-free):
  snap   - map each prediction's rank to the train label distribution (same ties as the labels)
  round  - round(p * k) / k for a grid of k
  clip   - tie the lowest q share of predictions together (rare-positive columns)
  lohi   - per-column low and high clipping: tie the lowest and the highest shares together (2nd place)
  kmeans - k levels per column from 1-D k-means on the predictions themselves (10th place; label-free)
Honesty: for each fold, the candidates (snap's levels) and the transform are learnt on the other folds'
OOF and labels and applied to the held fold; a column keeps its transform only when that nested fold-mean
score beats the untouched one.
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.stats import rankdata

from pipeline.core import config
from pipeline.data.metrics import spearman_column

CLIP_SHARES = (0.25, 0.5, 0.75, 0.9)
LOHI_LOW = (0.0, 0.02, 0.05, 0.1, 0.2)  # share of predictions tied at the bottom
LOHI_HIGH = (0.8, 0.9, 0.95, 0.98, 1.0)  # ... and at the top above this share
METHODS = config.choices("postprocess", "methods")  # the candidates below, by name
log = logging.getLogger(__name__)


SUB_FOLDS = 3


def split_for_nesting(fold: np.ndarray, groups) -> tuple[np.ndarray, str]:
    """Nested post-processing needs two held-out parts: the finished folds, or, with one fold finished,
    question-grouped sub-folds of it (answers to one question stay together), said so in the report."""
    if len(np.unique(fold)) >= 2:
        return fold, "finished folds"
    from sklearn.model_selection import GroupKFold

    sub = np.empty(len(fold), int)
    for i, (_, held) in enumerate(GroupKFold(SUB_FOLDS).split(np.zeros(len(fold)), groups=np.asarray(groups))):
        sub[held] = i
    note = (f"only fold {int(fold[0])} is finished: post-processing is chosen and scored nested over "
            f"{SUB_FOLDS} question-grouped sub-folds of it; train more folds for the usual nested estimate")
    log.warning(note)
    return sub, note


def apply_one(p: np.ndarray, method: str, params: dict) -> np.ndarray:
    p = np.asarray(p, float)
    if method == "none":
        return p
    if method == "round":
        return np.round(p * params["k"]) / params["k"]
    if method == "clip":
        return np.maximum(p, np.quantile(p, params["q"]))
    if method == "lohi":
        return np.clip(p, np.quantile(p, params["lo"]), np.quantile(p, params["hi"]))
    if method == "kmeans":
        levels = kmeans_levels(p, params["k"])
        return levels[np.abs(p[:, None] - levels[None, :]).argmin(axis=1)]
    if method == "snap":
        q = (rankdata(p) - 0.5) / len(p)
        idx = np.searchsorted(np.asarray(params["cdf"]), q, side="right")
        return np.asarray(params["values"])[np.minimum(idx, len(params["values"]) - 1)]
    raise ValueError(f"unknown post-processing method {method!r}")


def kmeans_levels(p: np.ndarray, k: int, iterations: int = 25) -> np.ndarray:
    """Centres of a deterministic 1-D k-means (Lloyd from quantile starts) of p: the levels predictions snap to."""
    centres = np.unique(np.quantile(p, (np.arange(k) + 0.5) / k))
    for _ in range(iterations):
        nearest = np.abs(p[:, None] - centres[None, :]).argmin(axis=1)
        moved = np.array([p[nearest == i].mean() if (nearest == i).any() else c for i, c in enumerate(centres)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return np.sort(centres)


def candidates(y_train_col: np.ndarray, methods, round_grids, kmeans_ks=(3, 4, 5, 6, 8)) -> list[tuple[str, dict]]:
    out = [("none", {})]
    if "snap" in methods:
        values, counts = np.unique(np.round(y_train_col, 6), return_counts=True)
        out.append(("snap", {"values": values.tolist(), "cdf": (np.cumsum(counts) / counts.sum()).tolist()}))
    if "round" in methods:
        out += [("round", {"k": int(k)}) for k in round_grids]
    if "clip" in methods:
        out += [("clip", {"q": q}) for q in CLIP_SHARES]
    if "lohi" in methods:
        out += [("lohi", {"lo": lo, "hi": hi}) for lo in LOHI_LOW for hi in LOHI_HIGH if (lo, hi) != (0.0, 1.0)]
    if "kmeans" in methods:
        out += [("kmeans", {"k": int(k)}) for k in kmeans_ks]
    return out


def score_column(y, p) -> float:
    """Spearman of one column; a constant column scores 0 (as the competition metric treats it)."""
    s = spearman_column(y, p)
    return 0.0 if np.isnan(s) else s


def choose(y: np.ndarray, p: np.ndarray, cands) -> tuple[str, dict]:
    """The candidate with the best Spearman on (y, p); 'none' wins ties."""
    best, best_score = cands[0], score_column(y, p)
    for method, params in cands[1:]:
        s = score_column(y, apply_one(p, method, params))
        if s > best_score + 1e-12:
            best, best_score = (method, params), s
    return best


def _nested(y: np.ndarray, p: np.ndarray, fold: np.ndarray, cands_for) -> tuple[float, float]:
    """Fold-mean Spearman of each held fold as it is (before) and after the transform chosen on the others.
    cands_for(rows): the candidates, learnt (snap's levels) from those rows' labels only: never the held fold's."""
    before, after = [], []
    for k in np.unique(fold):
        held = fold == k
        method, params = choose(y[~held], p[~held], cands_for(~held))
        before.append(score_column(y[held], p[held]))
        after.append(score_column(y[held], apply_one(p[held], method, params)))
    return float(np.mean(before)), float(np.mean(after))


def _honest(y: np.ndarray, p: np.ndarray, fold: np.ndarray, cands_for) -> float:
    """Fold-mean Spearman when the keep-or-not decision is nested too: for each held fold, the candidates, the
    transform and whether to keep it are decided on the other folds alone (nothing can favour the held fold)."""
    scores = []
    for k in np.unique(fold):
        held = fold == k
        outer = np.flatnonzero(~held)
        inner = np.unique(fold[~held])
        keep = len(inner) >= 2 and np.subtract(*_nested(y[~held], p[~held], fold[~held],
                                                        lambda rows: cands_for(_within(len(y), outer, rows)))[::-1]) > 0
        method, params = choose(y[~held], p[~held], cands_for(~held)) if keep else ("none", {})
        scores.append(score_column(y[held], apply_one(p[held], method, params)))
    return float(np.mean(scores))


def _within(n: int, outer: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A mask over all n rows for `rows`, a mask over the subset `outer` (row indices)."""
    mask = np.zeros(n, bool)
    mask[outer[rows]] = True
    return mask


def fit(y: np.ndarray, p: np.ndarray, fold: np.ndarray, columns, y_label_source: np.ndarray | None = None,
        methods=("snap", "round", "clip"), round_grids=(2, 3, 4, 5, 6, 8, 10), kmeans_ks=(3, 4, 5, 6, 8)) -> dict:
    """Per column: nested before/after and the transform to use at predict time.

    Scores are fold means: each held fold is scored as it is (before) and after the transform chosen
    on the other folds (after_nested), the way one transform meets one test set. Pooling held folds would
    mix each fold's own ties and understate the gain. A column keeps its transform when after_nested beats
    before; since that decision looks at the same held folds, after_honest also nests the decision (what
    to expect on new data). Everything a candidate learns from labels (snap's levels) is learnt from the
    training folds only inside both nested scores; the transform kept for predict time learns from all rows.
    y_label_source: the labels, row for row with y, whose distribution `snap` copies (default y).
    """
    report = {}
    if len(np.unique(fold)) < 2:
        raise ValueError("nested post-processing needs predictions from at least two folds (or sub-folds)")
    labels = y if y_label_source is None else y_label_source
    if len(labels) != len(y):
        raise ValueError(f"y_label_source has {len(labels)} rows; expected the {len(y)} rows of y (row for row)")
    for j, col in enumerate(columns):
        def cands_for(rows, j=j):
            return candidates(labels[rows, j], methods, round_grids, kmeans_ks)

        everything = np.ones(len(y), bool)
        before, after = _nested(y[:, j], p[:, j], fold, cands_for)
        method, params = choose(y[:, j], p[:, j], cands_for(everything))
        applied = after > before and method != "none"
        report[col] = {"method": method if applied else "none", "params": params if applied else {},
                       "before": before, "after_nested": after, "applied": applied,
                       "gain": (after - before) if applied else 0.0,
                       "after_honest": _honest(y[:, j], p[:, j], fold, cands_for)}
    return report


def summary(report: dict) -> dict:
    before = float(np.mean([r["before"] for r in report.values()]))
    after = float(np.mean([r["after_nested"] if r["applied"] else r["before"] for r in report.values()]))
    honest = float(np.mean([r["after_honest"] for r in report.values()]))
    return {"before": before, "after_nested": after, "after_honest": honest,
            "n_applied": sum(r["applied"] for r in report.values())}


def apply(preds: np.ndarray, report: dict, columns) -> np.ndarray:
    out = np.array(preds, float, copy=True)
    for j, col in enumerate(columns):
        r = report.get(col, {"method": "none"})
        out[:, j] = apply_one(out[:, j], r["method"], r.get("params", {}))
    return np.clip(out, 0.0, 1.0)
