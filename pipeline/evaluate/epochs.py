"""Which epoch a score comes from. `train.keep = "best"` (not the default) keeps each fold's epoch with the best Spearman on its own
held rows, so the kept out-of-fold score was chosen on the rows that score it (optimistic). Beside it: the last
epoch's score, and an honest one, each fold at the epoch the *other* folds score best on average (no fold's
epoch is chosen on its own rows). From each fold's oof_epochs.npz (every epoch's predictions) and history.csv.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core import files
from pipeline.core.columns import ID, TARGETS
from pipeline.data import metrics, submission


def fold_curves(run) -> dict[int, np.ndarray]:
    """Each finished fold's validation Spearman by epoch (history.csv), for folds that kept every epoch's
    predictions."""
    curves = {}
    for k in run.finished_folds():
        fold = run.fold(k)
        if fold.epoch_oof.is_file() and fold.history.is_file():
            curves[k] = pd.read_csv(fold.history)["val_spearman"].to_numpy(float)
    return curves


def other_folds_epoch(curves: dict[int, np.ndarray], k: int) -> int | None:
    """The epoch (1-based) the other folds score best on average, over the epochs every one of them ran; None
    without another fold."""
    others = [c for j, c in curves.items() if j != k]
    if not others:
        return None
    n = min(len(c) for c in others)
    return int(np.argmax(np.mean([c[:n] for c in others], axis=0))) + 1


def _at(run, choice: dict[int, int]) -> pd.DataFrame:
    """The out-of-fold frame with fold k's predictions at epoch choice[k] (1-based; the fold's last epoch when it
    ran fewer)."""
    frames = []
    for k, epoch in choice.items():
        with np.load(run.fold(k).epoch_oof) as z:
            preds = z["preds"]
            frames.append(submission.predictions_frame(z["qa_id"], preds[min(epoch, len(preds)) - 1]))
    return pd.concat(frames, ignore_index=True)


def scores(run, truth: pd.DataFrame) -> dict:
    """OOF Spearman of the kept epochs (chosen on the rows that score them when train.keep = "best"), of the last
    epochs, and of the epochs chosen on the other folds (honest), with each fold's epochs; None where the folds
    lack per-epoch predictions (trained before they were kept) or, for the honest score, have no other fold."""
    curves = fold_curves(run)
    kept = {k: files.read_json(run.fold(k).metrics).get("best_epoch") for k in run.finished_folds()}
    out = {"kept_epochs": kept, "last_epochs": {k: len(c) for k, c in curves.items()}, "last": None,
           "other_folds": None, "other_folds_epochs": None}
    if not curves or set(curves) != set(run.finished_folds()):
        return out

    def score(choice: dict[int, int]) -> float:
        oof = _at(run, choice)
        rows = truth[truth[ID].isin(oof[ID])]
        return metrics.spearman(rows[list(TARGETS)].to_numpy(float), metrics.lookup(oof, rows[ID])).mean

    out["last"] = score(out["last_epochs"])
    honest = {k: other_folds_epoch(curves, k) for k in curves}
    if all(e is not None for e in honest.values()):
        out["other_folds"], out["other_folds_epochs"] = score(honest), honest
    return out
