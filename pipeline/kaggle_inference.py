"""Inference from a bundle on a Kaggle kernel (internet off): what notebooks/kaggle_inference.ipynb calls.

Imports nothing heavy at module level, so the notebook can install bundled wheels first.
Inputs are found by their contents under /kaggle/input, so both mount layouts work:
  current: /kaggle/input/competitions/<slug>/ and /kaggle/input/datasets/<owner>/<slug>/
  older:   /kaggle/input/<slug>/
QUEST_BUNDLE, QUEST_DATA and QUEST_WORK override what is found.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import layout  # paths only: no heavy imports before the bundled wheels are installed
from .errors import InstallError, PipelineError

KAGGLE_INPUT = Path("/kaggle/input")
# Installed wheels and encoded inputs go under /tmp: the working directory is the kernel's output.
SITE = Path(os.environ.get("QUEST_SITE", "/tmp/quest-site"))
CACHE = Path(os.environ.get("QUEST_CACHE", "/tmp/quest-cache"))
DATA_FILES = ("test.csv", "sample_submission.csv")
HIDDEN_TEST_ROWS = 10_000  # the re-run's hidden test has at most this many rows


class InputsNotFound(PipelineError, FileNotFoundError):
    pass


def _tree(root: Path, depth: int = 4, limit: int = 60) -> str:
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        level = len(Path(dirpath).relative_to(root).parts)
        if level >= depth:
            dirnames[:] = []
        dirnames.sort()
        lines.append("  " * level + Path(dirpath).name + "/")
        lines += ["  " * (level + 1) + f for f in sorted(filenames)[:8]]
        if len(lines) > limit:
            return "\n".join(lines[:limit] + ["  ..."])
    return "\n".join(lines) or f"{root} (empty or missing)"


def _search(root: Path, wanted: tuple[str, ...], depth: int = 5) -> list[Path]:
    hits = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if len(Path(dirpath).relative_to(root).parts) >= depth:
            dirnames[:] = []
        if all(w in filenames for w in wanted):
            hits.append(Path(dirpath))
    return sorted(hits, key=lambda p: (len(p.parts), str(p)))


def find_inputs(root: str | Path = KAGGLE_INPUT) -> tuple[Path, Path]:
    """(bundle folder, competition data folder): by environment variable, else by contents under root."""
    root = Path(root)
    bundle = Path(os.environ["QUEST_BUNDLE"]) if os.environ.get("QUEST_BUNDLE") else None
    data = Path(os.environ["QUEST_DATA"]) if os.environ.get("QUEST_DATA") else None
    bundle = bundle or next(iter(_search(root, (layout.MANIFEST_NAME,))), None)
    if data is None:
        found = _search(root, DATA_FILES)
        data = next((p for p in found if "google-quest-challenge" in p.parts), found[0] if found else None)
    missing = [what for what, p, f in (("bundle (a folder with bundle.json; attach the dataset written by "
                                        "`python run.py package`)", bundle, layout.MANIFEST_NAME),
                                       ("competition data (test.csv + sample_submission.csv; add the "
                                        "competition as an input)", data, DATA_FILES[0]))
               if p is None or not (p / f).is_file()]
    if missing:
        raise InputsNotFound("not found under " + str(root) + ": " + "; ".join(missing) +
                             "\n(set QUEST_BUNDLE / QUEST_DATA to override). What is there:\n" + _tree(root))
    return bundle, data


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def install_wheels(bundle: str | Path, target: str | Path = SITE) -> list[str]:
    """Install the bundle's wheels the Kaggle way: resolve offline against the image (`--no-index
    --find-links`), so an unmet requirement fails here with pip's message; install what the resolver
    picked under `target` and put it first on sys.path. Returns the installed 'name-version's."""
    wheel_dir = layout.Bundle(Path(bundle)).wheels
    wanted = ["==".join(w.name.split("-")[:2]) for w in sorted(wheel_dir.glob("*.whl"))]
    if not wanted:
        return []
    report = Path(target).with_name(Path(target).name + "-resolution.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    res = _pip("install", "--no-index", "--find-links", str(wheel_dir), "--dry-run", "--quiet", "--report",
               str(report), *wanted)
    if res.returncode or not report.is_file():
        raise InstallError(f"the bundled wheels do not install on this image ({' '.join(wanted)}):\n"
                           f"{(res.stderr or res.stdout).strip()}\n"
                           "Package again with the missing wheel in kaggle.wheel_dir.")
    picked = json.loads(report.read_text())["install"]
    urls = [unquote(urlparse(item["download_info"]["url"]).path) for item in picked]  # file:// URLs -> paths
    if urls:
        res = _pip("install", "--no-index", "--no-deps", "--upgrade", "--quiet", "--target", str(target), *urls)
        if res.returncode:
            raise InstallError(f"installing {' '.join(urls)} under {target} failed:\n{res.stderr.strip()}")
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    return [f"{i['metadata']['name']}-{i['metadata']['version']}" for i in picked]


def projected_seconds(bundle: str | Path, data_dir: str | Path, rows: int = HIDDEN_TEST_ROWS) -> float:
    """Seconds to predict `rows` rows of this test's length profile with every bundled run and fold,
    from one timed batch per run on this device."""
    import pandas as pd

    from . import data, files, predict

    bundle = layout.Bundle(Path(bundle))
    frame = data.read_csv(Path(data_dir) / DATA_FILES[0], "predict")
    total = 0.0
    for name in files.read_json(bundle.manifest)["runs"]:
        total += predict.seconds_per_row(bundle.run(name).root, pd.DataFrame(frame), CACHE) * rows
    return total


def predict_bundle(bundle: str | Path, data_dir: str | Path, work_dir: str | Path) -> Path:
    """Predict every bundled run on data_dir/test.csv, then blend, post-process and write submission.csv."""
    from . import data, ensemble, files, predict

    bundle, data_dir, work_dir = layout.Bundle(Path(bundle)), Path(data_dir), Path(work_dir)
    manifest = files.read_json(bundle.manifest)
    sample = data.read_csv(data_dir / DATA_FILES[1], "sample_submission")
    data.check_same_rows(data.read_csv(data_dir / DATA_FILES[0], "predict"), sample, data_dir / DATA_FILES[0],
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
    work = Path(work_dir or os.environ.get("QUEST_WORK") or "/kaggle/working")
    print(f"bundle: {bundle}\ncompetition data: {data_dir}", flush=True)
    print("installed from the bundle:", install_wheels(bundle) or "nothing (the image has every version needed)")
    from . import device

    print(f"device: {device.describe()}", flush=True)
    secs = projected_seconds(bundle, data_dir)
    print(f"projected time for a {HIDDEN_TEST_ROWS:,}-row hidden test on this device: {secs / 60:.1f} min "
          "(Kaggle allows 2 h on GPU, 9 h on CPU)", flush=True)
    return predict_bundle(bundle, data_dir, work)
