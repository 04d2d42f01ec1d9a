"""Training progress that reads well both on a terminal and in a log file: one display per epoch.

Keras' own output stays off; the k-fold loop logs one result line per epoch (loss, validation Spearman). With
train.verbose = 1 an epoch also shows its progress: a bar on a terminal that clears when the epoch ends, or,
when output goes to a file or a pipe (a Kaggle kernel's log, `nohup`, CI), where a bar would become one
escape-coded line per step, a plain log line every ~10% of the epoch with the loss, samples/s and the ETA.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings

import keras  # imported by train only, after a stage has started

log = logging.getLogger(__name__)
LINES_PER_EPOCH = 10


def _terminal() -> bool:
    return sys.stdout.isatty()


def callbacks(tcfg, label: str, steps: int, batch: int) -> list:
    """The progress callbacks for `fit` (which runs with verbose=0)."""
    # Our tf.data pipeline is shuffled by plan (text/batching.py); Keras warns about shuffle=True on every fit.
    warnings.filterwarnings("ignore", message=r".*`shuffle=True` was passed.*")
    if tcfg.verbose != 1:
        return []
    return [EpochBar(label, steps)] if _terminal() else [LineProgress(label, steps, batch)]


class EpochBar(keras.callbacks.Callback):
    """A tqdm bar over one epoch's steps with the running loss; it clears itself when the epoch ends."""

    def __init__(self, label: str, steps: int):
        super().__init__()
        self.label, self.steps, self.bar = label, steps, None

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.steps, desc=f"{self.label} epoch {epoch + 1}", unit="step", leave=False)

    def on_train_batch_end(self, step, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()


class LineProgress(keras.callbacks.Callback):
    def __init__(self, label: str, steps: int, batch: int):
        super().__init__()
        self.label, self.steps, self.batch = label, steps, batch
        self.every = max(1, steps // LINES_PER_EPOCH)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch + 1, time.perf_counter()

    def on_train_batch_end(self, step, logs=None):
        done = step + 1
        if done % self.every and done != self.steps:
            return
        seconds = time.perf_counter() - self.start
        rate = done * self.batch / max(seconds, 1e-9)
        eta = (self.steps - done) * seconds / done
        log.info("%s epoch %d: step %d/%d  loss %.4f  %.1f samples/s  ETA %dm%02ds", self.label, self.epoch, done,
                 self.steps, float((logs or {}).get("loss", float("nan"))), rate, eta // 60, eta % 60)


class StepClock(keras.callbacks.Callback):
    """Seconds spent after the first `warm` steps (which trace the shapes)."""

    def __init__(self, warm: int):
        super().__init__()
        self.warm, self.seconds, self.t0 = warm, 0.0, None

    def on_train_begin(self, logs=None):
        if self.warm == 0:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, step, logs=None):
        if step + 1 == self.warm:
            self.t0 = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - (self.t0 or time.perf_counter())


def bar(iterable, desc: str):
    """A tqdm bar over an iterable on a terminal; nothing elsewhere."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=None, leave=False)


class StepBar(keras.callbacks.Callback):
    """Progress of a step-counted job that runs as several `fit` calls (pre-training between checkpoints): a tqdm
    bar on a terminal (verbose 1), else, or with verbose 2, a log line at each checkpoint with the loss,
    tokens/s and the ETA."""

    def __init__(self, label: str, total: int, start: int, verbose: int):
        from tqdm.auto import tqdm

        super().__init__()
        self.label, self.total, self.done, self.first, self.t0 = label, total, start, start, time.perf_counter()
        self.lines = verbose == 2 or (verbose == 1 and not _terminal())
        self.bar = tqdm(total=total, initial=start, desc=label, unit="step", disable=verbose != 1 or self.lines)

    def on_train_batch_end(self, step, logs=None):
        self.done += 1
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def checkpoint(self, state: dict, tokens_per_s: float):
        if not self.lines:
            return
        elapsed = time.perf_counter() - self.t0
        eta = (self.total - self.done) * elapsed / max(self.done - self.first, 1)
        log.info("%s: step %d/%d  loss %.4f  %.0f tokens/s  ETA %dm%02ds (checkpoint written)", self.label, self.done,
                 self.total, state.get("loss", float("nan")), tokens_per_s, eta // 60, eta % 60)

    def close(self):
        self.bar.close()
