#!/usr/bin/env python
"""Issue 17's open question, answered: why did a `fit` epoch take ~12 s in one process and ~20 s in another?

Keras `fit` over a finite dataset makes a new iterator every epoch; on this 2-core CPU the first step after
that often stalled (by up to ~7-9 s, more in some epochs than others), so whole epochs looked bimodal. The
training path now feeds one endless dataset (`feeding.train_dataset`) with steps_per_epoch: one iterator
for the whole fit. This script shows both in one process, MiniLM on 48 real rows (the bench's --quick rows):
per-epoch seconds and the first step's share, for a finite dataset (a new iterator per epoch) and for the
endless one. ~6 min on 2 CPUs.

    python benchmarks/epoch_iterator.py [--arm baseline|pipeline] [--epochs 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402  (its set-up: data, MiniLM, the arm's config)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", choices=["baseline", "pipeline"], default="baseline")
    p.add_argument("--epochs", type=int, default=5)
    a = p.parse_args(argv)
    import keras
    import numpy as np

    from pipeline.data import tables
    from pipeline.modeling import feeding, model, targets
    from pipeline.text import batching, encode
    from pipeline.train import optim

    args = bench_train.parse(["--quick"])
    work = Path(tempfile.mkdtemp(prefix="quest-iter-"))
    data_dir, model_dir, _ = bench_train.data_and_model(work, False)
    cfg = bench_train.arm_config(work, data_dir, model_dir, args, a.arm)
    t = cfg.train
    encoder = encode.Encoder.for_model(cfg)
    info, train = encoder.info, tables.load(cfg, "train")
    enc = encoder.encode(train, "train")
    rows, y = np.random.default_rng(0).permutation(len(train))[:args.rows], tables.targets(train)
    keras.utils.set_random_seed(0)
    m = model.build(cfg, info.path, targets.fit("raw", y[rows]))
    steps = batching.batches_per_epoch(len(rows), t.batch_size)
    m.compile(optimizer=optim.make(t, steps * 2 * a.epochs, model.head_variables(m)), loss=keras.losses.BinaryCrossentropy())
    ds = feeding.train_dataset(enc.feed(rows).only(m.input), y[rows], t.batch_size, 0, t.batching)

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = self.last = time.perf_counter()
            self.steps = []

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.steps.append(now - self.last)
            self.last = now

        def on_epoch_end(self, epoch, logs=None):
            total = time.perf_counter() - self.start
            print(f"  epoch {epoch + 1}: {total:5.1f} s, first step {self.steps[0]:4.1f} s, the other steps "
                  f"{sum(self.steps[1:]):5.1f} s", flush=True)

    print(f"{a.arm} arm, {len(rows)} rows, {steps} steps per epoch (the first epoch of each traces)", flush=True)
    print("finite dataset (ds.take(steps)): a new iterator every epoch", flush=True)
    m.fit(ds.take(steps), epochs=a.epochs, verbose=0, callbacks=[Timer()])
    print("endless dataset + steps_per_epoch: one iterator for the whole fit (the training path)", flush=True)
    m.fit(ds, epochs=a.epochs, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])


if __name__ == "__main__":
    main()
