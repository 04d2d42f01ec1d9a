"""A Kaggle dataset folder for offline inference, and the kernel metadata beside the notebook.

Bundle layout (everything inference needs, nothing it does not):
  pipeline/ run.py configs/ requirements.txt    the code
  runs/<run>/  config.toml run.json backbone.json tokenizer/ postprocess.json fold<k>/{model.weights.h5,metrics.json}
  bundle.json                                   runs, blend method and weights, post-processing of the blend
  postprocess.json                              the blend's fitted post-processing ({} when none)
  wheels/                                       pure-Python wheels a Kaggle image may lack
  dataset-metadata.json                         for `kaggle datasets create/version`
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import config as config_lib
from . import files, kaggle, runs

log = logging.getLogger(__name__)
RUN_FILES = ("config.toml", "run.json", "backbone.json", "postprocess.json")
FOLD_FILES = ("model.weights.h5", "metrics.json")
_SLUG = re.compile(r"^[A-Za-z0-9_-]+/[a-z0-9][a-z0-9-]{4,49}$")
PLACEHOLDER_OWNER = "your-kaggle-username"


def dataset_metadata(handle: str, title: str) -> dict:
    return {"title": title, "id": handle, "licenses": [{"name": "CC0-1.0"}]}


def validate_dataset_metadata(meta: dict):
    if not _SLUG.match(meta.get("id", "")):
        raise ValueError(f"dataset id {meta.get('id')!r}: expected 'owner/slug' (slug 5-50 of a-z 0-9 -)")
    if not 6 <= len(meta.get("title", "")) <= 50:
        raise ValueError(f"dataset title {meta.get('title')!r}: Kaggle wants 6-50 characters")
    if not meta.get("licenses"):
        raise ValueError("dataset metadata needs a licenses list")


def kernel_metadata(cfg, code_file: str) -> dict:
    handle = cfg.kaggle.kernel or f"{PLACEHOLDER_OWNER}/quest-inference"
    return {"id": handle, "title": handle.split("/")[-1].replace("-", " ").title(), "code_file": code_file,
            "language": "python", "kernel_type": "notebook", "is_private": True,
            "enable_gpu": cfg.kaggle.accelerator == "gpu", "enable_tpu": cfg.kaggle.accelerator == "tpu",
            "enable_internet": False, "dataset_sources": [cfg.kaggle.dataset or f"{PLACEHOLDER_OWNER}/quest-bundle"],
            "competition_sources": [cfg.kaggle.competition], "kernel_sources": [], "model_sources": []}


def validate_kernel_metadata(meta: dict):
    if not _SLUG.match(meta.get("id", "")):
        raise ValueError(f"kernel id {meta.get('id')!r}: expected 'owner/slug'")
    if meta.get("enable_internet") is not False:
        raise ValueError("kernel must run with enable_internet = false (code competitions score offline)")
    if meta.get("kernel_type") != "notebook" or not meta.get("code_file", "").endswith(".ipynb"):
        raise ValueError("kernel must be a notebook (.ipynb code_file)")
    if not meta.get("competition_sources") or not meta.get("dataset_sources"):
        raise ValueError("kernel needs competition_sources and dataset_sources (the bundle)")
    if meta["enable_gpu"] and meta["enable_tpu"]:
        raise ValueError("enable_gpu and enable_tpu are exclusive")


def _copy(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def collect_wheels(specs: list[str], wheel_dir: Path, dest: Path) -> list[Path]:
    """Pure-Python wheels: those in wheel_dir, plus `pip download` of specs not found there."""
    dest.mkdir(parents=True, exist_ok=True)
    for whl in sorted(Path(wheel_dir).glob("*-none-any.whl")) if Path(wheel_dir).is_dir() else []:
        _copy(whl, dest / whl.name)
    have = {w.name.split("-")[0].lower().replace("_", "-") for w in dest.glob("*.whl")}
    for spec in specs:
        name = re.split(r"[=<>!~ ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        if name in have:
            continue
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "--python-version", "3", "--implementation", "py", "-q", "-d", str(dest), spec],
                             capture_output=True, text=True)
        if res.returncode:
            log.warning("could not fetch a pure-Python wheel for %s (%s); the Kaggle image must provide it",
                        spec, res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "pip failed")
    return sorted(dest.glob("*.whl"))


def package(cfg, run_names: list[str], out: str | None = None, upload: bool = False, client=None) -> list[Path]:
    run_dirs = [runs.resolve(n, cfg) for n in (run_names or [str(cfg.run_dir)])]
    for d in run_dirs:
        if not runs.finished_folds(d):
            raise FileNotFoundError(f"{d}: no finished fold to bundle")
    out_dir = cfg.path(out or str(Path(cfg.output.dir) / "kaggle-bundle"))
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    root = config_lib.ROOT
    for src in sorted((root / "pipeline").glob("*.py")) + [root / "run.py", root / "requirements.txt"]:
        _copy(src, staging / src.relative_to(root))
    for src in sorted((root / "configs").glob("*.toml")):
        _copy(src, staging / "configs" / src.name)
    for d in run_dirs:
        for name in RUN_FILES:
            if (d / name).is_file():
                _copy(d / name, staging / "runs" / d.name / name)
        for f in (d / "tokenizer").rglob("*"):
            if f.is_file():
                _copy(f, staging / "runs" / d.name / f.relative_to(d))
        for k in runs.finished_folds(d):
            for name in FOLD_FILES:
                _copy(runs.fold_dir(d, k) / name, staging / "runs" / d.name / f"fold{k}" / name)
    blend, pp = _blend_for(cfg, run_dirs)
    files.write_json(staging / "bundle.json", {"runs": [d.name for d in run_dirs], **blend})
    files.write_json(staging / "postprocess.json", pp)
    collect_wheels(cfg.kaggle.wheels, cfg.path(cfg.kaggle.wheel_dir), staging / "wheels")
    meta = dataset_metadata(cfg.kaggle.dataset or f"{PLACEHOLDER_OWNER}/quest-bundle", "QUEST pipeline bundle")
    validate_dataset_metadata(meta)
    files.write_json(staging / "dataset-metadata.json", meta)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    print(f"bundle {out_dir}: {len(run_dirs)} run(s), {size / 2**20:.1f} MiB", flush=True)
    if upload:
        if not cfg.kaggle.dataset:
            raise ValueError("set kaggle.dataset = 'owner/slug' to upload the bundle")
        print(f"dataset {cfg.kaggle.dataset}: {kaggle.upload_dataset(out_dir, client=client)}", flush=True)
    return [out_dir]


def _blend_for(cfg, run_dirs: list[Path]) -> tuple[dict, dict]:
    """The fitted ensemble over exactly these runs if there is one, else an equal mean without post-processing."""
    ens = cfg.path(cfg.output.dir) / "ensembles" / cfg.ensemble.name
    if (ens / "weights.json").is_file():
        w = files.read_json(ens / "weights.json")
        if w["runs"] == [d.name for d in run_dirs]:
            return {"method": w["method"], "weights": w["weights"]}, files.read_json(ens / "postprocess.json")
    log.warning("no ensemble fitted over %s: the bundle blends them with equal weights and no post-processing",
                [d.name for d in run_dirs])
    return {"method": "mean", "weights": [1.0 / len(run_dirs)] * len(run_dirs)}, {}


def kernel(cfg, out: str | None = None, push: bool = False, client=None) -> list[Path]:
    out_dir = cfg.path(out or str(Path(cfg.output.dir) / "kaggle-kernel"))
    notebook = config_lib.ROOT / "notebooks" / "kaggle_inference.ipynb"
    _copy(notebook, out_dir / notebook.name)
    meta = kernel_metadata(cfg, notebook.name)
    validate_kernel_metadata(meta)
    paths = [out_dir / notebook.name, files.write_json(out_dir / "kernel-metadata.json", meta)]
    if push:
        if not cfg.kaggle.kernel or not cfg.kaggle.dataset:
            raise ValueError("set kaggle.kernel and kaggle.dataset ('owner/slug') to push the kernel")
        kaggle.push_kernel(out_dir, client=client)
        print(f"kernel {cfg.kaggle.kernel} pushed", flush=True)
    return paths
