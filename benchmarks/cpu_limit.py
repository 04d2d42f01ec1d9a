#!/usr/bin/env python
"""How close the pipeline runs to this CPU's matrix-multiply peak, against ONNX Runtime on the same batches.

One run measures, each part in its own process (a fresh TensorFlow, the same rows and the same seeded model):
  peak    TensorFlow's own matrix multiply, float32 (and bfloat16 where the CPU has AVX-512 BF16 or AMX), in GFLOP/s:
          the practical peak every share below is measured against;
  arms    the pipeline's training (Keras fit over the bucketed batches of feeding.train_dataset) and inference
          (feeding.predict: length-sorted batches of train.eval_batch_size, 16 rows on a CPU), once per lever:
          an arm is the default settings plus a few --set overrides (LEVERS, or --arm NAME=KEY=VALUE,...);
  onnx    the same model (float32, same weights: onnx_bert.export, checked against Keras on the first batches)
          run by ONNX Runtime with all its graph optimisations over the same inference batches.
Work is counted in useful FLOPs, from each row's true tokens L (padding counts as waste): per row 2*N*L + 4*layers*
L^2*hidden for inference and three times that for training (forward + backward), N = the backbone's
non-embedding parameters (10.6M for MiniLM). A share is useful FLOP/s over the float32 peak.

    python benchmarks/cpu_limit.py                       # MiniLM, real rows, every lever: ~25 min on 2 cores
    python benchmarks/cpu_limit.py --arms float32 pipeline    # two arms: before issue 43 and today
    python benchmarks/cpu_limit.py --arms float32 pipeline --profile   # and where each step's time goes, by op type
    python benchmarks/cpu_limit.py --smoke               # tiny random BERT: checks the script, not a result
Data: the shared real train rows when present, else generated rows with the real length shape (bench_train.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import record  # noqa: E402  (benchmarks/record.py)

# Each lever: the pipeline's defaults (on a CPU with AMX or AVX-512 BF16: bfloat16; pipeline/modeling/cpu_ops.py's
# attention, byte-mask dropout and float32 GELU) plus its own settings (config --set), `threads=INTRA/INTER`
# (TensorFlow's op pools) or `keras-ops=attention,dropout,gelu` (those of Keras instead of cpu_ops.py's). "float32"
# is the pipeline before issue 43. benchmarks/README.md ("The CPU at its limit") says what each gave and which the
# pipeline keeps.
FLOAT32 = ["train.mixed_precision=none", "train.predict_precision=none"]
LEVERS = {
    "float32": [*FLOAT32, "keras-ops=attention,dropout,gelu"],
    "float32-cpu-ops": FLOAT32,
    "bf16": ["keras-ops=attention,dropout,gelu"],
    "bf16-byte-masks": ["keras-ops=attention,gelu"],
    "bf16-byte-masks-gelu": ["keras-ops=attention"],
    "pipeline": [],
    "no-dropout": ["model.backbone_dropout=0"],
    "pad8": ["train.pad_multiple=8"],
    "threads-2-1": ["threads=2/1"],
    "xla": ["train.xla=true"],
}
PSEUDO_SETTINGS = ("threads=", "keras-ops=")  # the worker's own, not config keys
SHOWN_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16")  # the CPU's vector and bfloat16 units, in the results


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=[a for a in LEVERS if a != "xla"],
                   help=f"levers to measure, from {list(LEVERS)} (default: all but xla, whose training compiles each "
                        "batch shape for minutes on a CPU)")
    p.add_argument("--arm-timeout", type=int, default=1200, help="seconds an arm may take; one that runs out is "
                   "reported as such and the run goes on")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                   help="an extra arm: the default settings plus these overrides")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16, help="training rows per step (configs/minilm.toml: 16)")
    p.add_argument("--rows", type=int, default=64, help="training rows per timed epoch")
    p.add_argument("--infer-rows", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--profile", action="store_true", help="also where each arm's training step and inference batch "
                   "spend their time, by TensorFlow op type (one profiled step at the widest timed shape)")
    p.add_argument("--smoke", action="store_true", help="tiny random BERT (fast, not a result)")
    p.add_argument("--name", help="result file stem (default: <backbone>-cpu-limit)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--settings", default="[]", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def model_flops(backbone_config: dict, n_params: int):
    """Useful FLOPs of one row of `length` true tokens: (inference, training)."""
    layers, hidden = backbone_config["num_layers"], backbone_config["hidden_dim"]

    def per_row(length):
        forward = 2.0 * n_params * length + 4.0 * layers * length ** 2 * hidden
        return forward, 3.0 * forward
    return per_row


def non_embedding_params(backbone) -> int:
    """Parameters the tokens flow through as matrix multiplies: the transformer layers (embeddings are lookups,
    BERT's pooler is frozen and unused by mean pooling)."""
    return int(sum(w.numpy().size for layer in backbone.layers if layer.name.startswith("transformer_layer_")
                   for w in layer.weights))


def stats(values) -> dict:
    import numpy as np

    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


# ---------------------------------------------------------------- workers (one process each)
def peak_worker(repeats: int) -> dict:
    """Best GFLOP/s of TensorFlow's matmul over a square and two of the model's own shapes (16 rows x 384 tokens
    through MiniLM's feed-forward), float32 and (where the CPU supports it) bfloat16."""
    import tensorflow as tf

    from pipeline.modeling import device

    shapes = [(2048, 2048, 2048), (6144, 384, 1536), (6144, 1536, 384)]
    out = {}
    for dtype in ("float32", "bfloat16") if device.cpu_bf16_unit() else ("float32",):
        best = 0.0
        for m, k, n in shapes:
            a = tf.cast(tf.random.normal((m, k), seed=1), dtype)
            b = tf.cast(tf.random.normal((k, n), seed=2), dtype)
            f = tf.function(tf.linalg.matmul)
            f(a, b).numpy()
            for _ in range(repeats + 2):
                start = time.perf_counter()
                for _ in range(5):
                    r = f(a, b)
                r.numpy()
                best = max(best, 5 * 2.0 * m * k * n / (time.perf_counter() - start) / 1e9)
        out[dtype] = best
    return out


def arm_setup(work: Path, args, settings: list[str]):
    """The data, the arm's config and its rows: what every arm (and ONNX Runtime) computes on."""
    import numpy as np

    import bench_train
    from pipeline.core import config
    from pipeline.data import tables
    from pipeline.text import encode

    data_dir, model_dir, source = bench_train.data_and_model(work, args.smoke)
    sets = {"data.dir": data_dir, "model.path": model_dir, "model.random_init": str(args.smoke).lower(),
            "folds.file": work / "folds.csv", "encode.cache_dir": work / "cache", "output.dir": work / "out",
            "encode.max_len": args.max_len, "train.batch_size": args.batch_size, "train.verbose": 0}
    assignments = [f"{k}={v}" for k, v in sets.items()] + [s for s in settings if not s.startswith(PSEUDO_SETTINGS)]
    cfg = config.load(None, assignments)
    encoder = encode.Encoder.for_model(cfg)
    train = tables.load(cfg, "train")
    enc = encoder.encode(train, "train")
    order = np.random.default_rng(0).permutation(len(train))
    rows, infer_rows = order[:args.rows], order[args.rows:args.rows + args.infer_rows]
    return cfg, encoder.info, enc, tables.targets(train), rows, infer_rows, source


def build_model(cfg, info, y):
    import keras

    from pipeline.modeling import model, targets

    keras.utils.set_random_seed(0)
    return model.build(cfg, info.path, targets.fit("raw", y))


def arm_worker(args) -> dict:
    settings = json.loads(args.settings)
    threads = next((s.split("=", 1)[1] for s in settings if s.startswith("threads=")), "")
    import tensorflow as tf

    if threads:
        intra, inter = (int(v) for v in threads.split("/"))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    import keras
    import numpy as np

    import bench_train
    from pipeline.modeling import device, feeding, model
    from pipeline.text import batching
    from pipeline.train import optim

    use_keras_ops(settings)
    cfg, info, enc, y, rows, infer_rows, _ = arm_setup(Path(args.workdir), args, settings)
    t = cfg.train
    policy = device.set_precision(t.mixed_precision, "cpu")
    m = build_model(cfg, info, y[rows])
    steps = batching.batches_per_epoch(len(rows), t.batch_size)
    optim.compile_built(m, optim.make(t, steps, model.head_variables(m), reduced_by_step=True),
                        keras.losses.BinaryCrossentropy(), t.xla)
    feed = enc.feed(rows).only(m.input)
    epoch_s = []

    warm_s = bench_train.warm_shapes(m, feed, y[rows], t)
    ds = feeding.train_dataset(feed, y[rows], t.batch_size, 0, t.batching)
    m.fit(ds, epochs=1 + args.repeats, steps_per_epoch=steps, verbose=0,
          callbacks=[bench_train.epoch_timer(epoch_s)])
    infer_feed = enc.feed(infer_rows)
    feeding.predict(m, infer_feed, t.eval_batch_size, t.batching, xla=t.xla)  # traces / compiles each shape
    infer_s = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        feeding.predict(m, infer_feed, t.eval_batch_size, t.batching, xla=t.xla)
        infer_s.append(time.perf_counter() - start)
    per_row = model_flops(m.backbone.get_config(), non_embedding_params(m.backbone))
    train_flops = sum(per_row(l)[1] for l in feed.lengths) / len(rows)
    infer_flops = sum(per_row(l)[0] for l in infer_feed.lengths) / len(infer_rows)
    plans = [batching.plan(feed.seq_lengths, t.batch_size, np.random.default_rng(e), t.bucketing, t.pad_multiple)
             for e in range(4)]
    computed = np.mean([sum(feed.widths(b, t.dynamic_padding, t.pad_multiple).sum() * len(b) for b in p)
                        for p in plans])
    out = {}
    if args.profile:
        widest = np.argsort(feed.lengths)[-t.batch_size:]
        batch = feed.batch(widest, t.dynamic_padding, t.pad_multiple)
        out["profile"] = {"rows": t.batch_size, "width": max(v.shape[1] for v in batch.values() if v.ndim == 2),
                          "train_step": op_profile(lambda: m.train_on_batch(batch, y[rows][widest]), work_dir(args)),
                          "inference_batch": op_profile(lambda: np.asarray(m(batch, training=False)), work_dir(args))}
    return {**out, "settings": settings, "precision": policy, "warm_shapes_s": warm_s,
            "train_samples_per_s": stats([len(rows) / s for s in epoch_s[1:]]),
            "infer_samples_per_s": stats([len(infer_rows) / s for s in infer_s]),
            "train_flops_per_row": train_flops, "infer_flops_per_row": infer_flops,
            "padding_share": float(1 - feed.lengths.sum() / computed),
            "n_params": non_embedding_params(m.backbone),
            "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}}


def use_keras_ops(settings: list[str]) -> list[str]:
    """`keras-ops=attention,dropout,gelu`: those ops stay Keras' own in every backbone this process builds, over
    what the caller asks for (model.with_cpu_ops passes some of cpu_ops.use_cpu_ops' switches itself). Returns
    them; an unknown name is an error that lists the known ones."""
    keras_ops = next((s.split("=", 1)[1].split(",") for s in settings if s.startswith("keras-ops=")), [])
    if keras_ops:
        import inspect

        from pipeline.modeling import cpu_ops

        own = cpu_ops.use_cpu_ops
        known = [n for n in inspect.signature(own).parameters if n != "model"]
        if set(keras_ops) - set(known):
            raise SystemExit(f"keras-ops={','.join(keras_ops)}: expected some of {known}")
        cpu_ops.use_cpu_ops = lambda model, **kw: own(model, **{**kw, **{op: False for op in keras_ops}})
    return keras_ops


def work_dir(args) -> Path:
    return Path(tempfile.mkdtemp(prefix="profile-", dir=args.workdir))


# Op types by what they do: the matrix units' work, dropout's (random draw, comparison, select), the rest.
MATMUL_OPS = ("MatMul", "Einsum", "Conv")
DROPOUT_OPS = ("StatelessRandomUniformV2", "StatelessRandomUniformFullIntV2", "Bitcast", "SelectV2", "GreaterEqual")
WRAPPERS = ("Run", "Process")  # events that hold the ops (and function calls, "__inference_..."): not ops


def op_profile(step, logdir: Path, top: int = 12) -> dict:
    """Seconds of TensorFlow ops by type over one call of step (already traced), from the profiler's trace: the
    top types, and the shares of matrix multiplies and of dropout's own ops. Ops on parallel threads overlap, so
    the shares are of the ops' summed time, not of the wall time (given beside it)."""
    import collections

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    step()
    tf.profiler.experimental.start(str(logdir))
    start = time.perf_counter()
    step()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(logdir.rglob("*.xplane.pb")).read_bytes())
    seconds = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                op = name.rsplit(":", 1)[1].strip().removeprefix("_Mkl") if ":" in name else ""  # "scope/op:OpType"
                if op[:1].isupper() and op not in WRAPPERS:
                    seconds[op] += event.duration_ps / 1e12
    total = sum(seconds.values()) or 1.0
    return {"wall_s": wall, "ops_s": total, "top": dict(seconds.most_common(top)),
            "matmul_share": sum(v for k, v in seconds.items() if any(m in k for m in MATMUL_OPS)) / total,
            "dropout_share": sum(v for k, v in seconds.items() if k in DROPOUT_OPS) / total}


def onnx_worker(args) -> dict:
    """ONNX Runtime on the pipeline's own inference batches (the same rows, order and widths), after checking its
    outputs against the Keras model's on the first batches."""
    import numpy as np
    import onnxruntime

    import onnx_bert
    from pipeline.modeling import feeding
    from pipeline.text import batching

    cfg, info, enc, y, rows, infer_rows, _ = arm_setup(Path(args.workdir), args, [])
    t = cfg.train
    m = build_model(cfg, info, y[rows])
    feed = enc.feed(infer_rows).only(m.input)
    batches = [feed.batch(b, t.dynamic_padding, t.pad_multiple)
               for b in batching.plan(feed.seq_lengths, t.eval_batch_size or feeding.auto_eval_batch(), None,
                                      t.bucketing, t.pad_multiple)]
    batches = [{k: np.asarray(v, np.int32) for k, v in b.items()} for b in batches]
    session = onnx_bert.session(onnx_bert.export(m))
    diff = max(float(np.abs(session.run(None, b)[0] - np.asarray(m(b, training=False))).max()) for b in batches[:3])
    if diff > 1e-3:
        raise SystemExit(f"ONNX Runtime's outputs differ from Keras' by {diff:.2e}: the export is wrong")
    for b in batches:
        session.run(None, b)
    infer_s = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for b in batches:
            session.run(None, b)
        infer_s.append(time.perf_counter() - start)
    return {"version": onnxruntime.__version__, "max_abs_diff_vs_keras": diff, "batches": len(batches),
            "infer_samples_per_s": stats([len(infer_rows) / s for s in infer_s])}


# ---------------------------------------------------------------- driver
def run_worker(kind: str, work: Path, argv: list[str], settings: list[str] | None = None,
               timeout: float | None = None) -> dict:
    cmd = [sys.executable, __file__, *argv, "--worker", kind, "--workdir", str(work),
           "--settings", json.dumps(settings or [])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"settings": settings or [], "timed_out_s": timeout}
    if out.returncode:
        raise RuntimeError(f"{kind} {settings or ''} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def arms_of(args) -> dict[str, list[str]]:
    unknown = [a for a in args.arms if a not in LEVERS]
    if unknown:
        raise SystemExit(f"--arms {unknown}: unknown; expected some of {list(LEVERS)} (or --arm NAME=KEY=VALUE,...)")
    arms = {a: LEVERS[a] for a in args.arms}
    for spec in args.arm:
        name, _, sets = spec.partition("=")
        if not name or not sets:
            raise SystemExit(f"--arm {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
        arms[name] = sets.split(",")
    return arms


def shares(res: dict) -> None:
    """Each arm's useful GFLOP/s and its share of the float32 peak (and of the bfloat16 peak for bf16 arms)."""
    fp32 = res["peak_gflops"]["float32"]
    for arm in res["arms"].values():
        if "timed_out_s" in arm:
            continue
        for part in ("train", "infer"):
            gflops = arm[f"{part}_samples_per_s"]["median"] * arm[f"{part}_flops_per_row"] / 1e9
            arm[f"{part}_gflops"] = gflops
            arm[f"{part}_share_of_fp32_peak"] = gflops / fp32
            if "bfloat16" in arm["precision"] and "bfloat16" in res["peak_gflops"]:
                arm[f"{part}_share_of_bf16_peak"] = gflops / res["peak_gflops"]["bfloat16"]
        if "onnx" in res:
            arm["infer_vs_onnx"] = arm["infer_samples_per_s"]["median"] / res["onnx"]["infer_samples_per_s"]["median"]


def _s(d: dict) -> str:
    return f"{d['median']:.2f} ({d['min']:.2f}-{d['max']:.2f})"


def markdown(res: dict) -> str:
    peak = res["peak_gflops"]
    first = next((a for a in res["arms"].values() if "timed_out_s" not in a), {"n_params": 0, "infer_flops_per_row": 0})
    lines = [f"### {res['name']}", "",
             f"- {res['date']}, {res['device']} ({res['cpu']}); {res['backbone']}, {first['n_params'] / 1e6:.1f}M "
             f"non-embedding parameters; {res['data']}; max_len {res['max_len']}, training batch {res['batch_size']}, "
             f"inference batch 16 (length-sorted)",
             f"- peak (TensorFlow matmul): float32 {peak['float32']:.0f} GFLOP/s"
             + (f", bfloat16 {peak['bfloat16']:.0f} GFLOP/s" if "bfloat16" in peak else ", no bfloat16 units"),
             f"- {res['rows']} training rows per epoch ({res['repeats']} timed epochs after one untimed), "
             f"{res['infer_rows']} inference rows ({res['repeats']} timed passes after one); median (min-max); "
             "useful FLOPs from true tokens",
             f"- command: `{res['command']}`", "",
             "| arm | settings | train samples/s | train % of fp32 peak | inference samples/s | inference % of fp32 "
             "peak | inference vs ONNX Runtime | padding |", "|---|---|---|---|---|---|---|---|"]
    for name, arm in res["arms"].items():
        if "timed_out_s" in arm:
            lines.append(f"| {name} | {', '.join(arm['settings'])} | did not finish in {arm['timed_out_s']:.0f} s | "
                         "| | | | |")
            continue
        own = tuple(f" ({100 * arm[f'{part}_share_of_bf16_peak']:.0f}% of bf16)" if "train_share_of_bf16_peak" in arm
                    else "" for part in ("train", "infer"))
        vs = f"{arm['infer_vs_onnx']:.2f}x" if "infer_vs_onnx" in arm else "-"
        lines.append(f"| {name} | {', '.join(arm['settings']) or 'defaults'} ({arm['precision']}) | "
                     f"{_s(arm['train_samples_per_s'])} | "
                     f"{100 * arm['train_share_of_fp32_peak']:.0f}%{own[0]} | {_s(arm['infer_samples_per_s'])} | "
                     f"{100 * arm['infer_share_of_fp32_peak']:.0f}%{own[1]} | {vs} | "
                     f"{100 * arm['padding_share']:.0f}% |")
    if "onnx" in res:
        o = res["onnx"]
        gflops = o["infer_samples_per_s"]["median"] * first["infer_flops_per_row"] / 1e9
        lines.append(f"| ONNX Runtime {o['version']} | float32, all graph optimisations, same batches (max abs diff "
                     f"from Keras {o['max_abs_diff_vs_keras']:.1e}) | - | - | {_s(o['infer_samples_per_s'])} | "
                     f"{100 * gflops / peak['float32']:.0f}% | 1.00x | |")
    profiled = {name: arm["profile"] for name, arm in res["arms"].items() if "profile" in arm}
    if profiled:
        lines += ["", "Where the time goes (one profiled call at the widest timed shape; shares of the ops' summed "
                  "time; dropout-type ops: random draws, bitcasts, compares, selects, masking's selects included):",
                  "", "| arm | call | wall s | matmul share | dropout-type ops share | top op types (s) |",
                  "|---|---|---|---|---|---|"]
        for name, prof in profiled.items():
            for call in ("train_step", "inference_batch"):
                p = prof[call]
                tops = ", ".join(f"{k} {v:.2f}" for k, v in list(p["top"].items())[:8])
                lines.append(f"| {name} | {call.replace('_', ' ')} ({prof['rows']} x {prof['width']}) | "
                             f"{p['wall_s']:.2f} | {100 * p['matmul_share']:.0f}% | {100 * p['dropout_share']:.0f}% | "
                             f"{tops} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.worker:
        out = {"peak": lambda: peak_worker(args.repeats), "arm": lambda: arm_worker(args),
               "onnx": lambda: onnx_worker(args)}[args.worker]()
        print(json.dumps(out))
        return
    arms = arms_of(args)
    stamp = record.stamp(__file__, argv)
    work = Path(tempfile.mkdtemp(prefix="quest-cpu-limit-"))
    try:
        import bench_train

        _, _, source = bench_train.data_and_model(work, args.smoke)
        from pipeline.modeling import device

        flags = device.cpu_flags()
        res = {"name": args.name or f"{'tiny' if args.smoke else 'minilm'}-cpu-limit", **stamp,
               "cpu": ", ".join(f for f in SHOWN_FLAGS if f in flags) or "no AVX-512",
               "backbone": "tiny BERT (smoke)" if args.smoke else "all-MiniLM-L6-v2", "data": source,
               "max_len": args.max_len, "batch_size": args.batch_size, "rows": args.rows,
               "infer_rows": args.infer_rows, "repeats": args.repeats, "arms": {}}
        res["peak_gflops"] = run_worker("peak", work, argv)
        print(f"peak: {res['peak_gflops']} GFLOP/s", flush=True)
        if not args.no_onnx:
            res["onnx"] = run_worker("onnx", work, argv)
            print(f"onnx runtime: inference {_s(res['onnx']['infer_samples_per_s'])} samples/s", flush=True)
        for name, settings in arms.items():
            res["arms"][name] = a = run_worker("arm", work, argv, settings, args.arm_timeout)
            if "timed_out_s" in a:
                print(f"{name}: did not finish in {args.arm_timeout} s", flush=True)
                continue
            print(f"{name}: train {_s(a['train_samples_per_s'])}, inference {_s(a['infer_samples_per_s'])} "
                  f"samples/s", flush=True)
        shares(res)
        record.write(res, markdown(res), record.RESULTS / f"{res['name']}.json")
        print("\n" + markdown(res))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
