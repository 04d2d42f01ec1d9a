#!/usr/bin/env python
"""Per-target heads: 30 separate two-layer heads (runs described before batching) against the batched layout
(one Dense + one einsum kernel), beside the linear head, in the same run.

    python benchmarks/bench_heads.py            # about a minute on 2 CPU cores
    python benchmarks/bench_heads.py --width 384 --hidden 256 --repeats 3

Each arm is a QUEST head alone (TargetHead on pooled features of --width, the 30 targets' units; --ordinal:
the ordinal coding's wider outputs) compiled with AdamW like the trainer's, in a fresh Keras session:
  first step   the first train step: tracing the step (forward, gradients, one update per variable) and running it
  step         the median of --steps further steps (batch --batch)
Ratios are against the separate heads. The head alone is what the layouts change: the backbone adds the same
tracing and step time to every arm. Writes benchmarks/results/heads-<device>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import record  # noqa: E402  (benchmarks/record.py: date, device, command; results written whole)

ARMS = ("separate", "batched", "linear")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=768, help="pooled feature width (bert-base 768, MiniLM 384)")
    p.add_argument("--hidden", type=int, default=256, help="each per-target head's hidden units (model.head_hidden)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=30, help="timed steps after the first")
    p.add_argument("--repeats", type=int, default=3, help="fresh sessions per arm; medians reported")
    p.add_argument("--ordinal", action="store_true", help="the ordinal coding's units per target (wider outputs)")
    return p.parse_args(argv)


def units(ordinal: bool) -> list[int]:
    import numpy as np

    from pipeline.core.columns import TARGETS
    from pipeline.modeling import targets

    rng = np.random.default_rng(0)
    y = np.round(rng.random((200, len(TARGETS))) * 4) / 4  # 5 label levels per target
    return targets.fit("ordinal" if ordinal else "raw", y).units()


def one_arm(arm: str, args, head_units: list[int]) -> dict:
    import keras
    import numpy as np

    from pipeline.modeling import layers

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.width)).astype("float32")
    y = rng.random((args.batch, sum(head_units))).astype("float32")
    inp = keras.Input((args.width,))
    head = layers.TargetHead(head_units, hidden=0 if arm == "linear" else args.hidden, rate=0.1,
                             batched=arm == "batched")
    model = keras.Model(inp, keras.layers.Activation("sigmoid")(head(inp)))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="binary_crossentropy")
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    steps = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        steps.append(time.perf_counter() - start)
    return {"first_step_s": first, "step_ms": 1000 * statistics.median(steps),
            "variables": len(model.trainable_variables)}


def markdown(result: dict) -> str:
    a = result["args"]
    base = result["arms"]["separate"]
    lines = [f"# Per-target heads: separate vs batched ({result['device']}, {result['date']})", "",
             f"A QUEST head alone on {a['width']}-wide features, {len(result['units'])} targets "
             f"({sum(result['units'])} output units{', ordinal coding' if a['ordinal'] else ''}), hidden "
             f"{a['hidden']}, batch {a['batch']}, AdamW; medians of {a['repeats']} fresh sessions. "
             f"`{result['command']}`", "",
             "| arm | variables | first step (trace + run) | x separate | step | x separate |", "|---|---|---|---|---|---|"]
    for arm, r in result["arms"].items():
        lines.append(f"| {arm} | {r['variables']} | {r['first_step_s']:.2f} s | {r['first_step_s'] / base['first_step_s']:.2f} | "
                     f"{r['step_ms']:.2f} ms | {r['step_ms'] / base['step_ms']:.2f} |")
    return "\n".join(lines + [""])


def main(argv=None):
    args = parse(argv)
    head_units = units(args.ordinal)
    arms = {}
    for arm in ARMS:
        runs = [one_arm(arm, args, head_units) for _ in range(args.repeats)]
        arms[arm] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(arm, json.dumps(arms[arm]), flush=True)
    result = {**record.stamp(__file__, argv), "args": vars(args), "units": head_units, "arms": arms}
    name = f"heads-{'gpu' if record.gpu_name() else 'cpu'}" + ("-ordinal" if args.ordinal else "")
    record.write(result, markdown(result), record.RESULTS / f"{name}.json")
    print(markdown(result))


if __name__ == "__main__":
    main()
