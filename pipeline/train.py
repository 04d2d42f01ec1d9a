"""K-fold fine-tuning. One fold = one call of train_fold; finished folds are skipped on re-runs."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import batching, data, device, encode, files, folds as folds_lib, layout, metrics, progress, runs, submission
from .schema import ID, TARGETS

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """Everything a fold needs, prepared once per run."""
    train: pd.DataFrame
    test: pd.DataFrame
    enc_train: encode.Encoded
    enc_test: encode.Encoded
    y: np.ndarray
    fold: np.ndarray
    test_sha: str


def prepare(cfg) -> tuple[Inputs, object, object]:
    tok, info = encode.for_model(cfg)
    train, test = data.load(cfg, "train"), data.load(cfg, "test")
    data.check_same_rows(test, data.load(cfg, "sample_submission"), cfg.data_file("test_file"),
                         cfg.data_file("sample_submission_file"))
    cache = cfg.cache_dir
    enc_train, _ = encode.encode_cached(cfg.encode, cache, train, "train", tok, info.uses_segments)
    enc_test, _ = encode.encode_cached(cfg.encode, cache, test, "test", tok, info.uses_segments)
    for enc, split in ((enc_train, "train"), (enc_test, "test")):
        encode.check_fingerprint(enc, tok, split)
    inputs = Inputs(train, test, enc_train, enc_test, data.targets(train), folds_lib.read(cfg, train),
                    files.sha256_file(cfg.data_file("test_file")))
    return inputs, info, tok


def epoch_eval(tcfg, val_inputs, val_lengths, y_val):
    """Keras callback: validation Spearman each epoch, best weights kept, optional early stop."""
    import keras

    class _Eval(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows, self.best, self.best_epoch, self.best_weights, self.wait = [], -np.inf, -1, None, 0
            self.best_pred = self.last_pred = None  # validation predictions of the kept epoch: never recomputed

        def on_epoch_end(self, epoch, logs=None):
            pred = batching.predict(self.model, val_inputs, val_lengths, tcfg.eval_batch_size,
                                    tcfg.bucketing, tcfg.dynamic_padding, tcfg.pad_multiple)
            score = metrics.spearman(y_val, pred).mean
            eps = 1e-7
            val_loss = float(-np.mean(y_val * np.log(pred + eps) + (1 - y_val) * np.log(1 - pred + eps)))
            lr = float(self.model.optimizer.learning_rate.numpy()) if hasattr(self.model.optimizer.learning_rate, "numpy") else float("nan")
            self.rows.append({"epoch": epoch + 1, "loss": float((logs or {}).get("loss", np.nan)),
                              "val_loss": val_loss, "val_spearman": score, "lr_backbone": lr})
            log.info("  epoch %d: loss %.4f  val_loss %.4f  val_spearman %.4f", epoch + 1, self.rows[-1]["loss"],
                     val_loss, score)
            self.last_pred = pred
            if score > self.best:
                self.best, self.best_epoch, self.wait, self.best_pred = score, epoch + 1, 0, pred
                if tcfg.keep == "best":
                    self.best_weights = self.model.get_weights()
            else:
                self.wait += 1
                if tcfg.patience and self.wait >= tcfg.patience:
                    self.model.stop_training = True

        def on_train_end(self, logs=None):
            if tcfg.keep == "best" and self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return _Eval()


def _probe(model, ds, tcfg, k: int, batch: int, run_dir) -> dict:
    """train.max_steps: a throughput probe. Writes probes/fold<k>.json only: no weights, no metrics.json,
    so the fold stays unfinished and a later real run trains it in full."""
    import keras

    steps = tcfg.max_steps
    warm = min(2, steps - 1)  # the first steps trace the shapes; time the rest
    clock = progress.StepClock(warm)
    model.fit(ds.repeat(), epochs=1, steps_per_epoch=steps,
              callbacks=[clock, *progress.callbacks(tcfg, f"probe fold {k}", steps, batch)],
              verbose=progress.keras_verbose(tcfg))
    result = {"fold": k, "probe": True, "steps": steps, "batch_size": batch,
              "train_samples_per_s": (steps - warm) * batch / max(clock.seconds, 1e-9)}
    files.write_json(layout.Run(run_dir).probe(k), result)
    log.info("probe fold %d: %d steps, %.2f samples/s (not a finished fold)", k, steps, result["train_samples_per_s"])
    keras.backend.clear_session()
    return result


def train_fold(cfg, k: int, inp: Inputs, info, strat, run_dir) -> dict:
    import keras

    from . import model as model_lib, optim

    tcfg = cfg.train
    keras.utils.set_random_seed(tcfg.seed * 1000 + k)  # derived from the run seed: a resumed fold repeats
    tr, va = np.flatnonzero(inp.fold != k), np.flatnonzero(inp.fold == k)
    replicas = strat.num_replicas_in_sync
    batch = tcfg.batch_size * replicas
    steps = -(-len(tr) // batch)
    with strat.scope():
        backbone = model_lib.load_backbone(info.path, cfg.model.random_init)
        model = model_lib.build(backbone, len(TARGETS), cfg.model.pooling, cfg.model.pool_layers,
                                cfg.model.dropout, cfg.model.dropout_samples)
        opt = optim.make(tcfg, steps, model_lib.head_variables(model, backbone))
        model.compile(optimizer=opt, loss=keras.losses.BinaryCrossentropy(), jit_compile=tcfg.xla)
    ds = batching.train_dataset(model_lib.model_inputs(model, inp.enc_train.inputs(tr)), inp.y[tr],
                                inp.enc_train.lengths[tr], batch, tcfg.seed * 1000 + k, tcfg.bucketing,
                                tcfg.dynamic_padding, tcfg.pad_multiple)
    run = layout.Run(run_dir)
    if not run.model.is_file():
        files.write_text(run.model, model_lib.model_to_json(model))
    log.info("fold %d: %d train rows, %d validation rows, %d steps/epoch", k, len(tr), len(va), steps)
    if tcfg.max_steps:
        return _probe(model, ds, tcfg, k, batch, run_dir)
    val_inputs, val_len = inp.enc_train.inputs(va), inp.enc_train.lengths[va]
    callback = epoch_eval(tcfg, val_inputs, val_len, inp.y[va])
    start = time.perf_counter()
    model.fit(ds, epochs=tcfg.epochs, callbacks=[callback, *progress.callbacks(tcfg, f"fold {k}", steps, batch)],
              verbose=progress.keras_verbose(tcfg))
    seconds = time.perf_counter() - start
    predict = lambda enc, rows=slice(None): batching.predict(  # noqa: E731
        model, enc.inputs(rows), enc.lengths[rows], tcfg.eval_batch_size, tcfg.bucketing, tcfg.dynamic_padding,
        tcfg.pad_multiple)
    oof = callback.best_pred if tcfg.keep == "best" else callback.last_pred
    score = metrics.spearman(inp.y[va], oof)
    out = run.fold(k)
    with files.atomic_path(out.weights, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
        weights_sha = files.sha256_file(tmp)
    files.write_csv(out.oof, submission.predictions_frame(inp.train[ID].to_numpy()[va], oof))
    files.write_csv(out.test, submission.predictions_frame(inp.test[ID], predict(inp.enc_test)))
    files.write_csv(out.history, pd.DataFrame(callback.rows))
    result = {"fold": k, "val_spearman": score.mean, "n_constant": score.n_constant,
              "best_epoch": callback.best_epoch if tcfg.keep == "best" else len(callback.rows),
              "epochs_run": len(callback.rows), "train_seconds": seconds,
              "train_samples_per_s": len(tr) * len(callback.rows) / seconds, "per_column": score.per_column}
    files.write_json(out.metrics, result)
    files.write_json(out.finished, {"weights_sha256": weights_sha, "test_sha256": inp.test_sha})  # last
    keras.backend.clear_session()
    return result


def train(cfg) -> list:
    wanted = cfg.train.folds or list(range(cfg.folds.n_folds))
    summary, done = layout.Run(cfg.run_dir).summary, runs.finished_folds(cfg.run_dir)
    if not cfg.train.max_steps and done and set(wanted) <= set(done):
        runs.check_compatible(cfg)
        if not summary.is_file() or files.read_json(summary).get("folds_done") != done:  # killed before it
            runs.summarize(cfg.run_dir, data.load(cfg, "train"))
        log.info("run %s: folds %s already finished", cfg.run_name, wanted)
        return [cfg.run_dir, summary]
    with runs.lock(cfg.run_dir):
        return _train_folds(cfg, wanted)


def _train_folds(cfg, wanted: list[int]) -> list:
    inp, info, tok = prepare(cfg)
    strat = device.strategy()
    kind = device.accelerator_kind(strat)
    policy = device.set_precision(cfg.train.mixed_precision, kind)
    run_dir = runs.open_run(cfg, info, tok, {"folds_fingerprint": folds_lib.fingerprint(cfg), "precision": policy})
    done = set(runs.finished_folds(run_dir))
    for k in wanted:
        if k in done:
            log.info("fold %d: already finished, skipped", k)
            continue
        device.set_precision(cfg.train.mixed_precision, kind)  # per fold: each fold ends with clear_session
        r = train_fold(cfg, k, inp, info, strat, run_dir)
        if not r.get("probe"):
            log.info("fold %d: val Spearman %.4f (best epoch %d/%d, %.0fs, %.1f samples/s)", k, r["val_spearman"],
                     r["best_epoch"], r["epochs_run"], r["train_seconds"], r["train_samples_per_s"])
    if not runs.finished_folds(run_dir):
        return [run_dir]
    summary = runs.summarize(run_dir, inp.train)
    s = files.read_json(summary)
    log.info("run %s: OOF Spearman %.4f over folds %s (%d constant column(s))", run_dir.name, s["oof_spearman"],
             s["folds_done"], s["n_constant"])
    return [run_dir, summary]
