"""What a finished fold writes, whichever way it was trained (fine-tuned, or a ridge on frozen features):
its coding, weights, out-of-fold and test predictions, history and metrics, and last finished.json with the
hashes later stages check."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipeline.core import files, provenance
from pipeline.core.columns import ID
from pipeline.data import metrics, submission
from pipeline.run.rundir import Run, RunError, architecture, describe_differences


def bce(y, p, eps: float = 1e-7) -> float:
    """The binary cross-entropy history.csv logs for a fold's predictions (both run kinds, one learning-curve plot)."""
    return float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))


def describe(run: Run, model):
    """The run's one model description (model.json): written by its first fold, the same for every later one."""
    from pipeline.modeling.model import model_to_json

    description = model_to_json(model)
    if not run.model.is_file():
        files.write_text(run.model, description)
    elif differences := describe_differences(run.architecture(), architecture(json.loads(description))):
        raise RunError(f"{run.model} describes another model than these settings build ({differences}; the backbone "
                       "at model.path changed?); a run keeps one model description: train a new train.run_name")


def save_epochs(fold, ids: np.ndarray, preds: list[np.ndarray]):
    """Every epoch's out-of-fold predictions, so a report can score the last epoch, or an epoch chosen on the
    other folds, beside the kept one (evaluate/epochs.py). Written before finished.json."""
    with files.atomic_path(fold.epoch_oof, suffix=".npz") as tmp:
        np.savez_compressed(tmp, qa_id=np.asarray(ids, np.int64), preds=np.stack(preds).astype(np.float32))


def save_fold(run: Run, k: int, model, coding, inp, va, oof, test_pred, history: list[dict], result: dict) -> dict:
    """Write fold k of run; `result` holds how it was trained, to which the score and precision are added."""
    import keras

    from pipeline.modeling import model as model_lib

    out = run.fold(k)
    score = metrics.spearman(inp.y[va], oof)
    files.write_json(out.coding, coding.to_dict())
    needs = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights) + 2**20  # + HDF5's own
    with files.atomic_path(out.weights, suffix=".weights.h5", needs=needs) as tmp:
        model_lib.save_weights(model, tmp)
        weights_sha = files.sha256_file(tmp)
    files.write_csv(out.oof, submission.predictions_frame(inp.train[ID].to_numpy()[va], oof))
    files.write_csv(out.test, submission.predictions_frame(inp.test[ID], test_pred))
    files.write_csv(out.history, pd.DataFrame(history))
    result = {"fold": k, "val_spearman": score.mean, "n_constant": score.n_constant, **result,
              "precision": keras.mixed_precision.global_policy().name, "backend": keras.config.backend(),
              "per_column": score.per_column,
              "provenance": provenance.record()}
    files.write_json(out.metrics, result)
    files.write_json(out.finished, {"weights_sha256": weights_sha, "test_sha256": inp.test_sha,  # last
                                    "model_sha256": run.model_sha256(), "coding_sha256": files.sha256_file(out.coding)})
    return result
