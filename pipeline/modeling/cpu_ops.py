"""Cheaper ops for TensorFlow on a CPU, swapped into a backbone's layers (same math, same weights, nothing saved
changes): byte-mask dropout, attention with fewer passes over its probabilities, and GELU in float32 under a
bfloat16 policy. Measured in benchmarks/README.md, "The CPU at its limit".

Dropout. Keras' own (tf.nn.experimental.stateless_dropout) draws a float uniform for every element, compares it,
scales and selects; on a CPU that is a large share of a BERT training step, since the attention probabilities are
dropped too (batch x heads x L x L elements per layer). ByteMaskDropout draws a quarter of the random words, reads
each as four bytes, keeps the elements whose byte is at least rate * 256, and multiplies by the scaled mask:
forward + backward 1.7-2x cheaper in float32 and bfloat16 on the attention probabilities' shape
(`python benchmarks/cpu_probes.py dropout`). The rate is rounded
to 1/256 (0.1 drops 26/256 = 10.2% of elements: what bfloat16's own uniforms already give) and the scale uses the
rounded rate, so the expected output is the input.

Attention. A BERT layer's largest tensors are its attention probabilities (batch x heads x L x L: 16x the hidden
state at L = 512 with 12 heads); Keras' MultiHeadAttention passes over them about 14 times per training step
(transposing the scores, masking, softmax, zeroing fully masked rows, dropout's cast, scale and multiply, and
their gradients). CpuAttention keeps 7 (a padding mask rides in the scores' matmul as one more feature): one
MiniLM layer at 16 x 512 trains in 229 ms instead of 356 (bfloat16; float32 326 instead of 427) and infers in 54
ms instead of 90 (float32 107 instead of 162), byte masks in both (`python benchmarks/cpu_probes.py attention`).

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


def byte_scale(threshold: int) -> float:
    """What the kept elements are multiplied by, so that the expected output is the input."""
    return LEVELS / (LEVELS - threshold)


def byte_keep_mask(like, threshold: int, seed_generator):
    """A boolean mask shaped like the tensor like: an element is kept where its random byte is at least threshold.
    One fresh seed pair per call from seed_generator; one random 32-bit word for four elements."""
    import tensorflow as tf

    seed = keras.random.randint((2,), 0, 2 ** 31 - 1, seed=seed_generator)
    count = tf.size(like)
    words = tf.random.stateless_uniform([(count + 3) // 4], seed=seed, minval=None, maxval=None, dtype=tf.uint32)
    draws = tf.reshape(tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:count], tf.shape(like))
    return draws >= tf.constant(threshold, tf.uint8)


class ByteMaskDropout(keras.layers.Dropout):
    """keras.layers.Dropout with byte masks when training (TensorFlow); anything else (inference, a noise_shape,
    rate 0) is Dropout's own. Holds no weights and the same config, so saved models and weights are unchanged."""

    def call(self, inputs, training=False):
        threshold = byte_threshold(self.rate)
        if not training or not threshold or self.noise_shape is not None:
            return super().call(inputs, training=training)
        import tensorflow as tf

        keep = byte_keep_mask(inputs, threshold, self.seed_generator)
        return inputs * (tf.cast(keep, inputs.dtype) * tf.constant(byte_scale(threshold), inputs.dtype))


STANDARD_EQUATIONS = ("aecd,abcd->acbe", "acbe,aecd->abcd")  # MultiHeadAttention's over one axis: (B, T, N, H)


class CpuAttention(keras.layers.MultiHeadAttention):
    """keras.layers.MultiHeadAttention whose attention probabilities (batch x heads x L x L: the large tensors of a
    BERT step) take fewer passes on TensorFlow: the scores by one batched matmul (Keras' einsum transposes them
    afterwards) that also adds a padding mask's bias, byte-mask dropout as a select with its scale moved to the 16x
    smaller context, the zeroing of fully masked rows moved there too, and one gradient for the softmax and the
    dropout together. The same math, weights and config; anything else (returned scores, a causal mask, other
    attention axes) is Keras' own."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        rate = self._dropout_layer.rate  # the dropout layer's, as Keras' path applies it (a frozen backbone: 0)
        threshold = byte_threshold(rate) if training else 0
        if return_attention_scores or use_causal_mask or len(query.shape) != 4 or self._flash_attention or \
                (self._dot_product_equation, self._combine_equation) != STANDARD_EQUATIONS or \
                (training and rate > 0 and not threshold):
            causal = {"use_causal_mask": True} if use_causal_mask else {}  # Keras 3.13 has no such argument
            return super()._compute_attention(query, key, value, attention_mask, training, return_attention_scores,
                                              **causal)
        import tensorflow as tf

        query = query * tf.cast(self._inverse_sqrt_key_dim, query.dtype)
        heads_first = [0, 2, 1, 3]  # (B, T, N, H) -> (B, N, T, H)
        query, key = tf.transpose(query, heads_first), tf.transpose(key, heads_first)
        mask = None if attention_mask is None else tf.cast(attention_mask, tf.bool)
        while mask is not None and len(mask.shape) < 4:
            mask = tf.expand_dims(mask, 1)  # (B, [T|1], S) -> (B, 1, T|1, S): the heads' axis
        softmax_mask = mask
        if mask is not None and mask.shape[2] == 1:  # keys only (keras-hub's padding mask): inside the matmul
            query, key = with_key_bias(query, key, mask)
            softmax_mask = None
        scores = tf.matmul(query, key, transpose_b=True)
        keep = byte_keep_mask(scores, threshold, self._dropout_layer.seed_generator) if threshold else None
        context = tf.matmul(masked_softmax_dropout(scores, softmax_mask, keep), tf.transpose(value, heads_first))
        factor = None if mask is None else tf.cast(tf.reduce_any(mask, -1, keepdims=True), context.dtype)
        if keep is not None:
            scale = tf.constant(byte_scale(threshold), context.dtype)
            factor = scale if factor is None else factor * scale
        if factor is not None:
            context = context * factor  # (B, N, T, H): a query row with no key to attend to gives zeros, as Keras
        return tf.transpose(context, heads_first), None


def large_negative(dtype) -> float:
    """What a masked score counts as (Keras' value: -1e9, or -3e4 in float16)."""
    return -3e4 if dtype == "float16" else -1e9


def with_key_bias(query, key, mask):
    """query and key (B, N, T|S, H) with one more feature: 1 for every query, and 0 for a key that mask (B, 1, 1, S)
    keeps or large_negative for one it masks, so that query . key gains the mask's additive bias inside the matmul
    (one pass over the scores fewer than a select; the bias adds 0 to every kept score)."""
    import tensorflow as tf

    shape = tf.concat([tf.shape(query)[:3], [1]], 0)
    bias = tf.where(tf.transpose(mask, [0, 1, 3, 2]), tf.constant(0, key.dtype),
                    tf.constant(large_negative(key.dtype.name), key.dtype))  # (B, 1, S, 1)
    return (tf.concat([query, tf.ones(shape, query.dtype)], -1),
            tf.concat([key, tf.broadcast_to(bias, tf.concat([tf.shape(key)[:3], [1]], 0))], -1))


def masked_softmax_dropout(scores, mask, keep):
    """softmax(scores) over the last axis where mask holds (masked scores count as large_negative), kept where
    keep holds (0 elsewhere; unscaled), with one gradient for all three: w - p * sum(w) for w = output * upstream.
    The gradient at masked scores is p * (...) = 0, as Keras' select gives, except in rows with nothing unmasked,
    whose context CpuAttention zeroes (so their upstream gradient is 0)."""
    import tensorflow as tf

    @tf.custom_gradient
    def probabilities(s):
        if mask is not None:
            s = tf.where(mask, s, tf.constant(large_negative(s.dtype.name), s.dtype))
        p = tf.nn.softmax(s)
        out = p if keep is None else tf.where(keep, p, tf.zeros((), p.dtype))

        def grad(upstream):
            w = out * upstream
            return w - p * tf.reduce_sum(w, -1, keepdims=True)
        return out, grad
    return probabilities(scores)


GELUS = ("gelu", "gelu_approximate")  # keras' and keras-hub's (BERT's feed-forward) activation names


class Float32Activation:
    """An activation computed in float32 between two casts (the layer's compute dtype in, and out)."""

    def __init__(self, activation):
        self.activation = activation
        self.__name__ = f"{activation.__name__}_in_float32"

    def __call__(self, x):
        return keras.ops.cast(self.activation(keras.ops.cast(x, "float32")), x.dtype)


def use_cpu_ops(model: keras.Layer, dropout: bool = True, gelu: bool = True, attention: bool = True) -> dict:
    """Inside model (a keras-hub backbone): every plain keras Dropout (embeddings, attention probabilities,
    attention and feed-forward outputs) becomes a ByteMaskDropout, every plain MultiHeadAttention a CpuAttention
    (byte masks on its probabilities), and every GELU of a layer computing in bfloat16 or float16 runs in float32
    (each unless turned off). Returns how many of each. For TensorFlow on a CPU (device.tensorflow_on_cpu)."""
    swapped = {"dropout": 0, "gelu": 0, "attention": 0}
    for layer in model._flatten_layers(include_self=False):
        if attention and type(layer) is keras.layers.MultiHeadAttention:
            layer.__class__ = CpuAttention
            swapped["attention"] += 1
        if dropout and type(layer) is keras.layers.Dropout:
            layer.__class__ = ByteMaskDropout
            swapped["dropout"] += 1
        activation = getattr(layer, "activation", None)  # a Dense's own (an encoder's is its config: left alone)
        if gelu and isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)) and \
                getattr(activation, "__name__", "") in GELUS and layer.compute_dtype in ("bfloat16", "float16"):
            layer.activation = Float32Activation(activation)
            swapped["gelu"] += 1
    return swapped
