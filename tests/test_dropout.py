"""Byte-mask dropout (pipeline/modeling/dropout.py, issue 43): the same rate (rounded to 1/256) and expectation as
Keras' own dropout, seeded, with the mask as its gradient; every dropout of a backbone loaded for training with
TensorFlow on a CPU uses it, and nothing saved changes."""
import numpy as np
import pytest

from pipeline.modeling import dropout, model

pytestmark = pytest.mark.tensorflow_only


def _run(layer, x, training=True):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        xt = tf.convert_to_tensor(x)
        tape.watch(xt)
        y = layer(xt, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    return np.asarray(tf.cast(y, tf.float32)), np.asarray(tf.cast(tape.gradient(loss, xt), tf.float32))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_byte_masks_drop_the_rounded_rate_and_keep_the_expectation(dtype):
    x = np.ones((64, 4, 33, 31), dtype)  # an element count that is not a multiple of four
    y, grad = _run(dropout.ByteMaskDropout(0.1, seed=3, dtype=dtype), x)
    assert dropout.byte_threshold(0.1) == 26
    dropped = (y == 0).mean()
    assert abs(dropped - 26 / 256) < 0.004, dropped  # 270k elements: the standard error is 0.0006
    assert np.allclose(y[y != 0], 256 / 230, rtol=1e-3 if dtype == "float32" else 4e-3)  # 1 / (1 - 26/256)
    assert abs(y.mean() - 1) < 0.01
    assert np.array_equal(grad, y)  # d(sum y)/dx = scaled mask: the backward pass drops the same elements


def test_byte_masks_are_seeded_fresh_per_call_and_off_at_inference():
    x = np.random.default_rng(0).normal(size=(8, 16, 24)).astype("float32")
    first, second = dropout.ByteMaskDropout(0.1, seed=5), dropout.ByteMaskDropout(0.1, seed=5)
    a, b = _run(first, x)[0], _run(second, x)[0]
    assert np.array_equal(a, b)  # the same seed, the same masks: a run repeats its masks
    assert not np.array_equal(a, _run(first, x)[0])  # and each call draws new ones
    assert np.array_equal(_run(first, x, training=False)[0], x)
    assert (a == 0).mean() > 0.05


def test_rates_below_one_byte_level_fall_back_to_keras_dropout():
    assert dropout.byte_threshold(0.001) == 0 and dropout.byte_threshold(0.999) == 255
    y = _run(dropout.ByteMaskDropout(0.001, seed=1), np.ones((200, 100), "float32"))[0]
    assert 0 < (y == 0).sum() < 60 and np.allclose(y[y != 0], 1 / 0.999)  # Keras' own: exactly rate 0.001


def test_xla_compiles_byte_masks():
    import tensorflow as tf

    layer = dropout.ByteMaskDropout(0.25, seed=2)
    y = tf.function(lambda x: layer(x, training=True), jit_compile=True)(tf.ones((16, 8, 10)))
    assert abs(float(tf.reduce_mean(tf.cast(y == 0, tf.float32))) - 64 / 256) < 0.06


def test_a_backbone_loaded_on_a_cpu_drops_with_byte_masks_and_saves_as_before(tiny_model_dir):
    import keras

    backbone = model.load_backbone(tiny_model_dir, random_init=True)
    drops = [l for l in backbone._flatten_layers(include_self=False) if isinstance(l, keras.layers.Dropout)]
    assert drops and all(type(l) is dropout.ByteMaskDropout for l in drops)  # embeddings + 3 per layer
    assert len(drops) == 1 + 3 * backbone.num_layers
    assert "ByteMaskDropout" not in model.model_to_json(model.QuestModel(backbone))
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    assert all(type(l) is keras.layers.Dropout for l in rebuilt._flatten_layers(include_self=False)
               if isinstance(l, keras.layers.Dropout))  # what a saved run rebuilds: Keras' own layers
