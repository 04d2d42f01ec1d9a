"""The QUEST head's Keras layers: pooling, the per-target heads with multi-sample dropout, side features.

Registered under the "quest" package, so a saved model description names them and rebuilds them.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="quest")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over real tokens only."""

    def call(self, sequence, padding_mask):
        mask = ops.cast(ops.expand_dims(padding_mask, -1), sequence.dtype)
        return ops.sum(sequence * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="quest")
class WeightedLayerSum(keras.layers.Layer):
    """Softmax-weighted sum of hidden states (weights learned). init "equal": every logit 0 (equal weights);
    "last": -3 with the last state's at 0 (1st place: the top layer starts with most of the weight)."""

    def __init__(self, init="equal", **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        n = len(input_shape)
        start = [0.0] * n if self.init == "equal" else [-3.0] * (n - 1) + [0.0]
        self.logits = self.add_weight(shape=(n,), initializer=keras.initializers.Constant(start), name="layer_logits")

    def get_config(self):
        return {**super().get_config(), "init": self.init}

    def call(self, states):
        w = ops.softmax(self.logits)
        return sum(ops.cast(w[i], s.dtype) * s for i, s in enumerate(states))


@keras.saving.register_keras_serializable(package="quest")
class TargetHead(keras.layers.Layer):
    """Logits of a group of targets: one linear layer over all of them (hidden=0), or one small two-layer head
    per target (hidden units, GELU; 2nd place). `units` lists each target's output units (ordinal codings have
    several). Multi-sample dropout: `samples` dropout masks of the same features, logits averaged (1st place).

    batched (per-target heads): the heads' first layers are one Dense of len(units) * hidden units and their
    second layers one (targets, hidden, max units) kernel applied by einsum: the same functions as separate
    layers in 4 variables instead of 4 per target, so the train step traces and runs as fast as the linear
    head's. False: the separate Dense layers (hidden_i, out_i) of runs described before batching existed."""

    def __init__(self, units, hidden=0, rate=0.1, samples=1, batched=False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.hidden, self.rate, self.samples = [int(u) for u in units], int(hidden), rate, samples
        self.batched = bool(batched and hidden)
        self.dropout = keras.layers.Dropout(rate)
        if self.batched:
            self.hidden_dense = keras.layers.Dense(len(self.units) * self.hidden, activation="gelu", name="hidden")
        elif self.hidden:
            self.hidden_layers = [keras.layers.Dense(self.hidden, activation="gelu", name=f"hidden_{i}")
                                  for i in range(len(self.units))]
            self.out_layers = [keras.layers.Dense(u, name=f"out_{i}") for i, u in enumerate(self.units)]
        else:
            self.dense = keras.layers.Dense(sum(self.units))

    def build(self, input_shape):
        if self.batched:
            self.hidden_dense.build(input_shape)
            n, width = len(self.units), max(self.units)
            limit = (6.0 / (self.hidden + width)) ** 0.5  # each head's Glorot range, as its own Dense would have
            self.out_kernel = self.add_weight(shape=(n, self.hidden, width), name="out_kernel",
                                              initializer=keras.initializers.RandomUniform(-limit, limit))
            self.out_bias = self.add_weight(shape=(n, width), initializer="zeros", name="out_bias")
        elif self.hidden:
            for h, o in zip(self.hidden_layers, self.out_layers):
                h.build(input_shape)
                o.build((None, self.hidden))
        else:
            self.dense.build(input_shape)

    def _logits(self, x):
        if self.batched:
            n, width = len(self.units), max(self.units)
            h = ops.reshape(self.hidden_dense(x), (-1, n, self.hidden))
            out = ops.reshape(ops.einsum("bth,thu->btu", h, self.out_kernel) + self.out_bias, (-1, n * width))
            if min(self.units) == width:  # every target as wide: nothing to drop
                return out
            return ops.take(out, [t * width + j for t, u in enumerate(self.units) for j in range(u)], axis=1)
        if not self.hidden:
            return self.dense(x)
        return ops.concatenate([o(h(x)) for h, o in zip(self.hidden_layers, self.out_layers)], axis=-1)

    def call(self, x, training=None):
        if not training or self.samples == 1:
            return self._logits(self.dropout(x, training=training))
        return sum(self._logits(self.dropout(x, training=True)) for _ in range(self.samples)) / self.samples

    def compute_output_shape(self, input_shape):
        return (input_shape[0], sum(self.units))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "hidden": self.hidden, "rate": self.rate,
                "samples": self.samples, "batched": self.batched}


@keras.saving.register_keras_serializable(package="quest")
class OneHot(keras.layers.Layer):
    """(B, 1) integer ids -> (B, depth) one-hot rows in the compute dtype (side features)."""

    def __init__(self, depth, **kwargs):
        super().__init__(**kwargs)
        self.depth = int(depth)

    def call(self, ids):
        return ops.one_hot(ops.reshape(ids, (-1,)), self.depth, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "depth": self.depth}
