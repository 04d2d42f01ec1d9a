"""Cheaper dropout masks for training on a CPU (TensorFlow): one 32-bit random draw gives four elements' masks.

Keras' own dropout (tf.nn.experimental.stateless_dropout) draws a float uniform for every element, compares it,
scales and selects. On a CPU that is a large share of a BERT training step: the attention probabilities are
dropped too (batch x heads x L x L elements per layer). ByteMaskDropout draws a quarter of the random words, reads
each as four bytes, keeps the elements whose byte is at least rate * 256, and multiplies by the scaled mask:
forward + backward 1.7x cheaper in float32 and bfloat16 on the attention probabilities' shape (benchmarks/README.md,
"The CPU at its limit"). The rate is rounded to 1/256 (0.1 drops 26/256 = 10.2% of elements: what bfloat16's own
uniforms already give) and the scale uses the rounded rate, so the expected output is the input.
"""
from __future__ import annotations

import keras

LEVELS = 256  # one byte per element


def byte_threshold(rate: float) -> int:
    """The byte value below which an element is dropped: rate rounded to 1/256 (at most 255: some always kept)."""
    return min(LEVELS - 1, max(0, round(rate * LEVELS)))


class ByteMaskDropout(keras.layers.Dropout):
    """keras.layers.Dropout with byte masks when training (TensorFlow); anything else (inference, a noise_shape,
    rate 0) is Dropout's own. Holds no weights and the same config, so saved models and weights are unchanged."""

    def call(self, inputs, training=False):
        threshold = byte_threshold(self.rate)
        if not training or not threshold or self.noise_shape is not None:
            return super().call(inputs, training=training)
        import tensorflow as tf

        seed = keras.random.randint((2,), 0, 2 ** 31 - 1, seed=self.seed_generator)  # a fresh pair per call
        count = tf.size(inputs)
        words = tf.random.stateless_uniform([(count + 3) // 4], seed=seed, minval=None, maxval=None, dtype=tf.uint32)
        draws = tf.reshape(tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:count], tf.shape(inputs))
        scale = tf.constant(LEVELS / (LEVELS - threshold), inputs.dtype)
        return inputs * (tf.cast(draws >= tf.constant(threshold, tf.uint8), inputs.dtype) * scale)


def use_byte_masks(model: keras.Layer) -> int:
    """Turn every plain keras Dropout inside model (a keras-hub backbone: embeddings, attention probabilities,
    attention and feed-forward outputs) into a ByteMaskDropout; returns how many. Call it on TensorFlow only."""
    swapped = 0
    for layer in model._flatten_layers(include_self=False):
        if type(layer) is keras.layers.Dropout:
            layer.__class__ = ByteMaskDropout
            swapped += 1
    return swapped
