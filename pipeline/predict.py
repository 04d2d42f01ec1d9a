"""Average a run's fold models over a CSV in the test schema.

Needs only the run directory (backbone.json, tokenizer/, fold weights) and the CSV, so the same
code predicts on a Kaggle kernel from a bundled run. When the CSV is the very file the folds
already predicted while training, their saved test predictions are averaged instead.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import batching, data, encode, files, runs
from . import tokenizer as tokenizer_lib
from .schema import ID, TARGETS

log = logging.getLogger(__name__)


def predict_run(run_dir: Path, csv_path: Path, out_dir: Path | None = None, cache_dir: Path | None = None,
                batch_size: int | None = None, reuse: bool = True) -> Path:
    run_dir, csv_path = Path(run_dir), Path(csv_path)
    out_dir = Path(out_dir) if out_dir else run_dir / "predictions"
    out = out_dir / f"{csv_path.stem}.csv"
    folds = runs.finished_folds(run_dir)
    if not folds:
        raise FileNotFoundError(f"{run_dir}: no finished fold to predict with; run `python run.py train` first")
    sha = files.sha256_file(csv_path)
    stamp = {"input": str(csv_path), "input_sha256": sha, "folds": folds}
    stamp_path = out.with_suffix(".json")
    if out.is_file() and stamp_path.is_file() and files.read_json(stamp_path) == stamp:
        return out
    rcfg = runs.load_config(run_dir)
    frame = data.read_csv(csv_path, "test")
    if rcfg.data.clean_text:
        data.clean_frame(frame)
    fold_tests = [runs.fold_dir(run_dir, k) / "test.csv" for k in folds]
    same_file = all(files.read_json(runs.fold_dir(run_dir, k) / "metrics.json").get("test_sha256") == sha
                    for k in folds)
    if reuse and same_file and all(p.is_file() for p in fold_tests):
        preds = np.mean([pd.read_csv(p).set_index(ID).loc[frame[ID], list(TARGETS)].to_numpy() for p in fold_tests], 0)
    else:
        preds = _predict_with_weights(run_dir, rcfg, frame, folds, cache_dir, batch_size)
    files.write_csv(out, runs.predictions_frame(frame[ID], preds))
    files.write_json(stamp_path, stamp)
    return out


def _predict_with_weights(run_dir, rcfg, frame, folds, cache_dir, batch_size) -> np.ndarray:
    import keras

    from . import device

    info = files.read_json(run_dir / "run.json")
    tok = tokenizer_lib.load(run_dir / "tokenizer")
    if tok.fingerprint != info["tokenizer_fingerprint"]:
        raise ValueError(f"{run_dir / 'tokenizer'} differs from the tokenizer the run was trained with")
    cache_dir = Path(cache_dir) if cache_dir else run_dir / "cache"
    enc, _ = encode.encode_cached(rcfg.encode, cache_dir, frame, "predict", tok, info["uses_segments"])
    device.set_precision(rcfg.train.mixed_precision, device.accelerator_kind(device.strategy()))
    t = rcfg.train
    total = np.zeros((len(frame), len(TARGETS)))
    for k in folds:
        model = runs.load_fold_model(run_dir, k)
        total += batching.predict(model, enc.inputs(), enc.lengths, batch_size or t.eval_batch_size,
                                  t.bucketing, t.dynamic_padding, t.pad_multiple)
        keras.backend.clear_session()
        log.info("%s: fold %d predicted %d rows", run_dir.name, k, len(frame))
    return total / len(folds)


def apply_postprocess(run_dir: Path, pred_csv: Path) -> Path | None:
    """<stem>.postprocessed.csv with the run's fitted post-processing (from `validate`), if there is one."""
    from . import postprocess

    pp_file = Path(run_dir) / "postprocess.json"
    if not pp_file.is_file():
        return None
    out = pred_csv.with_name(pred_csv.stem + ".postprocessed.csv")
    stamp_path, stamp = out.with_suffix(".json"), {"predictions": files.sha256_file(pred_csv),
                                                   "postprocess": files.sha256_file(pp_file)}
    if out.is_file() and stamp_path.is_file() and files.read_json(stamp_path) == stamp:
        return out
    frame = pd.read_csv(pred_csv)
    values = postprocess.apply(frame[list(TARGETS)].to_numpy(), files.read_json(pp_file), TARGETS)
    files.write_csv(out, runs.predictions_frame(frame[ID], values))
    files.write_json(stamp_path, stamp)
    return out


def predict(cfg, input_csv: str | None = None) -> list[Path]:
    csv = Path(input_csv) if input_csv else cfg.data_file("test_file")
    out = predict_run(cfg.run_dir, csv, cache_dir=cfg.path(cfg.encode.cache_dir))
    return [out] + [p for p in [apply_postprocess(cfg.run_dir, out)] if p]
