"""Length bucketing and dynamic padding: batches of similar-length rows, each sequence cut to its longest row.

Training: each epoch shuffles rows (seeded by run seed and epoch), sorts them by length inside
chunks of `chunk_batches` batches, cuts the chunks into batches and shuffles the batch order. Each
sequence of a batch (one joint sequence, or the question and the answer sequence of a dual model) is
padded only up to its own longest row, rounded up to `pad_multiple`, so the number of distinct shapes
(and so retracing / XLA compiles) stays small.
The hot path has no per-row Python: a batch is planned as an index vector plus one width per sequence,
and tf.data gathers and slices the arrays (held as tensors) in parallel with the training step.
Inference: rows sorted by length, large batches, results put back in the original order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_BATCHES = 50
INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")  # keras-hub's names, one set per sequence


@dataclass
class Feed:
    """Model inputs of some rows: per-sequence arrays (N, L) that batches cut to their sequence's longest row,
    and per-row arrays (N, 1) such as side features, taken whole."""
    arrays: dict
    seq_lengths: np.ndarray  # (N, S) true tokens of each sequence
    prefixes: tuple = ("",)  # sequence s owns the arrays named prefixes[s] + token_ids / segment_ids / padding_mask

    def __len__(self) -> int:
        return len(self.seq_lengths)

    @property
    def lengths(self) -> np.ndarray:
        return self.seq_lengths.sum(axis=1)

    def sequence_of(self, name: str) -> int | None:
        """The sequence an input belongs to (None: a per-row input)."""
        for s, prefix in sorted(enumerate(self.prefixes), key=lambda sp: -len(sp[1])):
            if name.startswith(prefix) and name[len(prefix):] in INPUT_NAMES:
                return s
        return None

    def rows(self, idx) -> "Feed":
        return Feed({k: v[idx] for k, v in self.arrays.items()}, self.seq_lengths[idx], self.prefixes)

    def only(self, names) -> "Feed":
        """The inputs a model takes (families without segment embeddings take no segment_ids)."""
        return Feed({k: v for k, v in self.arrays.items() if k in names}, self.seq_lengths, self.prefixes)

    def concat(self, other: "Feed") -> "Feed":
        """These rows, then other's (same inputs, same sequence widths)."""
        if other.prefixes != self.prefixes or set(other.arrays) != set(self.arrays):
            raise ValueError(f"cannot join feeds of inputs {sorted(self.arrays)} and {sorted(other.arrays)}")
        return Feed({k: np.concatenate([v, other.arrays[k]]) for k, v in self.arrays.items()},
                    np.concatenate([self.seq_lengths, other.seq_lengths]), self.prefixes)

    def plus(self, extra: dict) -> "Feed":
        return Feed({**self.arrays, **extra}, self.seq_lengths, self.prefixes)

    def widths(self, rows: np.ndarray, dynamic: bool, multiple: int) -> np.ndarray:
        """Padded width of each sequence for a batch of rows."""
        full = self._max_lens()
        if not dynamic:
            return full
        longest = self.seq_lengths[rows].max(axis=0)
        return np.array([padded_length(int(n), multiple, int(m)) for n, m in zip(longest, full)], np.int32)

    def _max_lens(self) -> np.ndarray:
        full = np.zeros(len(self.prefixes), np.int32)
        for k, v in self.arrays.items():
            s = self.sequence_of(k)
            if s is not None:
                full[s] = v.shape[1]
        return full

    def batch(self, rows: np.ndarray, dynamic: bool, multiple: int) -> dict:
        w = self.widths(rows, dynamic, multiple)
        return {k: (v[rows] if (s := self.sequence_of(k)) is None else v[rows, :w[s]]) for k, v in self.arrays.items()}

    def spec(self):
        import tensorflow as tf

        return {k: tf.TensorSpec((None,) * v.ndim, tf.int32, name=k) for k, v in self.arrays.items()}


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


def batches_per_epoch(n_rows: int, batch_size: int) -> int:
    return -(-n_rows // batch_size)


def train_dataset(feed: Feed, y: np.ndarray, batch_size: int, seed: int, bucketing: bool, dynamic: bool,
                  multiple: int, first_epoch: int = 0, weights: np.ndarray | None = None):
    """An endless tf.data pipeline of training batches, epoch after epoch from `first_epoch`, each epoch planned
    anew (deterministic for a seed and epoch number); `fit` takes it with steps_per_epoch = batches_per_epoch.
    One iterator spans every epoch: a new iterator per epoch (a finite dataset) stalled the first step of an
    epoch by up to ~7 s on a 2-core CPU (benchmarks/README.md). Python only yields each batch's row indices
    and widths; gathering and slicing run in tf.data's threads, prefetched. weights: per-row loss weights
    (e.g. pseudo-labelled rows), yielded as Keras sample weights."""
    import itertools

    import tensorflow as tf

    seqs = {k: feed.sequence_of(k) for k in feed.arrays}
    tensors = {k: tf.constant(v, tf.int32) for k, v in feed.arrays.items()}
    targets = tf.constant(y, tf.float32)
    row_weights = None if weights is None else tf.constant(np.asarray(weights, np.float32))
    lengths = feed.lengths

    def plans():
        for epoch in itertools.count(first_epoch):
            for rows in plan(lengths, batch_size, np.random.default_rng([seed, epoch]), bucketing):
                yield rows.astype(np.int32), feed.widths(rows, dynamic, multiple)

    def gather(rows, widths):
        x = {k: tf.gather(t, rows) if seqs[k] is None else tf.gather(t, rows)[:, :widths[seqs[k]]]
             for k, t in tensors.items()}
        if row_weights is None:
            return x, tf.gather(targets, rows)
        return x, tf.gather(targets, rows), tf.gather(row_weights, rows)

    spec = (tf.TensorSpec((None,), tf.int32), tf.TensorSpec((len(feed.prefixes),), tf.int32))
    ds = tf.data.Dataset.from_generator(plans, output_signature=spec)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def _predict_fn(model, feed: Feed):
    """One tf.function per model with a fully dynamic input signature: traced once, whatever the batch
    shapes (Keras' predict would trace each new padded length again on every call)."""
    import tensorflow as tf

    fn = getattr(model, "_quest_predict_fn", None)
    if fn is None:
        fn = tf.function(lambda x: model(x, training=False), input_signature=[feed.spec()])
        model._quest_predict_fn = fn
    return fn


def auto_eval_batch() -> int:
    """train.eval_batch_size = 0: 64 rows on an accelerator; 16 on a CPU, where a batch of 16 computes as many
    tokens per second as one of 64 and pads less over a few hundred length-sorted rows."""
    import tensorflow as tf

    return 64 if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU") else 16


def predict(model, feed: Feed, batch_size: int, bucketing: bool = True, dynamic: bool = True,
            multiple: int = 32) -> np.ndarray:
    """Predictions in the original row order, computed over length-sorted batches (batch_size 0: auto_eval_batch);
    a model with a target coding (QuestModel.decode) gives its 30 columns in [0, 1]."""
    import tensorflow as tf

    feed = feed.only(model.input)
    batch_size = batch_size or auto_eval_batch()
    batches = plan(feed.lengths, batch_size, None, bucketing)
    if tf.distribute.has_strategy():  # under a strategy, let Keras spread batches over the replicas
        def generate():
            for rows in batches:
                yield feed.batch(rows, dynamic, multiple)

        ds = tf.data.Dataset.from_generator(generate, output_signature=feed.spec()).prefetch(tf.data.AUTOTUNE)
        out = np.asarray(model.predict(ds.apply(tf.data.experimental.assert_cardinality(len(batches))), verbose=0))
    else:
        fn = _predict_fn(model, feed)
        out = np.concatenate([np.asarray(fn(feed.batch(rows, dynamic, multiple))) for rows in batches])
    out = out.astype(np.float64)
    result = np.empty_like(out)
    result[np.concatenate(batches)] = out
    return model.decode(result) if hasattr(model, "decode") else result
