"""TensorFlow's cheaper ops on a CPU (pipeline/modeling/cpu_ops.py, issue 43). Byte-mask dropout: the same rate
(rounded to 1/256) and expectation as Keras' own dropout, seeded, with the mask as its gradient. Attention with
fewer passes over its probabilities: Keras' outputs and gradients, masks included. GELU in float32 under a
bfloat16 policy. Every backbone loaded or rebuilt with TensorFlow on a CPU takes them; nothing saved changes."""
import numpy as np
import pytest

from pipeline.modeling import cpu_ops, model

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
    y, grad = _run(cpu_ops.ByteMaskDropout(0.1, seed=3, dtype=dtype), x)
    assert cpu_ops.byte_threshold(0.1) == 26
    dropped = (y == 0).mean()
    assert abs(dropped - 26 / 256) < 0.004, dropped  # 270k elements: the standard error is 0.0006
    assert np.allclose(y[y != 0], 256 / 230, rtol=1e-3 if dtype == "float32" else 4e-3)  # 1 / (1 - 26/256)
    assert abs(y.mean() - 1) < 0.01
    assert np.array_equal(grad, y)  # d(sum y)/dx = scaled mask: the backward pass drops the same elements


def test_byte_masks_are_seeded_fresh_per_call_and_off_at_inference():
    x = np.random.default_rng(0).normal(size=(8, 16, 24)).astype("float32")
    first, second = cpu_ops.ByteMaskDropout(0.1, seed=5), cpu_ops.ByteMaskDropout(0.1, seed=5)
    a, b = _run(first, x)[0], _run(second, x)[0]
    assert np.array_equal(a, b)  # the same seed, the same masks: a run repeats its masks
    assert not np.array_equal(a, _run(first, x)[0])  # and each call draws new ones
    assert np.array_equal(_run(first, x, training=False)[0], x)
    assert (a == 0).mean() > 0.05


def test_rates_below_one_byte_level_fall_back_to_keras_dropout():
    assert cpu_ops.byte_threshold(0.001) == 0 and cpu_ops.byte_threshold(0.999) == 255
    y = _run(cpu_ops.ByteMaskDropout(0.001, seed=1), np.ones((200, 100), "float32"))[0]
    assert 0 < (y == 0).sum() < 60 and np.allclose(y[y != 0], 1 / 0.999)  # Keras' own: exactly rate 0.001


def test_xla_compiles_byte_masks():
    import tensorflow as tf

    layer = cpu_ops.ByteMaskDropout(0.25, seed=2)
    y = tf.function(lambda x: layer(x, training=True), jit_compile=True)(tf.ones((16, 8, 10)))
    assert abs(float(tf.reduce_mean(tf.cast(y == 0, tf.float32))) - 64 / 256) < 0.06


def _attention_pair(dropout=0.1):
    """Keras' MultiHeadAttention (with byte-mask dropout: the same draws) and a CpuAttention with its weights."""
    import keras

    pair = []
    for cls in (keras.layers.MultiHeadAttention, cpu_ops.CpuAttention):
        layer = cls(4, 8, dropout=dropout, seed=7)  # the same seed: both dropout layers draw the same masks
        layer(np.zeros((1, 3, 32), "float32"), np.zeros((1, 3, 32), "float32"))
        pair.append(layer)
    pair[1].set_weights(pair[0].get_weights())
    for layer in pair:
        cpu_ops.use_cpu_ops(layer, attention=False)  # the dropout inside each: byte masks, as in a backbone
    return pair


def _attend(layer, x, mask, training, **kwargs):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, x, attention_mask=mask, training=training, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.range(y.shape[-1], dtype=tf.float32))  # not a plain sum
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    named = {f"output {i}": t for i, t in enumerate(out if isinstance(out, tuple) else (out,))}
    named.update(zip(["input", *(v.path for v in layer.trainable_variables)], grads))
    # the key bias' gradient is 0 in theory (softmax ignores what is added to a whole row): rounding noise
    return {name.split("/", 1)[-1]: np.asarray(tf.cast(t, tf.float32)) for name, t in named.items()
            if not name.endswith("key/bias")}


def _close(expected, got, share):
    """Within share of the largest expected value (float32: 1e-5, rounding in a different order; bfloat16, 8 bits:
    0.02, a few of its roundings)."""
    return np.abs(expected - got).max() <= share * np.abs(expected).max()


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [False, True])
def test_cpu_attention_gives_keras_outputs_and_gradients(training, policy):
    import keras
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(3, 20, 32)).astype("float32"))
    padding = np.ones((3, 20), "int32")
    padding[0, 11:] = 0  # padded keys (a (B, 1, S) mask: added inside the scores' matmul)
    padding[2] = 0  # a row with nothing to attend to: Keras gives it zeros
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras_layer, cpu_layer = _attention_pair()
        causal = np.tril(np.ones((20, 20), "int32"))[None] * padding[:, None, :]  # a full (B, T, S) mask: a select
        for mask in (tf.constant(padding[:, None, :]), tf.constant(causal), None):
            expected, got = _attend(keras_layer, x, mask, training), _attend(cpu_layer, x, mask, training)
            assert list(expected) == list(got) and len(got) == 9  # the output; the input's, 7 weights' gradients
            for name, e in expected.items():
                g = got[name]
                assert np.isfinite(g).all(), name
                assert _close(e, g, 1e-5 if policy == "float32" else 0.02), (name, np.abs(e - g).max())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if training:
        assert not np.array_equal(_attend(cpu_layer, x, None, True)["output 0"],
                                  _attend(cpu_layer, x, None, False)["output 0"])
        cpu_layer._dropout_layer.rate = 0.0  # as a frozen backbone sets it: the rate is the dropout layer's
        assert np.array_equal(_attend(cpu_layer, x, None, True)["output 0"],
                              _attend(cpu_layer, x, None, False)["output 0"])


def test_cpu_attention_leaves_scores_and_causal_masks_to_keras():
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).normal(size=(2, 9, 32)).astype("float32"))
    keras_layer, cpu_layer = _attention_pair()
    for kwargs in ({"return_attention_scores": True}, {"use_causal_mask": True}):
        expected, got = _attend(keras_layer, x, None, True, **kwargs), _attend(cpu_layer, x, None, True, **kwargs)
        assert list(expected) == list(got) and all(_close(e, got[k], 1e-5) for k, e in expected.items())


def test_gelu_runs_in_float32_between_casts():
    import keras

    x = keras.ops.cast(np.linspace(-6, 6, 4001, dtype="float32"), "bfloat16")
    exact = keras.activations.gelu(keras.ops.cast(x, "float32"), approximate=True)
    fast = cpu_ops.Float32Activation(lambda v: keras.activations.gelu(v, approximate=True))(x)
    assert keras.backend.standardize_dtype(fast.dtype) == "bfloat16"
    assert np.array_equal(np.asarray(keras.ops.cast(fast, "float32")),
                          np.asarray(keras.ops.cast(keras.ops.cast(exact, "bfloat16"), "float32")))  # one rounding


def _dropouts(backbone):
    import keras

    return [l for l in backbone._flatten_layers(include_self=False) if isinstance(l, keras.layers.Dropout)]


def _attentions(backbone):
    import keras

    return [l for l in backbone._flatten_layers(include_self=False)
            if isinstance(l, keras.layers.MultiHeadAttention)]


def _float32_gelus(backbone):
    return [l for l in backbone._flatten_layers(include_self=False)
            if isinstance(getattr(l, "activation", None), cpu_ops.Float32Activation)]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_a_backbone_loaded_or_rebuilt_on_a_cpu_takes_the_cheaper_ops_and_saves_as_before(tiny_model_dir, policy):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        backbone = model.load_backbone(tiny_model_dir, random_init=True)
        quest = model.QuestModel(backbone)
        rebuilt = model.model_from_json(model.model_to_json(quest))
        for b in (backbone, rebuilt.backbone):
            drops = _dropouts(b)
            assert len(drops) == 1 + 3 * b.num_layers and all(type(l) is cpu_ops.ByteMaskDropout for l in drops)
            attentions = _attentions(b)
            assert len(attentions) == b.num_layers and all(type(l) is cpu_ops.CpuAttention for l in attentions)
            assert len(_float32_gelus(b)) == (b.num_layers if policy == "mixed_bfloat16" else 0)  # feed-forward
        saved = model.model_to_json(quest)
        assert "ByteMaskDropout" not in saved and "CpuAttention" not in saved and "float32" not in saved
        plain = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
        assert all(type(l) is keras.layers.Dropout for l in _dropouts(plain)) and not _float32_gelus(plain)
        assert all(type(l) is keras.layers.MultiHeadAttention for l in _attentions(plain))
        x = {"token_ids": np.ones((2, 12), "int32"), "segment_ids": np.zeros((2, 12), "int32"),
             "padding_mask": np.ones((2, 12), "int32")}
        rebuilt.set_weights(quest.get_weights())
        assert np.allclose(np.asarray(quest(x), "float32"), np.asarray(rebuilt(x), "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("accelerator", ["GPU", "TPU"])
def test_a_backbone_on_an_accelerator_keeps_keras_ops(tiny_model_dir, monkeypatch, accelerator):
    """The cheaper ops are measured on a CPU only: where TensorFlow lists a GPU or TPU, Keras' own stay."""
    import keras
    import tensorflow as tf

    listed = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: [tf.config.LogicalDevice(f"/device:{kind}:0", kind)] if kind == accelerator
                        else listed(kind))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = model.load_backbone(tiny_model_dir, random_init=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(type(l) is keras.layers.Dropout for l in _dropouts(backbone)) and not _float32_gelus(backbone)
    assert all(type(l) is keras.layers.MultiHeadAttention for l in _attentions(backbone))


def test_a_model_trained_under_xla_keeps_keras_dropout_and_trains(tmp_path, synth_dir, tiny_model_dir):
    """XLA cannot compile the byte masks' draw inside the accumulating train step (its shape is not a compile-time
    constant there): a model built for train.xla keeps Keras' dropout and attention, and trains with dropout on."""
    import keras

    from conftest import tiny_train_config
    from pipeline.modeling import targets
    from pipeline.train import optim

    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__xla="true", train__grad_accum=2)
    y = np.random.default_rng(0).random((16, 30)).astype("float32")
    m = model.build(cfg, tiny_model_dir, targets.fit("raw", y))
    assert _dropouts(m.backbone) and all(type(l) is keras.layers.Dropout for l in _dropouts(m.backbone))
    assert all(type(l) is keras.layers.MultiHeadAttention for l in _attentions(m.backbone))
    optim.compile_built(m, optim.make(cfg.train, 4, model.head_variables(m), reduced_by_step=True),
                        keras.losses.BinaryCrossentropy(), True)
    x = {"token_ids": np.random.default_rng(1).integers(5, 200, (16, 24)).astype("int32"),
         "segment_ids": np.zeros((16, 24), "int32"), "padding_mask": np.ones((16, 24), "int32")}
    assert np.isfinite(m.train_on_batch(x, y))
