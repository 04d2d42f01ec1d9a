"""Inference from a bundle on a Kaggle kernel (internet off): what notebooks/kaggle_inference.ipynb calls.

Imports nothing heavy at module level, so the notebook can install bundled wheels first. Inputs are found by
their contents under /kaggle/input, in either mount layout, and the wheels installed, as every kernel of the
pipeline does (environment.py).
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.core import layout
from pipeline.kernel import environment  # paths only: no heavy imports before the bundled wheels are installed
from pipeline.kernel.environment import CACHE, KAGGLE_INPUT, InputsNotFound, install_wheels  # noqa: F401  (notebook)

DATA_FILES = ("test.csv", "sample_submission.csv")
HIDDEN_TEST_ROWS = 10_000  # the re-run's hidden test has at most this many rows


def find_inputs(root: str | Path = KAGGLE_INPUT) -> tuple[Path, Path]:
    """(bundle folder, competition data folder): by environment variable, else by contents under root."""
    return environment.find_bundle_and_data(Path(root), DATA_FILES, "python run.py package")


def projected_seconds(bundle: str | Path, data_dir: str | Path, rows: int = HIDDEN_TEST_ROWS) -> float:
    """Seconds to predict `rows` rows of this test's length profile with every bundled run and fold,
    from one timed batch per run on this device."""
    import pandas as pd

    from pipeline.core import files
    from pipeline.data import tables
    from pipeline.run import predict

    bundle = layout.Bundle(Path(bundle))
    frame = tables.read_csv(Path(data_dir) / DATA_FILES[0], "predict")
    total = 0.0
    for name in files.read_json(bundle.manifest)["runs"]:
        total += predict.Predictor.of(bundle.run(name), CACHE).seconds_per_row(pd.DataFrame(frame)) * rows
    return total


def predict_bundle(bundle: str | Path, data_dir: str | Path, work_dir: str | Path) -> Path:
    """Predict every bundled run on data_dir/test.csv, then blend, post-process and write submission.csv."""
    from pipeline.core import files
    from pipeline.data import tables
    from pipeline.evaluate import ensemble
    from pipeline.run import predict

    bundle, data_dir, work_dir = layout.Bundle(Path(bundle)), Path(data_dir), Path(work_dir)
    manifest = files.read_json(bundle.manifest)
    sample = tables.read_csv(data_dir / DATA_FILES[1], "sample_submission")
    tables.check_same_rows(tables.read_csv(data_dir / DATA_FILES[0], "predict"), sample, data_dir / DATA_FILES[0],
                         data_dir / DATA_FILES[1])
    start = time.perf_counter()
    preds = [predict.predict_run(bundle.run(name).root, data_dir / DATA_FILES[0],
                                 out_dir=layout.KernelWork(work_dir).predictions(name), cache_dir=CACHE,
                                 reuse=False) for name in manifest["runs"]]
    print(f"predicted {len(preds)} run(s) in {time.perf_counter() - start:.0f}s", flush=True)
    return ensemble.write_submission(layout.KernelWork(work_dir).submission, sample, preds, manifest["weights"],
                                     manifest["method"], files.read_json(bundle.postprocess))


def main(root: str | Path = KAGGLE_INPUT, work_dir: str | Path | None = None) -> Path:
    """The whole kernel: find inputs, install wheels, project the time, predict, write submission.csv."""
    bundle, data_dir = find_inputs(root)
    work = environment.work_dir(work_dir)
    print(f"bundle: {bundle}\ncompetition data: {data_dir}", flush=True)
    print("installed from the bundle:", install_wheels(bundle) or "nothing (the image has every version needed)")
    from pipeline.modeling import device

    print(f"device: {device.describe()}", flush=True)
    secs = projected_seconds(bundle, data_dir)
    print(f"projected time for a {HIDDEN_TEST_ROWS:,}-row hidden test on this device: {secs / 60:.1f} min "
          "(Kaggle allows 2 h on GPU, 9 h on CPU)", flush=True)
    return predict_bundle(bundle, data_dir, work)
