"""Batches into the model: tf.data pipelines over planned batches (text/batching.py) for training, and
length-sorted inference. The hot path has no per-row Python: tf.data gathers and slices the arrays (held as
tensors) in parallel with the training step.
"""
from __future__ import annotations

import numpy as np

from pipeline.core.config import Batching
from pipeline.modeling import backend
from pipeline.text.batching import Feed, plan


def spec(feed: Feed) -> dict:
    """A fully dynamic input signature: any rows, any widths."""
    import tensorflow as tf

    return {k: tf.TensorSpec((None,) * v.ndim, tf.int32, name=k) for k, v in feed.arrays.items()}


def steps_per_epoch(optimizer_steps: int, micro_batches: int) -> int:
    """fit's steps per epoch: one per optimizer step on TensorFlow (accumulate.py takes the k micro-batches as one
    batch), one per micro-batch on JAX (the optimizer accumulates them)."""
    return optimizer_steps * (micro_batches if backend.is_jax() else 1)


def train_dataset(feed: Feed, y: np.ndarray, batch_size: int, seed: int, shape: Batching = Batching(),
                  first_epoch: int = 0, weights: np.ndarray | None = None, micro_batches: int = 1):
    """An endless tf.data pipeline of training batches, epoch after epoch from `first_epoch`, each epoch planned
    anew (deterministic for a seed and epoch number); `fit` takes it with steps_per_epoch = batches_per_epoch.
    One iterator spans every epoch: a new iterator per epoch (a finite dataset) stalled the first step of an
    epoch by up to ~7 s on a 2-core CPU (benchmarks/README.md). Python only yields each batch's row indices
    and widths; gathering and slicing run in tf.data's threads, prefetched. weights: per-row loss weights
    (e.g. pseudo-labelled rows), yielded as Keras sample weights. shape: train.batching. On JAX: the same plans
    as a generator of numpy batches, each batch as `micro_batches` micro-batches (backend.py)."""
    import itertools

    lengths = feed.seq_lengths

    def plans():
        for epoch in itertools.count(first_epoch):
            for rows in plan(lengths, batch_size, np.random.default_rng([seed, epoch]), shape.bucketing,
                             shape.pad_multiple):
                yield rows.astype(np.int32), feed.widths(rows, shape.dynamic_padding, shape.pad_multiple)

    if backend.is_jax():
        return backend.train_batches(feed, y, plans, shape, micro_batches, weights)
    import tensorflow as tf

    seqs = {k: feed.sequence_of(k) for k in feed.arrays}
    tensors = {k: tf.constant(v, tf.int32) for k, v in feed.arrays.items()}
    targets = tf.constant(y, tf.float32)
    row_weights = None if weights is None else tf.constant(np.asarray(weights, np.float32))

    def gather(rows, widths):
        x = {k: tf.gather(t, rows) if seqs[k] is None else tf.gather(t, rows)[:, :widths[seqs[k]]]
             for k, t in tensors.items()}
        if row_weights is None:
            return x, tf.gather(targets, rows)
        return x, tf.gather(targets, rows), tf.gather(row_weights, rows)

    signature = (tf.TensorSpec((None,), tf.int32), tf.TensorSpec((len(feed.prefixes),), tf.int32))
    ds = tf.data.Dataset.from_generator(plans, output_signature=signature)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def _predict_fn(model, feed: Feed, xla: bool = False):
    """One tf.function per model with a fully dynamic input signature: traced once, whatever the batch
    shapes (Keras' predict would trace each new padded length again on every call). xla (train.xla): jit-compiled;
    XLA compiles once per distinct batch shape, which pad_multiple bounds."""
    import tensorflow as tf

    fn = getattr(model, "_quest_predict_fn", {}).get(xla)
    if fn is None:
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec(feed)], jit_compile=xla)
        model._quest_predict_fn = {**getattr(model, "_quest_predict_fn", {}), xla: fn}
    return fn


def auto_eval_batch() -> int:
    """train.eval_batch_size = 0: 64 rows on an accelerator; 16 on a CPU, where a batch of 16 computes as many
    tokens per second as one of 64 and pads less over a few hundred length-sorted rows."""
    if backend.is_jax():
        return 16 if backend.accelerator_kind() == "cpu" else 64
    import tensorflow as tf

    return 64 if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU") else 16


def predict(model, feed: Feed, batch_size: int, shape: Batching = Batching(), desc: str | None = None,
            xla: bool = False) -> np.ndarray:
    """Predictions in the original row order, computed over length-sorted batches (batch_size 0: auto_eval_batch);
    a model with a target coding (QuestModel.decode) gives its 30 columns in [0, 1]. shape: train.batching
    (bucketing sorts the rows by length; dynamic padding cuts each batch). desc: a progress bar over the batches
    (on a terminal). xla: jit-compiled (train.xla; JAX always compiles, once per batch shape)."""
    feed = feed.only(model.input)
    batch_size = batch_size or auto_eval_batch()
    batches = plan(feed.seq_lengths, batch_size, None, shape.bucketing, shape.pad_multiple)
    if backend.is_jax():
        out = backend.predict_batches(model, (feed.batch(rows, shape.dynamic_padding, shape.pad_multiple)
                                              for rows in _shown(batches, desc)))
        return _in_order(model, out, batches)
    import tensorflow as tf

    if tf.distribute.has_strategy():  # under a strategy, let Keras spread batches over the replicas
        def generate():
            for rows in batches:
                yield feed.batch(rows, shape.dynamic_padding, shape.pad_multiple)

        ds = tf.data.Dataset.from_generator(generate, output_signature=spec(feed)).prefetch(tf.data.AUTOTUNE)
        out = np.asarray(model.predict(ds.apply(tf.data.experimental.assert_cardinality(len(batches))), verbose=0))
    else:
        fn = _predict_fn(model, feed, xla)
        out = np.concatenate([np.asarray(fn(feed.batch(rows, shape.dynamic_padding, shape.pad_multiple)))
                              for rows in _shown(batches, desc)])
    return _in_order(model, out, batches)


def _shown(batches, desc: str | None):
    """The batches, behind a progress bar on a terminal when desc names the work."""
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, unit="batch", disable=None, leave=False) if desc else batches


def _in_order(model, out: np.ndarray, batches) -> np.ndarray:
    """Predictions of length-sorted batches put back in the rows' order, decoded to the 30 columns."""
    out = out.astype(np.float64)
    result = np.empty_like(out)
    result[np.concatenate(batches)] = out
    return model.decode(result) if hasattr(model, "decode") else result
