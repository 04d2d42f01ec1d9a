"""Cheaper ops for TensorFlow on a CPU, swapped into a backbone's layers (same math, same weights, nothing saved
changes): byte-mask dropout, and GELU in float32 under a bfloat16 policy. Measured in benchmarks/README.md, "The
CPU at its limit".

Dropout. Keras' own (tf.nn.experimental.stateless_dropout) draws a float uniform for every element, compares it,
scales and selects; on a CPU that is a large share of a BERT training step, since the attention probabilities are
dropped too (batch x heads x L x L elements per layer). ByteMaskDropout draws a quarter of the random words, reads
each as four bytes, keeps the elements whose byte is at least rate * 256, and multiplies by the scaled mask:
forward + backward 1.7-2x cheaper in float32 and bfloat16 on the attention probabilities' shape
(`python benchmarks/cpu_probes.py dropout`). The rate is rounded
to 1/256 (0.1 drops 26/256 = 10.2% of elements: what bfloat16's own uniforms already give) and the scale uses the
rounded rate, so the expected output is the input.

GELU. TensorFlow's elementwise kernels are slow in bfloat16 on a CPU (Eigen converts element by element; only
the matrix multiplies run on the bfloat16 units): the feed-forward GELU over 16 x 512 x 1536 takes 62 ms forward
(134 ms with its gradient) in bfloat16, 48 ms (84 ms) computed in float32 between two casts, and comes closer to
float32's own result (`python benchmarks/cpu_probes.py gelu`; an earlier run: 90 and 58 ms forward).
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


GELUS = ("gelu", "gelu_approximate")  # keras' and keras-hub's (BERT's feed-forward) activation names


class Float32Activation:
    """An activation computed in float32 between two casts (the layer's compute dtype in, and out)."""

    def __init__(self, activation):
        self.activation = activation
        self.__name__ = f"{activation.__name__}_in_float32"

    def __call__(self, x):
        return keras.ops.cast(self.activation(keras.ops.cast(x, "float32")), x.dtype)


def use_cpu_ops(model: keras.Layer, dropout: bool = True, gelu: bool = True) -> dict:
    """Inside model (a keras-hub backbone): every plain keras Dropout (embeddings, attention probabilities,
    attention and feed-forward outputs) becomes a ByteMaskDropout, and every GELU of a layer computing in bfloat16
    or float16 runs in float32 (each unless turned off). Returns how many of each. For TensorFlow on a CPU
    (device.tensorflow_on_cpu)."""
    swapped = {"dropout": 0, "gelu": 0}
    for layer in model._flatten_layers(include_self=False):
        if dropout and type(layer) is keras.layers.Dropout:
            layer.__class__ = ByteMaskDropout
            swapped["dropout"] += 1
        activation = getattr(layer, "activation", None)  # a Dense's own (an encoder's is its config: left alone)
        if gelu and isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)) and \
                getattr(activation, "__name__", "") in GELUS and layer.compute_dtype in ("bfloat16", "float16"):
            layer.activation = Float32Activation(activation)
            swapped["gelu"] += 1
    return swapped
