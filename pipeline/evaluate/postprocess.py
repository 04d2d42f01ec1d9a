"""Per-column rank post-processing, fitted on OOF predictions and judged nested.

QUEST labels are averages of a few raters, so most columns hold a handful of values; predictions
that tie the way labels tie can rank better. Candidate transforms (all monotone, scale-free):
  snap   - map each prediction's rank to the train label distribution (same ties as the labels)
  round  - round(p * k) / k for a grid of k
  clip   - tie the lowest q share of predictions together (rare-positive columns)
  lohi   - per-column low and high clipping: tie the lowest and the highest shares together (2nd place)
  kmeans - k levels per column from 1-D k-means on the predictions themselves (10th place; label-free)
Honesty: for each fold, the candidates (snap's levels) and the transform are learnt on the other folds'
OOF and labels and applied to the held fold; the held rows are scored on subsets of the size the transform
will meet (postprocess.eval_rows: the competition's test); a column keeps its transform only when that
nested score beats the untouched one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.core import config
from pipeline.data.metrics import centred_ranks, ranks, sorted_ranks, spearman_column, spearman_ranked

CLIP_SHARES = (0.25, 0.5, 0.75, 0.9)
LOHI_LOW = (0.0, 0.02, 0.05, 0.1, 0.2)  # share of predictions tied at the bottom
LOHI_HIGH = (0.8, 0.9, 0.95, 0.98, 1.0)  # ... and at the top above this share
METHODS = config.choices("postprocess", "methods")  # the candidates below, by name
log = logging.getLogger(__name__)


SUB_FOLDS = 3


def split_for_nesting(fold: np.ndarray, groups) -> tuple[np.ndarray, str]:
    """Nested post-processing by folds needs two held-out parts: the finished folds, or, with one fold finished,
    question-grouped sub-folds of it (answers to one question stay together), said so in the report."""
    if len(np.unique(fold)) >= 2:
        return fold, "finished folds"
    from sklearn.model_selection import GroupKFold

    sub = np.empty(len(fold), int)
    for i, (_, held) in enumerate(GroupKFold(SUB_FOLDS).split(np.zeros(len(fold)), groups=np.asarray(groups))):
        sub[held] = i
    note = (f"only fold {int(fold[0])} is finished: the estimates nested by folds hold out {SUB_FOLDS} "
            "question-grouped sub-folds of it; train more folds for the usual nested estimate")
    log.warning(note)
    return sub, note


def apply_one(p: np.ndarray, method: str, params: dict) -> np.ndarray:
    p = np.asarray(p, float)
    if method == "none":
        return p
    if method == "round":
        return np.round(p * params["k"]) / params["k"]
    if method == "clip":
        return np.maximum(p, quantile(p, params["q"]))
    if method == "lohi":
        return np.clip(p, quantile(p, params["lo"]), quantile(p, params["hi"]))
    if method == "kmeans":
        levels = kmeans_levels(p, params["k"])
        return levels[np.abs(p[:, None] - levels[None, :]).argmin(axis=1)]
    if method == "snap":
        q = (ranks(p) - 0.5) / len(p)
        idx = np.searchsorted(np.asarray(params["cdf"]), q, side="right")
        return np.asarray(params["values"])[np.minimum(idx, len(params["values"]) - 1)]
    raise ValueError(f"unknown post-processing method {method!r}")


def quantile(p: np.ndarray, q: float) -> float:
    """np.quantile(p, q) (its default, linear method) to the last bit, without its per-call overhead."""
    s = np.sort(p)
    index = (len(s) - 1) * float(q)
    lo = int(np.floor(index))
    hi = min(lo + 1, len(s) - 1)
    t = index - lo
    a, b = s[lo], s[hi]
    return float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t)


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
    """The candidate with the best Spearman on (y, p); 'none' wins ties. Every candidate is monotone in p, so p is
    sorted once and a candidate's ranks come from the ties it makes along that order (no sort per candidate)."""
    order = np.argsort(p, kind="stable")
    a, aa = centred_ranks(y)
    a_sorted = a[order]

    def score(values):
        v = values[order]
        if np.any(v[1:] < v[:-1]):  # not monotone after all: rank it the long way
            s = spearman_ranked(a, aa, values)
            return 0.0 if np.isnan(s) else s
        b = sorted_ranks(v)
        b = b - b.mean()
        denom = np.sqrt(aa * (b * b).sum())
        return float((a_sorted * b).sum() / denom) if denom > 0 else 0.0

    best, best_score = cands[0], score(p)
    for method, params in cands[1:]:
        s = score(apply_one(p, method, params))
        if s > best_score + 1e-12:
            best, best_score = (method, params), s
    return best


DRAWS, INNER_DRAWS = 20, 5  # held sets drawn at a size; fewer inside the keep-or-not decision (honest score)


@dataclass(frozen=True)
class Held:
    """How held sets are drawn for the nested estimates: the (sub-)folds (size 0), or random question-grouped
    sets of `size` rows, the size of the set the transform will meet (postprocess.eval_rows), each scored after
    the transform chosen on the rest. Draws are seeded by the pool, so a report is reproducible."""
    fold: np.ndarray
    groups: np.ndarray | None = None
    size: int = 0

    def sets(self, within: np.ndarray, draws: int = DRAWS) -> list[np.ndarray]:
        """Masks over all rows of held sets inside `within` (a mask): the rest of `within` trains."""
        if not self.size:
            return [within & (self.fold == k) for k in np.unique(self.fold[within])]
        idx = np.flatnonzero(within)
        size = min(self.size, len(idx) // 2)  # the rest must still choose a transform
        _, inv = np.unique(self.groups[idx] if self.groups is not None else idx, return_inverse=True)
        counts = np.bincount(inv)
        rng = np.random.default_rng([self.size, len(idx)])
        out = []
        for _ in range(draws):
            order = rng.permutation(len(counts))
            taken = order[:np.searchsorted(np.cumsum(counts[order]), size) + 1]  # whole questions, >= size rows
            held = np.zeros(len(within), bool)
            held[idx[np.isin(inv, taken)]] = True
            out.append(held)
        return out


def _nested(y: np.ndarray, p: np.ndarray, within: np.ndarray, held_sets,
            cands_for) -> tuple[np.ndarray, np.ndarray]:
    """Spearman of each held set before and after the transform chosen on the rest of `within`; the
    transform meets each held set whole (its quantiles and levels come from the set, as at predict time).
    cands_for(rows): the candidates, learnt (snap's levels) from those rows' labels only, never a held set's."""
    before, after = [], []
    for held in held_sets:
        train = within & ~held
        method, params = choose(y[train], p[train], cands_for(train))
        before.append(score_column(y[held], p[held]))
        after.append(score_column(y[held], apply_one(p[held], method, params)))
    return np.array(before), np.array(after)


def _nested_gain(*args) -> float:
    before, after = _nested(*args)
    return float(after.mean() - before.mean())


def _honest(y: np.ndarray, p: np.ndarray, held_by: Held, held_sets, cands_for) -> np.ndarray:
    """Each held set's score when the keep-or-not decision is nested too: for each held set, the candidates, the
    transform and whether to keep it are decided on the rest alone (nothing can favour the held set)."""
    scores = []
    for held in held_sets:
        train = ~held
        inner = held_by.sets(train, INNER_DRAWS)
        keep = len(inner) >= 2 and _nested_gain(y, p, train, inner, cands_for) > 0
        method, params = choose(y[train], p[train], cands_for(train)) if keep else ("none", {})
        scores.append(score_column(y[held], apply_one(p[held], method, params)))
    return np.array(scores)


def fit(y: np.ndarray, p: np.ndarray, fold: np.ndarray, columns, y_label_source: np.ndarray | None = None,
        methods=("snap", "round", "clip"), round_grids=(2, 3, 4, 5, 6, 8, 10), kmeans_ks=(3, 4, 5, 6, 8),
        eval_rows: int = 0, groups=None) -> dict:
    """Per column: nested before/after and the transform to use at predict time.

    Held sets: with eval_rows, random question-grouped sets (groups) of that many rows, each transformed as chosen
    on all the other rows; the size matters, because the gain of adding ties depends on the size of the set
    they meet: on a few hundred rows a few rounded ties move a rare-positive column's Spearman far more than on
    a larger test. Without eval_rows, the (sub-)folds in `fold`, as before. A column keeps its transform when
    after_nested beats before; since that decision looks at the same held sets, after_honest also nests the
    decision (what to expect on new data). Everything a candidate learns from labels (snap's levels) is learnt
    from the training part only inside both nested scores; the transform kept for predict time learns from all
    rows. y_label_source: the labels, row for row with y, whose distribution `snap` copies (default y).
    """
    report = {}
    if len(np.unique(fold)) < 2 and not eval_rows:
        raise ValueError("nested post-processing needs predictions from at least two folds (or sub-folds)")
    labels = y if y_label_source is None else y_label_source
    if len(labels) != len(y):
        raise ValueError(f"y_label_source has {len(labels)} rows; expected the {len(y)} rows of y (row for row)")
    held_by = Held(np.asarray(fold), None if groups is None else np.asarray(groups), eval_rows)
    everything = np.ones(len(y), bool)
    held_sets = held_by.sets(everything)
    for j, col in enumerate(columns):
        def cands_for(rows, j=j):
            return candidates(labels[rows, j], methods, round_grids, kmeans_ks)

        before_sets, after_sets = _nested(y[:, j], p[:, j], everything, held_sets, cands_for)
        before, after = float(before_sets.mean()), float(after_sets.mean())
        honest_sets = _honest(y[:, j], p[:, j], held_by, held_sets, cands_for)
        method, params = choose(y[:, j], p[:, j], cands_for(everything))
        applied = after > before and method != "none"
        report[col] = {"method": method if applied else "none", "params": params if applied else {},
                       "before": before, "after_nested": after, "applied": applied,
                       "gain": (after - before) if applied else 0.0, "after_honest": float(honest_sets.mean()),
                       "by_held_set": {"before": before_sets.round(6).tolist(),
                                       "honest": honest_sets.round(6).tolist()}}
    return report


def gain_by_size(y: np.ndarray, p: np.ndarray, fold: np.ndarray, columns, sizes, methods=("snap", "round", "clip"),
                 round_grids=(2, 3, 4, 5, 6, 8, 10), kmeans_ks=(3, 4, 5, 6, 8), groups=None) -> dict:
    """{method: {str(size): nested gain}}: each method alone (with "none" among its candidates), chosen per column
    on the rest, its gain (after - before, mean over the columns) on held sets of each size (0: the folds).
    How much of a method's gain a test set of that size shows."""
    everything = np.ones(len(y), bool)
    out = {}
    for method in methods:
        gains = np.zeros((len(columns), len(sizes)))
        for i, size in enumerate(sizes):
            held_sets = Held(np.asarray(fold), None if groups is None else np.asarray(groups), size).sets(everything)
            for j in range(len(columns)):
                def cands_for(rows, j=j):
                    return candidates(y[rows, j], (method,), round_grids, kmeans_ks)

                gains[j, i] = _nested_gain(y[:, j], p[:, j], everything, held_sets, cands_for)
        out[method] = {str(int(size)): float(g) for size, g in zip(sizes, gains.mean(0))}  # JSON's keys
    return out


def summary(report: dict) -> dict:
    before = float(np.mean([r["before"] for r in report.values()]))
    after = float(np.mean([r["after_nested"] if r["applied"] else r["before"] for r in report.values()]))
    honest = float(np.mean([r["after_honest"] for r in report.values()]))
    out = {"before": before, "after_nested": after, "after_honest": honest,
           "n_applied": sum(r["applied"] for r in report.values())}
    if all("by_held_set" in r for r in report.values()):  # reports written before it lack the per-set scores
        gains = np.mean([np.subtract(r["by_held_set"]["honest"], r["by_held_set"]["before"])
                         for r in report.values()], axis=0)
        if len(gains) > 1:  # a spread needs two held sets
            out["honest_gain_by_held_set"] = {"n": len(gains), "sd": float(gains.std(ddof=1)),
                                              "min": float(gains.min()), "max": float(gains.max())}
    return out


def apply(preds: np.ndarray, report: dict, columns) -> np.ndarray:
    out = np.array(preds, float, copy=True)
    for j, col in enumerate(columns):
        r = report.get(col, {"method": "none"})
        out[:, j] = apply_one(out[:, j], r["method"], r.get("params", {}))
    return np.clip(out, 0.0, 1.0)
