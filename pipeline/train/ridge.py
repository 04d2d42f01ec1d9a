"""The frozen-feature run kind (train.kind = "ridge"): the backbone is never trained. Its pooled features
(model.pooling / model.pool_layers at their starting weights) are computed once per run, and each fold fits
one ridge per target on its training rows, the penalty chosen per target by question-grouped inner CV on
those rows only. The ridge becomes the head's linear layer (the model's output is linear: decode clips to
[0, 1]), so a fold is an ordinary fold: weights, coding, OOF, test predictions; validate, ensemble, package
and the kernel treat the run like any other, and the kernel computes the features from the bundled backbone.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from pipeline.data import metrics

log = logging.getLogger(__name__)
EPS = 1e-6  # a feature constant on the training rows is left unscaled


@dataclass
class RidgeFit:
    """One fold's ridge: the head's kernel (features x units) and bias in the features' own units."""
    kernel: np.ndarray
    bias: np.ndarray
    alphas: list[float]  # chosen penalty per target column
    inner_spearman: float  # the inner-CV Spearman at the chosen penalties

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.kernel + self.bias


def _coefficients(x, y, alphas):
    """(alphas, features, units) kernels and (alphas, units) biases in the features' own units, by one SVD of the
    standardised features (centred targets; the intercept is the targets' mean)."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > EPS, sd, 1.0)
    ym = y.mean(0)
    u, s, vt = np.linalg.svd((x - mu) / sd, full_matrices=False)
    uty = u.T @ (y - ym)
    kernels = np.stack([vt.T @ ((s / (s * s + a))[:, None] * uty) / sd[:, None] for a in alphas])
    return kernels, ym[None, :] - np.einsum("f,afu->au", mu, kernels)


def _paths(xa, ya, xb, alphas):
    """Predictions for xb of the ridge fitted on (xa, ya) at every penalty: (alphas, rows of xb, units)."""
    kernels, biases = _coefficients(xa, ya, alphas)
    return np.einsum("rf,afu->aru", xb, kernels) + biases[:, None, :]


def fit(x: np.ndarray, y: np.ndarray, coding, groups, alphas, inner_folds: int) -> RidgeFit:
    """Ridge per target on features x (rows, features) and labels y (rows, 30): the coding's units are the
    regression targets; each column's penalty is the one whose inner out-of-fold predictions (decoded to the
    column) rank best, over question-grouped inner folds (groups: one key per row)."""
    from sklearn.model_selection import GroupKFold

    x, alphas = np.asarray(x, np.float64), [float(a) for a in alphas]
    units = coding.encode(y).astype(np.float64)
    inner = np.zeros((len(alphas), len(x), units.shape[1]))
    n_groups = len(np.unique(np.asarray(groups)))
    for a_rows, b_rows in GroupKFold(min(inner_folds, n_groups)).split(x, groups=np.asarray(groups)):
        inner[:, b_rows] = _paths(x[a_rows], units[a_rows], x[b_rows], alphas)
    per_alpha = np.array([[metrics.spearman_column(y[:, c], col) for c, col in enumerate(coding.decode(p).T)]
                          for p in inner])  # (alphas, columns); nan where constant
    best = np.nanargmax(np.where(np.isnan(per_alpha), -np.inf, per_alpha), axis=0)
    kernels, biases = _coefficients(x, units, alphas)
    unit_best = np.repeat(best, coding.units())
    kernel = kernels[unit_best, :, np.arange(units.shape[1])].T
    bias = biases[unit_best, np.arange(units.shape[1])]
    inner_score = np.nan_to_num(per_alpha[best, np.arange(len(best))]).mean()
    return RidgeFit(kernel.astype(np.float32), bias.astype(np.float32), [alphas[i] for i in best], float(inner_score))


def set_head(model, r: RidgeFit):
    """The fitted ridge as the model's head (a QuestModel with one linear head and a linear output)."""
    head = model.get_layer("head")
    head.dense.kernel.assign(r.kernel)
    head.dense.bias.assign(r.bias)


def features(model, feed, tcfg, what: str) -> np.ndarray:
    """The head's input for every row of feed: pooled backbone features (+ side features), inference mode."""
    from pipeline.modeling import feeding
    from pipeline.modeling.model import head_features

    started = time.perf_counter()
    out = feeding.predict(head_features(model), feed, tcfg.eval_batch_size, tcfg.batching, f"{what} features", tcfg.xla)
    log.info("%s features: %d rows x %d in %.0fs", what, out.shape[0], out.shape[1], time.perf_counter() - started)
    return out


def train_folds(cfg, inp, info, strat, run, todo: list[int], batch: int) -> list[dict]:
    """Fit folds `todo` of a ridge run: features once (the backbone as built with the run seed, or as a finished
    fold holds it), then each fold's ridge on its training rows, written as an ordinary fold. batch: the global
    batch the run records (the ridge has none; a later fine-tune of the run would be refused by it anyway)."""
    import keras

    from pipeline.modeling import model as model_lib, targets
    from pipeline.train import finish

    if not todo:
        return []
    tcfg = cfg.train
    keras.utils.set_random_seed(tcfg.seed)  # random_init backbones: one backbone for every fold of the run
    started = time.perf_counter()
    with strat.scope():
        model = model_lib.build(cfg, info.path, targets.fit(tcfg.targets, inp.y), inp.host_vocab)
    finished = run.finished_folds()
    if finished:  # the backbone the finished folds were fitted on, whatever this machine's build gives
        model.load_weights(run.verify_weights(finished[0]))
    finish.describe(run, model)
    x = features(model, model.feed(inp.enc_train, inp.train), tcfg, "train")
    x_test = features(model, model.feed(inp.enc_test, inp.test), tcfg, "test")
    feature_seconds = time.perf_counter() - started
    groups = inp.train[cfg.folds.group_key].to_numpy()
    results = []
    for k in todo:
        fold_started = time.perf_counter()
        tr, va = np.flatnonzero(inp.fold != k), np.flatnonzero(inp.fold == k)
        coding = targets.fit(tcfg.targets, inp.y[tr])  # training rows only
        r = fit(x[tr], inp.y[tr], coding, groups[tr], tcfg.ridge_alphas, tcfg.ridge_inner_folds)
        edge = sum(a in (min(tcfg.ridge_alphas), max(tcfg.ridge_alphas)) for a in r.alphas)
        if edge and len(tcfg.ridge_alphas) > 1:
            log.warning("fold %d: %d of %d targets chose the smallest or largest of train.ridge_alphas %s; a wider "
                        "grid may score higher", k, edge, len(r.alphas), tcfg.ridge_alphas)
        set_head(model, r)
        model.coding = coding
        oof, test_pred = coding.decode(r.predict(x[va])), coding.decode(r.predict(x_test))
        seconds = time.perf_counter() - fold_started + feature_seconds / len(todo)
        score = metrics.spearman(inp.y[va], oof).mean
        history = [{"epoch": 1, "stage": "ridge", "loss": finish.bce(inp.y[tr], coding.decode(r.predict(x[tr]))),
                    "val_loss": finish.bce(inp.y[va], oof),
                    "val_spearman": score, "lr_backbone": 0.0, "train_seconds": seconds}]
        results.append(finish.save_fold(run, k, model, coding, inp, va, oof, test_pred, history, {
            "kind": "ridge", "best_epoch": 1, "epochs_run": 1, "train_seconds": seconds, "pseudo_rows": 0,
            "replicas": strat.num_replicas_in_sync, "global_batch": batch, "train_rows": len(tr),
            "train_samples_per_s": len(tr) / seconds, "ridge_alphas": r.alphas,
            "inner_spearman": r.inner_spearman}))
        log.info("fold %d: val Spearman %.4f (ridge, inner CV %.4f, penalties %s .. %s, %.0fs with its share of the "
                 "features)", k, score, r.inner_spearman, f"{min(r.alphas):g}", f"{max(r.alphas):g}", seconds)
    keras.backend.clear_session()
    return results
