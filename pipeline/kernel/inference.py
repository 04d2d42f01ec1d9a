"""Inference from a bundle on a Kaggle kernel (internet off): what notebooks/kaggle_inference.ipynb calls.

Imports nothing heavy at module level, so the notebook can install bundled wheels first. Inputs are found by
their contents under /kaggle/input, in either mount layout, and the wheels installed, as every kernel of the
pipeline does (environment.py).
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.core import layout, manifest as manifest_lib
from pipeline.core.errors import PipelineError
from pipeline.kernel import environment  # paths only: no heavy imports before the bundled wheels are installed
from pipeline.kernel.environment import CACHE, KAGGLE_INPUT, InputsNotFound, install_wheels  # noqa: F401  (notebook)

DATA_FILES = ("test.csv", "sample_submission.csv")
HIDDEN_TEST_ROWS = 10_000  # the re-run's hidden test has at most this many rows
TIME_BUDGET = 0.75  # default share of the limit a projection may use (bundle.json's time_budget)
LIMIT_GPU, LIMIT_CPU = 2 * 3600, 9 * 3600  # Kaggle's run-time limits for a code competition's kernel, seconds


def find_inputs(root: str | Path = KAGGLE_INPUT) -> tuple[Path, Path]:
    """(bundle folder, competition data folder): by environment variable, else by contents under root."""
    return environment.find_bundle_and_data(Path(root), DATA_FILES, "python run.py package", kind="inference")


def projected_seconds(bundle: str | Path, data_dir: str | Path, rows: int = HIDDEN_TEST_ROWS) -> float:
    """Seconds to predict `rows` rows of this test's length profile with every bundled run and fold on this
    device: per run, loading and tracing each fold's model plus one timed batch per row."""
    import pandas as pd

    from pipeline.data import tables
    from pipeline.run import predict

    bundle = layout.Bundle(Path(bundle))
    frame = tables.read_csv(Path(data_dir) / DATA_FILES[0], "predict")
    total = 0.0
    for name in manifest_lib.read(bundle.root)["runs"]:
        fixed, per_row = predict.Predictor.of(bundle.run(name), CACHE).cost(pd.DataFrame(frame))
        total += fixed + per_row * rows
    return total


class OverTime(PipelineError):
    """The projected hidden-test run would not finish safely inside Kaggle's limit."""


def check_time(seconds: float, accelerated: bool, budget: float, runs: int, folds: int) -> str:
    """The projection against Kaggle's limit (2 h on GPU, 9 h on CPU): a line to print, or OverTime when it
    passes `budget` (a share of the limit; 0 turns the check off) so the commit run fails, not the re-run."""
    limit = LIMIT_GPU if accelerated else LIMIT_CPU
    line = (f"projected time for a {HIDDEN_TEST_ROWS:,}-row hidden test on this device: {seconds / 60:.1f} min, "
            f"{seconds / limit:.0%} of Kaggle's {limit / 3600:.0f} h limit (budget {budget:.0%})")
    if budget and seconds > budget * limit:
        raise OverTime(f"{line}: the re-run on the hidden test would likely time out (a time-out shows no message). "
                       f"Cut the work: fewer runs ({runs} bundled), fewer folds ({folds} in all), a shorter "
                       "encode.max_len, or a faster accelerator; or package with --set kaggle.time_budget=0 to "
                       "skip this check")
    return line


def predict_bundle(bundle: str | Path, data_dir: str | Path, work_dir: str | Path) -> Path:
    """Predict every bundled run on data_dir/test.csv, then blend, post-process and write submission.csv."""
    from pipeline.core import files
    from pipeline.data import tables
    from pipeline.evaluate import ensemble
    from pipeline.run import predict

    bundle, data_dir, work_dir = layout.Bundle(Path(bundle)), Path(data_dir), Path(work_dir)
    manifest = manifest_lib.read(bundle.root)
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
    manifest = manifest_lib.read(bundle)
    folds = sum(len(layout.Bundle(bundle).run(n).finished_folds()) for n in manifest["runs"])
    secs = projected_seconds(bundle, data_dir)
    print(check_time(secs, device.accelerator_kind(device.strategy(quiet=True)) != "cpu",
                     manifest.get("time_budget", TIME_BUDGET), len(manifest["runs"]), folds), flush=True)
    return predict_bundle(bundle, data_dir, work)
