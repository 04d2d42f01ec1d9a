"""Length bucketing and dynamic padding: batches of similar-length rows, cut to their longest row.

Training: each epoch shuffles rows (seeded by run seed and epoch), sorts them by length inside
chunks of `chunk_batches` batches, cuts the chunks into batches and shuffles the batch order. Each
batch is padded only up to its longest row, rounded up to `pad_multiple` so that the number of
distinct shapes (and so retracing / XLA compiles) stays small.
Inference: rows sorted by length, large batches, results put back in the original order.
"""
from __future__ import annotations

import numpy as np

CHUNK_BATCHES = 50


def plan(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, bucketing: bool) -> list[np.ndarray]:
    """Row-index batches covering every row once. rng=None keeps order (inference sorts by length)."""
    n = len(lengths)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if not bucketing:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def padded_length(longest: int, multiple: int, max_len: int) -> int:
    return int(min(max_len, -(-max(longest, 1) // multiple) * multiple))


def take(inputs: dict, rows: np.ndarray, lengths: np.ndarray, dynamic: bool, multiple: int) -> dict:
    max_len = next(iter(inputs.values())).shape[1]
    width = padded_length(int(lengths[rows].max()), multiple, max_len) if dynamic else max_len
    return {k: v[rows, :width] for k, v in inputs.items()}


def train_dataset(inputs: dict, y: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int,
                  bucketing: bool, dynamic: bool, multiple: int):
    """A tf.data pipeline over re-planned batches each epoch (deterministic for a seed)."""
    import tensorflow as tf

    epoch = {"n": 0}
    n_batches = -(-len(lengths) // batch_size)

    def generate():
        rng = np.random.default_rng([seed, epoch["n"]])
        epoch["n"] += 1
        for rows in plan(lengths, batch_size, rng, bucketing):
            yield take(inputs, rows, lengths, dynamic, multiple), y[rows]

    spec = ({k: tf.TensorSpec((None, None), tf.int32) for k in inputs}, tf.TensorSpec((None, y.shape[1]), tf.float32))
    ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
    return ds.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(tf.data.AUTOTUNE)


def _predict_fn(model):
    """One tf.function per model with a fully dynamic input signature: traced once, whatever the batch
    shapes (Keras' predict would trace each new padded length again on every call)."""
    import tensorflow as tf

    fn = getattr(model, "_quest_predict_fn", None)
    if fn is None:
        spec = {k: tf.TensorSpec((None, None), tf.int32, name=k) for k in model.input}
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        model._quest_predict_fn = fn
    return fn


def predict(model, inputs: dict, lengths: np.ndarray, batch_size: int, bucketing: bool = True,
            dynamic: bool = True, multiple: int = 32) -> np.ndarray:
    """Predictions in the original row order, computed over length-sorted batches."""
    import tensorflow as tf

    inputs = {k: v for k, v in inputs.items() if k in model.input}  # families without segment_ids
    batches = plan(lengths, batch_size, None, bucketing)
    if tf.distribute.has_strategy():  # under a strategy, let Keras spread batches over the replicas
        def generate():
            for rows in batches:
                yield take(inputs, rows, lengths, dynamic, multiple)

        spec = {k: tf.TensorSpec((None, None), tf.int32) for k in inputs}
        ds = tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(tf.data.AUTOTUNE)
        out = np.asarray(model.predict(ds.apply(tf.data.experimental.assert_cardinality(len(batches))), verbose=0))
    else:
        fn = _predict_fn(model)
        out = np.concatenate([np.asarray(fn(take(inputs, rows, lengths, dynamic, multiple))) for rows in batches])
    out = out.astype(np.float64)
    result = np.empty_like(out)
    result[np.concatenate(batches)] = out
    return result
