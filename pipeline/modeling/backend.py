"""The Keras backend the pipeline runs on, and JAX's side of every backend-specific step.

TensorFlow is the default; KERAS_BACKEND=jax runs every stage that trains or predicts without TensorFlow
installed. The steps that differ are few, and each public function that has one dispatches at its top to the
function of the same role here: device placement and precision (device.py), training batches and prediction
(feeding.py), the training step (model.py: TensorFlow's accumulate.py, JAX's Keras step with the optimizer's
gradient_accumulation_steps and global_clipnorm), the learning rate read back (optim.py), masked-LM batches
(pretrain.py); a fold records its backend and versions (finish.py, provenance.py). TensorFlow's side stays where it was.
JAX compiles each batch shape once: the widths are bounded by train.pad_multiple, and the first batch of each
new shape is logged as it compiles.
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np

log = logging.getLogger(__name__)
BACKENDS = ("tensorflow", "jax")


def name() -> str:
    """The Keras backend of this process (KERAS_BACKEND, else Keras' config, else tensorflow)."""
    import keras

    return keras.config.backend()


def is_jax() -> bool:
    return name() == "jax"


def check_supported():
    if name() not in BACKENDS:
        from pipeline.core.errors import UsageError

        raise UsageError(f"KERAS_BACKEND={name()}: the pipeline runs on {' or '.join(BACKENDS)}")


class Placement:
    """JAX's answer to a tf.distribute strategy: the devices a step runs on. With several, Keras' DataParallel
    splits each batch over them (train.batch_size rows per device, as MirroredStrategy does)."""

    def __init__(self, devices: list):
        self.devices = devices
        self.num_replicas_in_sync = len(devices)

    def scope(self):
        if self.num_replicas_in_sync < 2:
            return contextlib.nullcontext()
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=self.devices))
        return contextlib.nullcontext()


def strategy(setting: str, say) -> Placement:
    """train.strategy on JAX: auto and mirrored use every local accelerator (DataParallel), default one device;
    tpu asks for TPU devices."""
    import jax

    devices = jax.local_devices()
    kind = devices[0].platform
    if setting == "tpu" and kind != "tpu":
        from pipeline.core.errors import UsageError

        raise UsageError(f"train.strategy = 'tpu' but JAX sees {kind} devices only")
    if setting == "default" or kind == "cpu":
        devices = devices[:1]
    if kind == "cpu":
        say("No accelerator found: training on CPU with JAX (TensorFlow is the faster CPU backend, README "
            "'Backends')")
    else:
        say("JAX on %d %s device(s): %s", len(devices), kind, [str(d) for d in devices])
    return Placement(devices)


def accelerator_kind() -> str:
    import jax

    return {"gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}.get(jax.local_devices()[0].platform, "cpu")


def compute_capability() -> int:
    """The first GPU's major compute capability (8 = Ampere), 0 when unknown."""
    import jax

    cc = str(getattr(jax.local_devices()[0], "compute_capability", "0") or "0")
    return int(cc.split(".")[0]) if cc.split(".")[0].isdigit() else 0


def describe() -> str:
    import jax

    d = jax.local_devices()
    if d[0].platform == "cpu":
        return f"CPU ({os.cpu_count()} cores) with JAX, float32"
    cc = compute_capability()
    return f"{len(d)} x {d[0].device_kind} (JAX), {'bfloat16' if cc >= 8 or d[0].platform == 'tpu' else 'float16'} mixed precision"


class Batches:
    """Training batches for Keras' fit on JAX: the same planned batches as TensorFlow's tf.data pipeline (an
    endless generator, epoch after epoch), each cut to its width, and with train.grad_accum = k each batch
    yielded as k micro-batches (np.array_split: the optimizer accumulates them, each weighing the same)."""

    def __init__(self, feed, y, plans, shape, micro_batches: int, weights=None):
        self.feed, self.y, self.plans, self.shape, self.k = feed, np.asarray(y, np.float32), plans, shape, micro_batches
        self.weights = None if weights is None else np.asarray(weights, np.float32)  # once, not per batch
        self.shapes: set = set()

    def __iter__(self):
        for rows, _ in self.plans():
            # k micro-batches per optimizer step; a batch of fewer rows than k repeats its rows to fill them
            for part in np.array_split(np.resize(rows, max(len(rows), self.k)), self.k):
                x = self.feed.batch(part, self.shape.dynamic_padding, self.shape.pad_multiple)
                shape = tuple(v.shape for v in x.values())
                if shape not in self.shapes:
                    self.shapes.add(shape)
                    log.info("JAX compiles the train step for batch shape %s (%d shape(s) so far; "
                             "train.pad_multiple bounds them)", {k: v.shape for k, v in x.items()
                                                                  if k.endswith("token_ids")}, len(self.shapes))
                if self.weights is None:
                    yield x, self.y[part]
                else:
                    yield x, self.y[part], self.weights[part]


def train_batches(feed, y, plans, shape, micro_batches: int, weights=None):
    return iter(Batches(feed, y, plans, shape, micro_batches, weights))


def predict_batches(model, batches) -> np.ndarray:
    """Keras' predict_on_batch, jit-compiled by JAX once per batch shape."""
    return np.concatenate([np.asarray(model.predict_on_batch(b)) for b in batches])
