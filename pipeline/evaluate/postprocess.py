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


DRAWS = 20  # held sets drawn at a size, in every decision (the honest estimate runs the shipped procedure)


@dataclass(frozen=True)
class Held:
    """How held sets are drawn for the nested estimates: the (sub-)folds (size 0), or random question-grouped
    sets of `size` rows, the size of the set the transform will meet (postprocess.eval_rows), each scored after
    the transform chosen on the rest. Draws are seeded by the pool, so a report is reproducible.
    one_fold: the folds are sub-folds of the one finished fold (split_for_nesting)."""
    fold: np.ndarray
    groups: np.ndarray | None = None
    size: int = 0
    one_fold: bool = False

    def sets(self, within: np.ndarray, draws: int = DRAWS) -> list[np.ndarray]:
        """Masks over all rows of held sets inside `within` (a mask): the rest of `within` trains."""
        if not self.size:
            return [within & (self.fold == k) for k in np.unique(self.fold[within])]
        return self._draw(within, min(self.size, int(within.sum()) // 2), draws)  # the rest must still choose

    def _draw(self, within: np.ndarray, size: int, draws: int) -> list[np.ndarray]:
        idx = np.flatnonzero(within)
        _, inv = np.unique(self.groups[idx] if self.groups is not None else idx, return_inverse=True)
        counts = np.bincount(inv)
        rng = np.random.default_rng([size, len(idx)])
        out = []
        for _ in range(draws):
            order = rng.permutation(len(counts))
            taken = order[:np.searchsorted(np.cumsum(counts[order]), size) + 1]  # whole questions, >= size rows
            held = np.zeros(len(within), bool)
            held[idx[np.isin(inv, taken)]] = True
            out.append(held)
        return out

    def units(self) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """(held part, the sets it is scored on) for the honest estimate. With finished folds, each fold is held
        whole and scored on random sets of `size` of its rows (the fold whole when it has fewer): the shipped
        procedure fitted on the other folds meets rows no step has seen. With one fold, random held sets of the
        rest's size, each scored whole."""
        everything = np.ones(len(self.fold), bool)
        if self.one_fold or not self.size:
            return [(held, [held]) for held in self.sets(everything)]
        out = []
        for k in np.unique(self.fold):
            held = self.fold == k
            out.append((held, [held] if held.sum() <= self.size else self._draw(held, self.size, DRAWS)))
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


def clears(before: np.ndarray, after: np.ndarray, margin: float, held_by: Held, rows: int) -> bool:
    """Keep a transform when its nested gain on the held sets clears `margin` times its own standard error: the
    spread of the per-set gains scaled to the rows they come from (random sets overlap: as if rows / size
    independent sets; folds: one set each). margin 0: any gain."""
    gains = after - before
    if not len(gains) or gains.mean() <= 0:
        return False
    if not margin or len(gains) < 2:
        return True
    independent = rows / held_by.size if held_by.size else len(gains)
    return bool(gains.mean() > margin * gains.std(ddof=1) / np.sqrt(max(independent, 1.0)))


def _honest(y: np.ndarray, p: np.ndarray, held_by: Held, units, cands_for, margin: float) -> dict:
    """The shipped procedure judged on rows it never saw: for each held part (units: Held.units, each with the
    held sets of the other rows, drawn once for every column), the candidates, the
    transform (chosen on all the other rows) and whether to keep it (its nested gain on held sets of the other
    rows, DRAWS of them, clearing the margin), as `ensemble` decides them, then the part's sets scored untouched
    and transformed. Returns per part the mean scores, and per scored set the scores."""
    parts = {"before": [], "after": []}
    sets = {"before": [], "after": []}
    for held, scored, inner in units:
        train = ~held
        before_in, after_in = _nested(y, p, train, inner, cands_for)
        keep = clears(before_in, after_in, margin, held_by, int(train.sum()))
        method, params = choose(y[train], p[train], cands_for(train)) if keep else ("none", {})
        b = [score_column(y[s], p[s]) for s in scored]
        a = [score_column(y[s], apply_one(p[s], method, params)) for s in scored]
        parts["before"].append(float(np.mean(b)))
        parts["after"].append(float(np.mean(a)))
        sets["before"] += b
        sets["after"] += a
    return {"parts": parts, "sets": sets}


def fit(y: np.ndarray, p: np.ndarray, fold: np.ndarray, columns, y_label_source: np.ndarray | None = None,
        methods=("snap", "round", "clip"), round_grids=(2, 3, 4, 5, 6, 8, 10), kmeans_ks=(3, 4, 5, 6, 8),
        eval_rows: int = 0, groups=None, margin: float = 0.0, one_fold: bool = False) -> dict:
    """Per column: nested before/after, the honest gain, and the transform to use at predict time.

    Held sets: with eval_rows, random question-grouped sets (groups) of that many rows, each transformed as chosen
    on all the other rows; the size matters, because the gain of adding ties depends on the size of the set
    they meet: on a few hundred rows a few rounded ties move a rare-positive column's Spearman far more than on
    a larger test. Without eval_rows, the (sub-)folds in `fold`, as before. A column keeps its transform when
    its nested gain clears `margin` standard errors (clears). Since that decision looks at the same held sets,
    after_honest runs the whole procedure (choice and keep decision) on each fold's complement and scores the fold
    (one_fold: `fold` holds sub-folds of one finished fold, and random held sets take the folds' place): what to
    expect on new data, with each fold's own gain beside it (its spread is the estimate's uncertainty). Everything
    a candidate learns from labels (snap's levels) is learnt from the training part only inside the nested
    scores; the transform kept for predict time learns from all rows. y_label_source: the labels, row for row
    with y, whose distribution `snap` copies (default y).
    """
    report = {}
    if len(np.unique(fold)) < 2 and not eval_rows:
        raise ValueError("nested post-processing needs predictions from at least two folds (or sub-folds)")
    labels = y if y_label_source is None else y_label_source
    if len(labels) != len(y):
        raise ValueError(f"y_label_source has {len(labels)} rows; expected the {len(y)} rows of y (row for row)")
    held_by = Held(np.asarray(fold), None if groups is None else np.asarray(groups), eval_rows, one_fold)
    everything = np.ones(len(y), bool)
    held_sets = held_by.sets(everything)
    units = [(held, scored, held_by.sets(~held)) for held, scored in held_by.units()]  # the same for every column
    for j, col in enumerate(columns):
        def cands_for(rows, j=j):
            return candidates(labels[rows, j], methods, round_grids, kmeans_ks)

        before_sets, after_sets = _nested(y[:, j], p[:, j], everything, held_sets, cands_for)
        before, after = float(before_sets.mean()), float(after_sets.mean())
        honest = _honest(y[:, j], p[:, j], held_by, units, cands_for, margin)
        gain = float(np.mean(np.subtract(honest["parts"]["after"], honest["parts"]["before"])))
        method, params = choose(y[:, j], p[:, j], cands_for(everything))
        applied = clears(before_sets, after_sets, margin, held_by, len(y)) and method != "none"
        report[col] = {"method": method if applied else "none", "params": params if applied else {},
                       "before": before, "after_nested": after, "applied": applied,
                       "gain": (after - before) if applied else 0.0, "after_honest": before + gain,
                       "by_part": {k: np.round(v, 6).tolist() for k, v in honest["parts"].items()},
                       "by_held_set": {"before": np.round(honest["sets"]["before"], 6).tolist(),
                                       "honest": np.round(honest["sets"]["after"], 6).tolist()}}
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


# One finished fold cannot show how its estimate moves between folds: benchmarks/postprocess_transfer.py
# measured it (one fold's honest estimate against the gain on an unseen fold, its 476-row subsets; RMSE over the
# rotations and model kinds) and the report prints twice the largest as the uncertainty of a one-fold estimate.
ONE_FOLD_RMSE = 0.010


def uncertainty(part_gains: np.ndarray, one_fold: bool) -> dict:
    """The honest gain's uncertainty, about a 95% interval's half width: from the spread of the folds' own gains
    (2 standard errors of their mean) with several finished folds; with one, 2 x ONE_FOLD_RMSE (measured)."""
    if one_fold or len(part_gains) < 2:
        return {"plus_minus": 2 * ONE_FOLD_RMSE, "from": "a measured rule (one fold: 2 x the RMSE of one fold's "
                f"estimate on unseen folds, {ONE_FOLD_RMSE}; benchmarks/postprocess_transfer.py)"}
    se = float(np.std(part_gains, ddof=1) / np.sqrt(len(part_gains)))
    return {"plus_minus": 2 * se, "from": f"the {len(part_gains)} folds' own gains (2 standard errors; sd "
            f"{np.std(part_gains, ddof=1):.4f})"}


def summary(report: dict, one_fold: bool = False) -> dict:
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
    if all("by_part" in r for r in report.values()):
        parts = np.mean([np.subtract(r["by_part"]["after"], r["by_part"]["before"]) for r in report.values()], axis=0)
        out["honest_gain_by_part"] = parts.round(6).tolist()
        out["honest_uncertainty"] = uncertainty(parts, one_fold)
    return out


def gain_text(pp: dict, detail: bool = True) -> str:
    """The honest gain with its uncertainty, and how one test set's gain varies (a summary()'s keys): the words the
    report, the demo summary and the log share."""
    u, g = pp.get("honest_uncertainty"), pp.get("honest_gain_by_held_set")
    if not g:
        return ""
    gain = f"gain {pp['after_honest'] - pp['before']:+.4f}"
    if u:
        gain += f" +- {u['plus_minus']:.4f}" + (f" (uncertainty from {u['from']})" if detail else "")
    if not detail:
        return f"{gain}; one held set's gain +-{g['sd']:.4f} (sd)"
    return (f"{gain}; one held set's gain varies with a standard deviation of {g['sd']:.4f}, from {g['min']:+.4f} "
            f"to {g['max']:+.4f} over {g['n']} sets")


def apply(preds: np.ndarray, report: dict, columns) -> np.ndarray:
    out = np.array(preds, float, copy=True)
    for j, col in enumerate(columns):
        r = report.get(col, {"method": "none"})
        out[:, j] = apply_one(out[:, j], r["method"], r.get("params", {}))
    return np.clip(out, 0.0, 1.0)
