"""Inference from a bundle on a Kaggle kernel (internet off): what notebooks/kaggle_inference.ipynb calls.

Imports nothing heavy at module level, so the notebook can install bundled wheels first.
"""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path


def install_wheels(bundle: str | Path, target: str | Path | None = None) -> list[str]:
    """pip install --no-index the bundled wheels whose distribution is missing (or another version)."""
    installed = []
    for whl in sorted(Path(bundle, "wheels").glob("*.whl")):
        dist, version = whl.name.split("-")[:2]
        try:
            if importlib.metadata.version(dist) == version:
                continue
        except importlib.metadata.PackageNotFoundError:
            pass
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(whl)]
        if target:
            cmd += ["--target", str(target)]
        subprocess.run(cmd, check=True)
        installed.append(whl.name)
    if target and str(target) not in sys.path:
        sys.path.insert(0, str(target))
    return installed


def predict_bundle(bundle: str | Path, data_dir: str | Path, work_dir: str | Path,
                   test_file: str = "test.csv", sample_file: str = "sample_submission.csv") -> Path:
    """Predict every bundled run on data_dir/test_file, blend, post-process, write work_dir/submission.csv."""
    import pandas as pd

    from . import data, ensemble, files, postprocess, predict, runs, submission
    from .schema import ID, TARGETS

    bundle, data_dir, work_dir = Path(bundle), Path(data_dir), Path(work_dir)
    manifest = files.read_json(bundle / "bundle.json")
    test_csv = data_dir / test_file
    preds = []
    for name in manifest["runs"]:
        out = predict.predict_run(bundle / "runs" / name, test_csv, out_dir=work_dir / "predictions" / name,
                                  cache_dir=work_dir / "cache", reuse=False)
        preds.append(pd.read_csv(out).set_index(ID))
    ids = preds[0].index
    blended = ensemble.blend([p.loc[ids, list(TARGETS)].to_numpy() for p in preds],
                             manifest["weights"], manifest["method"])
    blended = postprocess.apply(blended, files.read_json(bundle / "postprocess.json"), TARGETS)
    sample = data.read_csv(data_dir / sample_file, "sample_submission")
    return submission.write(work_dir / "submission.csv", sample, runs.predictions_frame(ids, blended))
