"""K-fold training. One fine-tuned fold = one call of train_fold (train.kind = "ridge": train/ridge.py);
finished folds are skipped on re-runs."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core import files
from pipeline.core.columns import ID, TARGETS
from pipeline.core.errors import UsageError
from pipeline.data import folds as folds_lib, metrics, tables
from pipeline.modeling import device, feeding
from pipeline.run.rundir import Run
from pipeline.text import batching, encode
from pipeline.train import finish, progress, ridge

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
    host_vocab: list
    pseudo: object = None  # pseudo.PseudoRows when train.pseudo is set


def prepare(cfg) -> tuple[Inputs, encode.Encoder]:
    encoder = encode.Encoder.for_model(cfg)
    train, test = tables.load(cfg, "train"), tables.load(cfg, "test")
    tables.check_same_rows(test, tables.load(cfg, "sample_submission"), cfg.data_file("test_file"),
                         cfg.data_file("sample_submission_file"))
    enc_train, enc_test = encoder.encode(train, "train"), encoder.encode(test, "test")
    for enc, split in ((enc_train, "train"), (enc_test, "test")):
        encode.check_fingerprint(enc, encoder.tok, split)
    from pipeline.modeling.model import host_vocabulary  # Keras (and its backend) only once training starts

    inputs = Inputs(train, test, enc_train, enc_test, tables.targets(train), folds_lib.read(cfg, train),
                    files.sha256_file(cfg.data_file("test_file")), host_vocabulary(train))
    if cfg.train.pseudo:
        from pipeline.train import pseudo

        inputs.pseudo = pseudo.load_for_training(cfg, encoder, cfg.train.folds or list(range(cfg.folds.n_folds)))
    return inputs, encoder


def epoch_eval(tcfg, val_feed, y_val, chooser=None):
    """Keras callback: validation Spearman each epoch (of the EMA weights when train.ema is on), the kept epoch's
    weights and predictions held (never recomputed), optional early stop. Spans every training stage.
    chooser: (feed, labels) of the inner rows that choose the epoch (train.keep = inner) in place of the held fold."""
    import keras

    from pipeline.train import optim

    class _Eval(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows, self.best, self.best_epoch, self.kept_weights, self.wait = [], -np.inf, -1, None, 0
            self.preds = []  # every epoch's validation predictions (oof_epochs.npz)
            self.best_pred = self.last_pred = None
            self.stopped, self.stage = False, "finetune"  # the loop sets "head_only" for a frozen-backbone stage

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            with optim.ema_weights(self.model.optimizer) as ema:
                pred = feeding.predict(self.model, val_feed, tcfg.eval_batch_size, tcfg.batching, xla=tcfg.xla)
                score = metrics.spearman(y_val, pred).mean
                chosen_by = score if chooser is None else metrics.spearman(chooser[1], feeding.predict(
                    self.model, chooser[0], tcfg.eval_batch_size, tcfg.batching, xla=tcfg.xla)).mean
                improved = chosen_by > self.best
                if (tcfg.keep != "last" and improved) or (tcfg.keep == "last" and ema.active):
                    self.kept_weights = self.model.get_weights()
            val_loss = finish.bce(y_val, pred)
            opt = self.model.optimizer
            lr = optim.current_rate(opt)
            self.rows.append({"epoch": epoch + 1, "stage": self.stage,
                              "loss": float((logs or {}).get("loss", np.nan)), "val_loss": val_loss,
                              "val_spearman": score,  # lr_backbone: the backbone's own rate, 0 when frozen
                              **({} if chooser is None else {"inner_spearman": chosen_by}),
                              "lr_backbone": lr * getattr(opt, "backbone_multiplier", 1.0),
                              "train_seconds": seconds})  # the epoch's training, its evaluation not included
            log.info("  epoch %d: loss %.4f  val_loss %.4f  val_spearman %.4f%s  (%.0fs)", epoch + 1,
                     self.rows[-1]["loss"], val_loss, score,
                     "" if chooser is None else f"  inner_spearman {chosen_by:.4f} (chooses)", seconds)
            self.last_pred = pred
            self.preds.append(np.asarray(pred, np.float32))
            if improved:
                self.best, self.best_epoch, self.wait, self.best_pred = chosen_by, epoch + 1, 0, pred
            else:
                self.wait += 1
                if tcfg.patience and self.wait >= tcfg.patience:
                    self.model.stop_training = self.stopped = True

        def restore(self):
            """After the last stage: the kept weights (best epoch, or the last epoch's EMA) go into the model."""
            if self.kept_weights is not None:
                self.model.set_weights(self.kept_weights)

    return _Eval()


def global_batch(tcfg, replicas: int) -> int:
    """Rows per optimizer step over every replica (train.batch_size is per replica and per micro-batch)."""
    return tcfg.batch_size * replicas * tcfg.grad_accum


def check_fits(cfg, info, fold: np.ndarray, batch: int, replicas: int):
    """Settings whose valid range depends on the backbone and the data, checked before any work: weighted pooling
    reads at most the backbone's layers; an optimizer step takes at most a fold's training rows."""
    m = cfg.model
    if m.pooling == "weighted" and info.num_layers and not 1 <= m.pool_layers <= info.num_layers:
        raise UsageError(f"model.pool_layers = {m.pool_layers}: the backbone at {info.path} has {info.num_layers} "
                         f"layers; expected 1 .. {info.num_layers}")
    rows = min(int((fold != k).sum()) for k in np.unique(fold))
    if batch > rows:
        raise UsageError(f"train.batch_size x {replicas} replica(s) x train.grad_accum = {batch} rows per optimizer "
                         f"step, more than the {rows} training rows of the smallest fold; expected at most {rows} "
                         f"(train.grad_accum <= {max(rows // (cfg.train.batch_size * replicas), 1)})")


def phases(tcfg) -> list[tuple[int, bool]]:
    """(epochs, head_only) per training phase: the head-only phase (backbone frozen) first, last or absent."""
    full = [(tcfg.epochs, False)] if tcfg.epochs else []
    if not tcfg.head_only_epochs:
        return full
    head = [(tcfg.head_only_epochs, True)]
    return head + full if tcfg.head_only_stage == "first" else full + head


def loss_function(coding, pos_weight: list[float]):
    """BCE on the coding's units; pos_weight (one value, or one per target) weighs each positive term."""
    import keras
    from keras import ops

    if not pos_weight:
        return keras.losses.BinaryCrossentropy()
    per_column = np.full(len(TARGETS), pos_weight[0]) if len(pos_weight) == 1 else np.asarray(pos_weight)
    w = coding.expand(per_column)

    def weighted_bce(y_true, y_pred):
        p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
        y_true = ops.cast(y_true, "float32")
        return ops.mean(-(w * y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p)), axis=-1)

    return weighted_bce


def _probe(model, ds, tcfg, k: int, batch: int, run: Run) -> dict:
    """train.max_steps: a throughput probe. Writes probes/fold<k>.json only: no weights, no metrics.json,
    so the fold stays unfinished and a later real run trains it in full."""
    import keras

    steps = tcfg.max_steps
    fit_steps = feeding.steps_per_epoch(steps, tcfg.grad_accum)  # JAX: one per micro-batch
    rows = batch * steps // fit_steps
    warm = min(2, fit_steps - 1)  # the first steps trace the shapes; time the rest
    clock = progress.StepClock(warm)
    model.fit(ds, epochs=1, steps_per_epoch=fit_steps,
              callbacks=[clock, *progress.callbacks(tcfg, f"probe fold {k}", fit_steps, rows)], verbose=0)
    result = {"fold": k, "probe": True, "steps": steps, "batch_size": batch,
              "train_samples_per_s": (fit_steps - warm) * rows / max(clock.seconds, 1e-9)}
    files.write_json(run.probe(k), result)
    log.info("probe fold %d: %d steps, %.2f samples/s (not a finished fold)", k, steps, result["train_samples_per_s"])
    keras.backend.clear_session()
    return result


def train_fold(cfg, k: int, inp: Inputs, info, strat, run: Run) -> dict:
    import keras

    from pipeline.modeling import model as model_lib, targets
    from pipeline.train import optim

    tcfg = cfg.train
    keras.utils.set_random_seed(tcfg.seed * 1000 + k)  # derived from the run seed: a resumed fold repeats
    tr, va = np.flatnonzero(inp.fold != k), np.flatnonzero(inp.fold == k)
    inner = np.array([], int)
    if tcfg.keep == "inner":  # the epoch is chosen on training questions held out of training, never on fold k
        tr, inner = folds_lib.inner_split(inp.train[cfg.folds.group_key].to_numpy(), tr, tcfg.inner_share,
                                          tcfg.seed * 1000 + k)
    coding = targets.fit(tcfg.targets, inp.y[tr])  # training rows only
    replicas = strat.num_replicas_in_sync
    batch = global_batch(tcfg, replicas)
    steps = batching.batches_per_epoch(len(tr), batch)
    with strat.scope():
        model = model_lib.build(cfg, info.path, coding, inp.host_vocab,
                                like=run.architecture() if run.model.is_file() else None)
        model.micro_batches = tcfg.grad_accum
        loss = loss_function(coding, tcfg.pos_weight)
        factors = model_lib.layer_multipliers(model, tcfg.lr_layer_decay)
    train_feed, test_feed = model.feed(inp.enc_train, inp.train), model.feed(inp.enc_test, inp.test)
    feed, y_train, weights = train_feed.rows(tr), coding.encode(inp.y[tr]), None
    n_pseudo = 0
    if inp.pseudo is not None:  # fold k's own labels (teacher fold k), on rows of no validation question
        feed, y_train, weights, n_pseudo = inp.pseudo.extend(k, feed, y_train, model, coding, inp.train,
                                                             np.concatenate([va, inner]), cfg.folds.group_key)
        steps = batching.batches_per_epoch(len(feed), batch)
    dataset = lambda first_epoch: feeding.train_dataset(  # noqa: E731  (endless: fit takes steps_per_epoch)
        feed, y_train, batch, tcfg.seed * 1000 + k, tcfg.batching, first_epoch, weights, tcfg.grad_accum)
    fit_steps = feeding.steps_per_epoch(steps, tcfg.grad_accum)
    finish.describe(run, model)
    log.info("fold %d: %d train rows, %d validation rows%s, %d steps/epoch, phases %s", k, len(tr), len(va),
             f", {len(inner)} inner rows choosing the epoch" if len(inner) else "", steps, phases(tcfg))
    if tcfg.max_steps:
        with strat.scope():
            optim.compile_built(model, optim.make(tcfg, tcfg.max_steps, model_lib.head_variables(model), factors,
                                                  reduced_by_step=True), loss, tcfg.xla)
        return _probe(model, dataset(0), tcfg, k, batch, run)
    callback = epoch_eval(tcfg, train_feed.rows(va), inp.y[va],
                          (train_feed.rows(inner), inp.y[inner]) if len(inner) else None)
    start, epoch = time.perf_counter(), 0
    for n_epochs, head_only in phases(tcfg):
        model.freeze_backbones(head_only)
        with strat.scope():
            opt = optim.make(tcfg, steps * n_epochs, model_lib.head_variables(model), factors, head_only,
                             reduced_by_step=True)
            optim.compile_built(model, opt, loss, tcfg.xla)
        what = f"fold {k}" + (" (head only)" if head_only else "")
        callback.stage = "head_only" if head_only else "finetune"
        model.fit(dataset(epoch), initial_epoch=epoch, epochs=epoch + n_epochs, steps_per_epoch=fit_steps,
                  verbose=0, callbacks=[callback, *progress.callbacks(tcfg, what, fit_steps, batch * steps // fit_steps)])
        epoch += n_epochs
        if callback.stopped:
            break
    callback.restore()
    seconds = time.perf_counter() - start
    oof = callback.last_pred if tcfg.keep == "last" else callback.best_pred
    test_pred = feeding.predict(model, test_feed, tcfg.eval_batch_size, tcfg.batching, xla=tcfg.xla)
    finish.save_epochs(run.fold(k), inp.train[ID].to_numpy()[va], callback.preds)
    result = finish.save_fold(run, k, model, coding, inp, va, oof, test_pred, callback.rows, {
        "best_epoch": len(callback.rows) if tcfg.keep == "last" else callback.best_epoch, "inner_rows": len(inner),
        "epochs_run": len(callback.rows), "train_seconds": seconds, "pseudo_rows": n_pseudo, "replicas": replicas,
        "global_batch": batch, "train_rows": len(feed),
        "train_samples_per_s": len(feed) * len(callback.rows) / seconds})  # every epoch, evaluations included
    keras.backend.clear_session()
    return result


def train(cfg) -> list:
    wanted = cfg.train.folds or list(range(cfg.folds.n_folds))
    run = Run.of(cfg)
    done = run.finished_folds()
    if not cfg.train.max_steps and done and set(wanted) <= set(done):
        run.check_compatible(cfg)
        run.check_data(tables.fingerprint(cfg))
        if not run.summary.is_file() or files.read_json(run.summary).get("folds_done") != done:  # killed before it
            run.summarize(tables.load(cfg, "train"))
        log.info("run %s: folds %s already finished", cfg.run_name, wanted)
        return [run.root, run.summary]
    with run.lock():
        return _train_folds(cfg, run, wanted)


def _train_folds(cfg, run: Run, wanted: list[int]) -> list:
    inp, encoder = prepare(cfg)
    info = encoder.info
    strat = device.strategy(cfg.train.strategy)
    kind = device.accelerator_kind(strat)
    policy = device.set_precision(cfg.train.mixed_precision, kind)
    extra = {"folds_fingerprint": folds_lib.fingerprint(cfg), "precision": policy,
             "data_fingerprint": tables.fingerprint(cfg)}
    if inp.pseudo is not None:
        extra["pseudo"] = inp.pseudo.record()
    replicas = strat.num_replicas_in_sync
    check_fits(cfg, info, inp.fold, global_batch(cfg.train, replicas), replicas)
    run.check_global_batch(global_batch(cfg.train, replicas), replicas)
    run.check_precision(policy)
    done = set(run.finished_folds())
    for k in sorted(done & set(wanted)):
        log.info("fold %d: already finished, skipped", k)
    todo = [k for k in wanted if k not in done]
    run.record(cfg, info, encoder.tok, write=bool(todo) and not cfg.train.max_steps, **extra)
    if cfg.train.kind == "ridge":
        ridge.train_folds(cfg, inp, info, strat, run, todo, global_batch(cfg.train, replicas))
        todo = []
    for k in todo:
        device.set_precision(cfg.train.mixed_precision, kind)  # per fold: each fold ends with clear_session
        r = train_fold(cfg, k, inp, info, strat, run)
        if not r.get("probe"):
            log.info("fold %d: val Spearman %.4f (best epoch %d/%d, %.0fs, %.1f samples/s)", k, r["val_spearman"],
                     r["best_epoch"], r["epochs_run"], r["train_seconds"], r["train_samples_per_s"])
    if not run.finished_folds():
        return [run.root]
    summary = run.summarize(inp.train)
    s = files.read_json(summary)
    log.info("run %s: OOF Spearman %.4f over folds %s (%d constant column(s))", run.name, s["oof_spearman"],
             s["folds_done"], s["n_constant"])
    return [run.root, summary]
