"""Average a run's fold models over a CSV in the test schema.

Needs only the run directory (model.json, tokenizer/, fold weights) and the CSV, so the same
code predicts on a Kaggle kernel from a bundled run. When the CSV is the very file the folds
already predicted while training, their saved test predictions are averaged instead.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import batching, data, encode, files, layout, runs, submission
from . import tokenizer as tokenizer_lib
from .errors import MissingArtifact
from .schema import ID, TARGETS

log = logging.getLogger(__name__)


def predict_run(run_dir: Path, csv_path: Path, out_dir: Path | None = None, cache_dir: Path | None = None,
                batch_size: int | None = None, reuse: bool = True, precision: str | None = None) -> Path:
    """precision: "auto" (default: the run's train.predict_precision), "none", "float16" or "bfloat16"."""
    run_dir, csv_path = Path(run_dir), Path(csv_path)
    run = layout.Run(run_dir)
    folds = runs.finished_folds(run_dir)
    if not folds:
        raise MissingArtifact(f"{run_dir}: no finished fold to predict with; run `python run.py train` first")
    stamp = runs.prediction_stamp(run_dir, csv_path, precision)  # hashes the input once
    current = runs.current_prediction(run_dir, csv_path, out_dir, precision, stamp)
    if current:
        return current
    out, sha = run.prediction(csv_path, out_dir), stamp["input_sha256"]
    rcfg = runs.load_config(run_dir)
    frame = rows_for_run(rcfg, data.read_csv(csv_path, "predict"))
    fold_tests = [run.fold(k).test for k in folds]
    same_file = all(files.read_json(run.fold(k).finished).get("test_sha256") == sha for k in folds)
    if reuse and same_file and all(p.is_file() for p in fold_tests):
        preds = np.mean([pd.read_csv(p).set_index(ID).loc[frame[ID], list(TARGETS)].to_numpy() for p in fold_tests], 0)
    else:
        preds = _predict_with_weights(run_dir, rcfg, frame, folds, cache_dir, batch_size,
                                      precision or rcfg.train.predict_precision)
    files.write_csv(out, submission.predictions_frame(frame[ID], preds))
    files.write_json(run.prediction_stamp(csv_path, out_dir), {"stamp": stamp})  # last: marks the prediction current
    return out


def rows_for_run(rcfg, frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of rows to predict, cleaned as the run's training text was."""
    frame = frame.copy()
    return data.clean_frame(frame) if rcfg.data.clean_text else frame


def _encode_for_run(run_dir: Path, rcfg, frame, cache_dir):
    run = layout.Run(run_dir)
    info = files.read_json(run.info)
    tok = tokenizer_lib.load(run.tokenizer)
    if tok.fingerprint != info["tokenizer_fingerprint"]:
        raise runs.RunError(f"{run.tokenizer} differs from the tokenizer the run was trained with")
    cache_dir = Path(cache_dir) if cache_dir else run_dir / "cache"
    return encode.encode_cached(rcfg.encode, cache_dir, frame, "predict", tok, info["uses_segments"])[0]


def _fold_predict(run_dir, k, enc, frame, t, batch_size) -> np.ndarray:
    from . import model as model_lib  # TensorFlow: only once a prediction is made

    model = model_lib.load_fold(run_dir, k)
    return batching.predict(model, model.feed(enc, frame), batch_size or t.eval_batch_size, t.bucketing,
                            t.dynamic_padding, t.pad_multiple)


def fold_predictions(run_dir, rcfg, frame, folds, cache_dir, batch_size=None, precision="auto"):
    """(fold, predictions) for each fold in turn, in the precision this device supports (whatever the run trained
    in); a fold whose float16 predictions come out non-finite is recomputed in float32. frame: rows_for_run's."""
    import keras

    from . import device

    enc = _encode_for_run(run_dir, rcfg, frame, cache_dir)
    kind = device.accelerator_kind(device.strategy(quiet=True))
    t = rcfg.train
    for k in folds:
        policy = device.set_precision(precision, kind)  # again per fold: clear_session resets the policy
        pred = _fold_predict(run_dir, k, enc, frame, t, batch_size)
        keras.backend.clear_session()
        if not np.isfinite(pred).all() and policy != "float32":
            log.warning("%s fold %d: non-finite predictions under %s; recomputing in float32", run_dir.name, k, policy)
            keras.mixed_precision.set_global_policy("float32")
            pred = _fold_predict(run_dir, k, enc, frame, t, batch_size)
            keras.backend.clear_session()
        log.info("%s: fold %d predicted %d rows (%s)", run_dir.name, k, len(frame), policy)
        yield k, pred


def _predict_with_weights(run_dir, rcfg, frame, folds, cache_dir, batch_size, precision) -> np.ndarray:
    """The fold models' mean."""
    return np.mean([p for _, p in fold_predictions(run_dir, rcfg, frame, folds, cache_dir, batch_size, precision)], 0)


def seconds_per_row(run_dir: Path, frame: pd.DataFrame, cache_dir: Path | None = None, sample: int = 64) -> float:
    """Measured cost of one row through every finished fold: one warm-up batch, then one timed batch of
    rows drawn at random from frame (so their lengths follow its length profile)."""
    import time

    import keras

    from . import device, model as model_lib

    run_dir = Path(run_dir)
    rcfg = runs.load_config(run_dir)
    frame = rows_for_run(rcfg, frame)
    enc = _encode_for_run(run_dir, rcfg, frame, cache_dir or Path("/tmp/quest-cache"))
    device.set_precision(rcfg.train.predict_precision, device.accelerator_kind(device.strategy(quiet=True)))
    rows = np.random.default_rng(0).choice(len(frame), size=min(sample, len(frame)), replace=False)
    model = model_lib.load_fold(run_dir, runs.finished_folds(run_dir)[0])
    t = rcfg.train
    args = (model.feed(enc, frame).rows(rows), len(rows), False, t.dynamic_padding, t.pad_multiple)
    batching.predict(model, *args)
    start = time.perf_counter()
    batching.predict(model, *args)
    seconds = (time.perf_counter() - start) / len(rows)
    keras.backend.clear_session()
    return seconds * len(runs.finished_folds(run_dir))


def predict(cfg, input_csv: str | None = None) -> list[Path]:
    csv = Path(input_csv) if input_csv else cfg.data_file("test_file")
    out = predict_run(cfg.run_dir, csv, cache_dir=cfg.cache_dir)
    return [out]  # raw fold-mean predictions; post-processing is applied once, to the blend, by `ensemble`
