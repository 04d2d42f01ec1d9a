#!/usr/bin/env python
"""Issue 17's open question, as a repeatable check: does an epoch's cost depend on the order of its batch shapes?

MiniLM, the pipeline path, 48 real rows (one bucketing chunk: every epoch has the same 6 batch shapes, in a
new order). Prints seconds per epoch for `fit`, for a plain `train_on_batch` loop over freshly planned
epochs, and for `fit` again, in one process. Takes ~5 min on 2 CPUs.

    python benchmarks/epoch_order.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402  (its set-up: data, MiniLM, the arm's config)


def main():
    import keras
    import numpy as np

    from pipeline import batching, data, encode, model, optim, targets

    args = bench_train.parse(["--quick"])
    work = Path(tempfile.mkdtemp(prefix="quest-order-"))
    data_dir, model_dir, _ = bench_train.data_and_model(work, False)
    cfg = bench_train.arm_config(work, data_dir, model_dir, args, "pipeline")
    t = cfg.train
    tok, info = encode.for_model(cfg)
    train = data.load(cfg, "train")
    enc, _ = encode.encode_cached(cfg.encode, cfg.cache_dir, train, "train", tok, info.uses_segments)
    rows, y = np.random.default_rng(0).permutation(len(train))[:args.rows], data.targets(train)
    keras.utils.set_random_seed(0)
    m = model.build(cfg, info.path, targets.fit("raw", y[rows]))
    m.compile(optimizer=optim.make(t, 6, model.head_variables(m)), loss=keras.losses.BinaryCrossentropy())
    ds = batching.train_dataset(enc.feed(rows).only(m.input), y[rows], t.batch_size, 0, t.bucketing,
                                t.dynamic_padding, t.pad_multiple)
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(round(time.perf_counter() - self.start, 1))

    m.fit(ds, epochs=4, verbose=0, callbacks=[Timer()])
    print("fit, s/epoch (first one traces):", seconds, flush=True)
    loop = []
    for _ in range(3):
        start = time.perf_counter()
        for x, yb in ds:
            m.train_on_batch(x, yb)
        loop.append(round(time.perf_counter() - start, 1))
    print("train_on_batch loop, s/epoch:", loop, flush=True)
    seconds.clear()
    m.fit(ds, epochs=3, verbose=0, callbacks=[Timer()])
    print("fit again, s/epoch:", seconds, flush=True)


if __name__ == "__main__":
    main()
