"""Average a run's fold models over a CSV in the test schema.

Needs only the run directory (model.json, tokenizer/, fold weights) and the CSV, so the same
code predicts on a Kaggle kernel from a bundled run. When the CSV is the very file the folds
already predicted while training, their saved test predictions are averaged instead.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import files
from pipeline.core.columns import ID, TARGETS
from pipeline.core.errors import MissingArtifact
from pipeline.data import submission, tables
from pipeline.modeling import feeding
from pipeline.run.rundir import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictor:
    """What predicting with one run needs, read once: the run, its config, where encodings are cached, the
    inference batch (None: the run's train.eval_batch_size) and the precision ("auto": what this device
    supports, whatever the run trained in; "none", "float16", "bfloat16")."""
    run: Run
    rcfg: object
    cache_dir: Path
    batch_size: int | None
    precision: str

    @classmethod
    def of(cls, run, cache_dir: Path | None = None, batch_size: int | None = None,
           precision: str | None = None) -> "Predictor":
        run = Run(run)
        rcfg = run.load_config()
        return cls(run, rcfg, Path(cache_dir) if cache_dir else run.cache, batch_size,
                   precision or rcfg.train.predict_precision)

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of rows to predict, cleaned as the run's training text was."""
        frame = frame.copy()
        return tables.clean_frame(frame) if self.rcfg.data.clean_text else frame

    def encode(self, frame: pd.DataFrame):
        return self.run.encoder(self.cache_dir, self.rcfg).encode(frame, "predict")

    def _fold(self, k: int, enc, frame) -> np.ndarray:
        model = self.run.load_fold(k)
        return feeding.predict(model, model.feed(enc, frame), self.batch_size or self.rcfg.train.eval_batch_size,
                                self.rcfg.train.batching, xla=self.rcfg.train.xla)

    def fold_predictions(self, frame: pd.DataFrame, folds: list[int]):
        """(fold, predictions) for each fold in turn; a fold whose float16 predictions come out non-finite is
        recomputed in float32. frame: rows()'s."""
        import keras

        from pipeline.modeling import device

        enc = self.encode(frame)
        kind = device.accelerator_kind(device.strategy(quiet=True))
        for k in folds:
            policy = device.set_precision(self.precision, kind)  # again per fold: clear_session resets the policy
            pred = self._fold(k, enc, frame)
            keras.backend.clear_session()
            if not np.isfinite(pred).all() and policy != "float32":
                log.warning("%s fold %d: non-finite predictions under %s; recomputing in float32", self.run.name, k,
                            policy)
                keras.mixed_precision.set_global_policy("float32")
                pred = self._fold(k, enc, frame)
                keras.backend.clear_session()
            log.info("%s: fold %d predicted %d rows (%s)", self.run.name, k, len(frame), policy)
            yield k, pred

    def mean(self, frame: pd.DataFrame, folds: list[int]) -> np.ndarray:
        """The fold models' mean."""
        return np.mean([p for _, p in self.fold_predictions(frame, folds)], 0)

    def cost(self, frame: pd.DataFrame, sample: int = 64) -> tuple[float, float]:
        """(fixed seconds, seconds per row), every finished fold included: fixed is loading a fold's model and
        tracing its predict step (fold 0's, measured, times the folds); per row is one timed batch of rows
        drawn at random from frame (so their lengths follow its length profile). Measured on the device
        prediction uses: one device (on T4 x2, one GPU)."""
        import time

        import keras

        from pipeline.modeling import device

        frame = self.rows(frame)
        enc = self.encode(frame)
        device.set_precision(self.precision, device.accelerator_kind(device.strategy(quiet=True)))
        rows = np.random.default_rng(0).choice(len(frame), size=min(sample, len(frame)), replace=False)
        folds = self.run.finished_folds()
        settings = self.rcfg.train.batching.unbucketed()  # one batch of exactly these rows
        start = time.perf_counter()
        model = self.run.load_fold(folds[0])
        args = (model.feed(enc, frame).rows(rows), len(rows), settings)
        feeding.predict(model, *args)
        first = time.perf_counter() - start
        start = time.perf_counter()
        feeding.predict(model, *args)
        batch = time.perf_counter() - start
        keras.backend.clear_session()
        return max(first - batch, 0.0) * len(folds), batch / len(rows) * len(folds)


PORTABLE_ROWS = 16  # held rows a fold trained on another backend predicts again here
PORTABLE_TOLERANCE = {"float32": 1e-4}  # max |difference|; a mixed-precision fold's own rounding: 2e-2


def check_backends(run, train: pd.DataFrame, folds: list[int] | None = None) -> list[str]:
    """Folds trained on another Keras backend than this process's are accepted only where they predict alike here:
    each predicts PORTABLE_ROWS of its held rows on this backend (float32), compared with what it predicted for them
    when it was trained. Returns what was checked, in words; a fold beyond tolerance is refused (RunError)."""
    import keras

    from pipeline.run.rundir import RunError

    run, here, said = Run(run), keras.config.backend(), []
    predictor = Predictor.of(run, precision="none")
    for k in run.finished_folds() if folds is None else folds:
        m = files.read_json(run.fold(k).metrics)
        theirs = m.get("backend", "tensorflow")  # folds trained before they recorded it: TensorFlow's
        if theirs == here:
            continue
        saved = pd.read_csv(run.fold(k).oof).head(PORTABLE_ROWS)
        rows = predictor.rows(train.set_index(ID).loc[saved[ID]].reset_index())
        diff = float(np.abs(predictor.mean(rows, [k]) - saved[list(TARGETS)].to_numpy()).max())
        tolerance = PORTABLE_TOLERANCE.get(m.get("precision", "float32"), 2e-2)
        if not diff <= tolerance:
            raise RunError(f"{run.root} fold {k} was trained on {theirs}; on {here} it predicts {len(saved)} of its held "
                           f"rows up to {diff:.2g} away from what it predicted there (tolerance {tolerance:g}): its "
                           f"weights do not carry across backends here. Predict with KERAS_BACKEND={theirs}")
        said.append(f"{run.name} fold {k} was trained on {theirs}: on {here} it predicts {len(saved)} of its held rows "
                    f"within {diff:.1e} of what it predicted there (tolerance {tolerance:g}), so it is used as is")
        log.info(said[-1])
    return said


def predict_run(run, csv_path: Path, out_dir: Path | None = None, cache_dir: Path | None = None,
                batch_size: int | None = None, reuse: bool = True, precision: str | None = None) -> Path:
    """`predict` for a run (a Run or its directory): precision "auto" (default: the run's
    train.predict_precision), "none", "float16" or "bfloat16"."""
    run, csv_path = Run(run), tables.require_file(csv_path, "predict")
    folds = run.finished_folds()
    if not folds:
        raise MissingArtifact(f"{run.root}: no finished fold to predict with; run `python run.py train` first")
    stamp = run.prediction_inputs(csv_path, precision)  # hashes the input once
    current = run.current_prediction(csv_path, out_dir, precision, stamp)
    if current:
        return current
    out, sha = run.prediction(csv_path, out_dir), stamp["input_sha256"]
    predictor = Predictor.of(run, cache_dir, batch_size, precision)
    frame = predictor.rows(tables.read_csv(csv_path, "predict"))
    fold_tests = [run.fold(k).test for k in folds]
    same_file = all(files.read_json(run.fold(k).finished).get("test_sha256") == sha for k in folds)
    if reuse and same_file and all(p.is_file() for p in fold_tests):
        preds = np.mean([pd.read_csv(p).set_index(ID).loc[frame[ID], list(TARGETS)].to_numpy() for p in fold_tests], 0)
    else:
        preds = predictor.mean(frame, folds)
    files.write_csv(out, submission.predictions_frame(frame[ID], preds))
    files.write_json(run.prediction_stamp(csv_path, out_dir), {"stamp": stamp})  # last: marks the prediction current
    return out


def predict(cfg, input_csv: str | None = None) -> list[Path]:
    csv = Path(input_csv) if input_csv else cfg.data_file("test_file")
    out = predict_run(cfg.run_dir, csv, cache_dir=cfg.cache_dir)
    return [out]  # raw fold-mean predictions; post-processing is applied once, to the blend, by `ensemble`
