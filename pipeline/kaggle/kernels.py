"""Kaggle kernels: the inference notebook (`kernel`), training notebooks (`kernel --train`), submission.

A kernel folder is a notebook plus kernel-metadata.json (internet off) for `kaggle kernels push`. A training
kernel's notebook carries the resolved config and its folds in its parameters cell; its sources are the
competition, the code dataset (`package --code-only`, or the inference bundle) and the backbone (a Kaggle
Model or a dataset, kaggle.model). Several of them, each with its own folds, train at once; `collect`
brings their folds back into the run.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

from pipeline.core import config as config_lib, files, layout
from pipeline.core.errors import UsageError
from pipeline.kaggle import api
from pipeline.kaggle.bundle import _SLUG, PLACEHOLDER_OWNER, code_dataset, uploaded_version

log = logging.getLogger(__name__)
PARAMETERS_TAG = "parameters"  # the training notebook's cell that `kernel --train` fills in


def kernel_metadata(cfg, code_file: str) -> dict:
    handle = cfg.kaggle.kernel or f"{PLACEHOLDER_OWNER}/quest-inference"
    return _metadata(cfg, handle, code_file, [cfg.kaggle.dataset or f"{PLACEHOLDER_OWNER}/quest-bundle"], [])


def _metadata(cfg, handle: str, code_file: str, datasets: list[str], models: list[str]) -> dict:
    return {"id": handle, "title": handle.split("/")[-1].replace("-", " ").title(), "code_file": code_file,
            "language": "python", "kernel_type": "notebook", "is_private": True,
            "enable_gpu": cfg.kaggle.accelerator == "gpu", "enable_tpu": cfg.kaggle.accelerator == "tpu",
            "enable_internet": False, "dataset_sources": datasets, "competition_sources": [cfg.kaggle.competition],
            "kernel_sources": [], "model_sources": models,
            **({"machine_shape": cfg.kaggle.machine_shape} if cfg.kaggle.machine_shape and
               cfg.kaggle.accelerator == "gpu" else {})}


def validate_kernel_metadata(meta: dict):
    if not _SLUG.match(meta.get("id", "")):
        raise UsageError(f"kernel id {meta.get('id')!r}: expected 'owner/slug' (slug: 6-50 of a-z 0-9, words joined by single hyphens)")
    if meta.get("enable_internet") is not False:
        raise UsageError("kernel must run with enable_internet = false (code competitions score offline)")
    if meta.get("kernel_type") != "notebook" or not meta.get("code_file", "").endswith(".ipynb"):
        raise UsageError("kernel must be a notebook (.ipynb code_file)")
    if not meta.get("competition_sources") or not meta.get("dataset_sources"):
        raise UsageError("kernel needs competition_sources and dataset_sources (the bundle)")
    if meta.get("enable_tpu"):
        raise UsageError("enable_tpu: QUEST is scored from CPU or GPU notebooks only")


def kernel(cfg, out: str | None = None, push: bool = False, client=None, wait: float = 900) -> list[Path]:
    """The inference notebook + kernel-metadata.json; with push, wait (bounded) for the bundle dataset, then push."""
    target = layout.Kernel(cfg.path(out) if out else layout.kernel_dir(cfg))
    _claim(target)
    files.copy_file(target.source, target.notebook)
    meta = kernel_metadata(cfg, target.notebook.name)
    validate_kernel_metadata(meta)
    paths = [target.notebook, files.write_json(target.metadata, meta)]
    if push:
        if not cfg.kaggle.kernel or not cfg.kaggle.dataset:
            raise UsageError("set kaggle.kernel and kaggle.dataset ('owner/slug') to push the kernel")
        api.wait_dataset_ready(cfg.kaggle.dataset, client=client, timeout=wait,
                               version=uploaded_version(cfg, cfg.kaggle.dataset))
        pushed = api.push_kernel(target.root, client=client)
        log.info("kernel %s version %s pushed: %s; when it has run, submit it with "
                 "`python run.py submit --version %s`", cfg.kaggle.kernel, pushed["version"], pushed["url"],
                 pushed["version"])
    return paths


KERNEL_MARK = {"format": "quest-kernel", "format_version": 1}


def _claim(target: layout.Kernel):
    """`kernel` writes only into a new or empty folder, or one it wrote (its mark, .quest-kernel.json): never over
    a user's own kernel-metadata.json or notebook, whatever their names."""
    files.refuse_link(target.root)
    theirs = [p.name for p in (target.metadata, target.notebook) if os.path.lexists(p)]
    if theirs and not (target.mark.is_file() and files.read_json(target.mark).get("format") == KERNEL_MARK["format"]):
        raise UsageError(f"--out {target.root} holds {' and '.join(theirs)} that `kernel` did not write (no "
                         f"{target.mark.name}); choose an empty or new folder")
    files.write_json(target.mark, KERNEL_MARK)


def train_kernel_handle(cfg, folds: list[int]) -> str:
    prefix = cfg.kaggle.train_kernel or f"{PLACEHOLDER_OWNER}/quest-train"
    return f"{prefix}-f{'-'.join(map(str, folds))}"


def model_sources(cfg) -> tuple[list[str], list[str]]:
    """(datasets, Kaggle Models) that mount the backbone: kaggle.model, a dataset 'owner/slug' or a Kaggle Model
    'owner/model/framework/variation/version'."""
    handle = cfg.kaggle.model.strip("/")
    if not handle:
        raise UsageError("a training kernel needs the backbone as an input: set kaggle.model to its Kaggle Model "
                         "('owner/model/framework/variation/version') or to a dataset holding the model folder "
                         f"('owner/slug'; upload {cfg.path(cfg.model.path)} as one)")
    parts = handle.split("/")
    if len(parts) not in (2, 5):
        raise UsageError(f"kaggle.model = {handle!r}: expected 'owner/slug' or 'owner/model/framework/variation/version'")
    return ([handle], []) if len(parts) == 2 else ([], [handle])


def train_notebook(cfg, folds: list[int]) -> dict:
    """The training notebook with its parameters cell set: this run's resolved config and its folds."""
    nb = json.loads(layout.TRAIN_NOTEBOOK.read_text())
    cells = [c for c in nb["cells"] if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise UsageError(f"{layout.TRAIN_NOTEBOOK} needs one cell tagged {PARAMETERS_TAG!r}")
    text = config_lib.to_toml(cfg)
    cells[0]["source"] = [f"CONFIG = {text!r}\n", f"FOLDS = {folds!r}\n"]
    return nb


def train_kernel(cfg, out: str | None = None, push: bool = False, client=None, wait: float = 900) -> list[Path]:
    """`kernel --train`: a training kernel for train.folds (all folds when empty); with push, wait for the code
    dataset, push, and record the kernel in output/kaggle-train/pushed.json for `collect`."""
    folds = cfg.train.folds or list(range(cfg.folds.n_folds))
    handle = train_kernel_handle(cfg, folds)
    target = layout.Kernel(cfg.path(out) if out else layout.training_kernels(cfg) / handle.split("/")[-1], train=True)
    _claim(target)
    datasets, models = model_sources(cfg)
    meta = _metadata(cfg, handle, target.notebook.name,
                     [code_dataset(cfg) or f"{PLACEHOLDER_OWNER}/quest-code", *datasets], models)
    validate_kernel_metadata(meta)
    paths = [files.write_json(target.notebook, train_notebook(cfg, folds)), files.write_json(target.metadata, meta)]
    if push:
        if not cfg.kaggle.train_kernel or not code_dataset(cfg):
            raise UsageError("set kaggle.train_kernel ('owner/prefix') and kaggle.code_dataset (or kaggle.dataset) "
                             "to push a training kernel")
        api.wait_dataset_ready(code_dataset(cfg), client=client, timeout=wait,
                               version=uploaded_version(cfg, code_dataset(cfg)))
        pushed = api.push_kernel(target.root, client=client)
        files.update_json(layout.pushed_kernels(cfg), handle, {
            "run": cfg.run_name, "folds": folds, "version": pushed["version"],
            "pushed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        log.info("training kernel %s version %s pushed (folds %s): %s; when it has run, "
                 "`python run.py collect --kernels %s` (add --wait SECONDS to wait for it)", handle,
                 pushed["version"], folds, pushed["url"], handle)
    return paths


def pushed_record(cfg) -> dict:
    """{handle: {run, folds, version, pushed}} of the training kernels pushed from here (pushed.json)."""
    record = layout.pushed_kernels(cfg)
    return files.read_json(record) if record.is_file() else {}


def pushed_for_run(cfg) -> list[str]:
    """Training kernels pushed from here for this config's run (output/kaggle-train/pushed.json)."""
    return [h for h, v in pushed_record(cfg).items() if v.get("run") == cfg.run_name]


def submit(cfg, version: int, message: str = "", client=None) -> list[Path]:
    """Submit version `version` of kaggle.kernel (its submission.csv) to the competition."""
    if not cfg.kaggle.kernel:
        raise UsageError("set kaggle.kernel = 'owner/slug' (the pushed inference kernel) to submit")
    if version < 1:
        raise UsageError(f"--version {version}: expected the kernel version number `kernel --push` printed (>= 1)")
    answer = api.submit_kernel(cfg.kaggle.competition, cfg.kaggle.kernel, version,
                                  message or f"{cfg.kaggle.kernel} v{version}", client=client)
    log.info("%s version %d -> %s: %s", cfg.kaggle.kernel, version, cfg.kaggle.competition, answer)
    return []
