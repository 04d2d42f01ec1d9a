"""`python run.py collect`: folds trained by Kaggle training kernels, merged into this run as if trained here.

For each kernel (--kernels, else those `kernel --train --push` recorded for this run): wait (bounded) until
it has run, download its output and check the run it trained against this one: the same training settings
(only the places files live may differ), folds file (fingerprint), tokenizer (fingerprint), backbone
weights (sha256), model description, keras / keras-hub versions and global batch; each fold's weights
against their recorded sha256. A mismatch is refused with its reason, before anything is copied. A fold
that passes is copied whole (staged, then renamed), so validate, ensemble and package then work as for
folds trained here; a fold this run already has is skipped when identical and refused when not.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from . import config as config_lib
from . import data, files, folds as folds_lib, kaggle, kernels, layout, modeldir, runs
from . import tokenizer as tokenizer_lib
from .errors import UsageError
from .runs import RunError

log = logging.getLogger(__name__)
LOCATIONS = {("model", "path")}  # differs on a kernel by design (/kaggle/input/...); the weights' hash is compared


def collect(cfg, kernel_handles: list[str] | None = None, wait: float = 0, client=None) -> list[Path]:
    handles = kernel_handles or kernels.pushed_for_run(cfg)
    if not handles:
        raise UsageError(f"no training kernel to collect for run {cfg.run_name}: name them with --kernels owner/slug "
                         "(or push them from here with `python run.py kernel --train --push`)")
    client = client or kaggle.get_client()
    run = layout.Run(cfg.run_dir)
    with runs.lock(run.root):
        runs.check_compatible(cfg)
        for handle in handles:
            kaggle.wait_kernel(handle, client, timeout=wait)
            staging = layout.collected(cfg, handle)
            shutil.rmtree(staging, ignore_errors=True)
            kaggle.download_kernel_output(handle, staging, client)
            src = layout.KernelWork(staging).run(cfg.run_name)
            if not src.config.is_file():
                found = sorted(p.parent.name for p in staging.rglob("config.toml"))
                raise RunError(f"kernel {handle} left no run {cfg.run_name!r} (runs in its output: {found or 'none'}); "
                               "was it pushed for this config?")
            folds = check(cfg, src, handle)
            merge(cfg, src, folds, handle)
            log.info("kernel %s: folds %s collected into %s", handle, folds or "(none new)", run.root)
        if not runs.finished_folds(run.root):
            return [run.root]
        return [run.root, runs.summarize(run.root, data.load(cfg, "train"))]


def _differences(cfg, kernel_cfg) -> dict:
    mine, theirs = (runs.training_settings(c) for c in (cfg, kernel_cfg))
    return {f"{s}.{k}": (theirs.get((s, k)), v) for (s, k), v in mine.items()
            if (s, k) not in LOCATIONS and theirs.get((s, k)) != v}


def expected_identity(cfg) -> dict:
    """What this run's folds must share: recorded by the run if it has folds, else read off the local model."""
    run = layout.Run(cfg.run_dir)
    if run.info.is_file():
        info = files.read_json(run.info)
        return {k: info.get(k) for k in ("tokenizer_fingerprint", "backbone_sha256", "versions")} | {
            "model": _architecture(run) if run.model.is_file() else None}
    found = {"model": None, "versions": None}
    path = cfg.path(cfg.model.path)
    if path.is_dir():
        found["tokenizer_fingerprint"] = tokenizer_lib.load(path).fingerprint
        found["backbone_sha256"] = None if cfg.model.random_init else modeldir.weights_sha256(modeldir.inspect(path))
    return found


def _architecture(run: layout.Run) -> dict:
    """model.json without its target coding, which each fold fits on its own rows (fold<k>/targets.json)."""
    description = json.loads(run.model.read_text())
    description["config"].pop("coding", None)
    return description


def check(cfg, src: layout.Run, handle: str) -> list[int]:
    """The kernel run's folds that may join this run (raises RunError naming the first mismatch)."""
    where = f"kernel {handle}"
    changed = _differences(cfg, runs.load_config(src.root))
    if changed:
        raise RunError(f"{where} trained with other settings {changed} (kernel, here); push it again from this config")
    info = files.read_json(src.info)
    if info.get("folds_fingerprint") != folds_lib.fingerprint(cfg):
        raise RunError(f"{where} trained on another split (folds fingerprint {info.get('folds_fingerprint')}, here "
                       f"{folds_lib.fingerprint(cfg)} for {cfg.folds_file}): its OOF rows would not match this run's "
                       "folds. Package the code dataset again from this folds file and push the kernel again")
    if tokenizer_lib.load(src.tokenizer).fingerprint != info.get("tokenizer_fingerprint"):
        raise RunError(f"{where}: its tokenizer copy {src.tokenizer} does not match its run.json")
    want = expected_identity(cfg)
    for key, what in (("tokenizer_fingerprint", "tokenizer"), ("backbone_sha256", "backbone weights")):
        if want.get(key) and info.get(key) != want[key]:
            raise RunError(f"{where} trained with another {what} ({key} {str(info.get(key))[:16]} vs "
                           f"{str(want[key])[:16]} here); attach the same model to the kernel")
    if want["model"] is not None and _architecture(src) != want["model"]:
        raise RunError(f"{where}: its model description ({src.model.name}) differs from this run's")
    trained_with = {d: info.get("versions", {}).get(d) for d in ("keras", "keras-hub")}
    if want["versions"] and runs.finished_folds(cfg.run_dir) and any(
            want["versions"].get(d) != v for d, v in trained_with.items()):
        raise RunError(f"{where} trained with {trained_with}, this run's folds with {want['versions']}: a bundle "
                       "runs one keras / keras-hub; package the code dataset from this environment")
    new = []
    for k in src.finished_folds():
        runs.verify_weights(src.root, k)
        m = files.read_json(src.fold(k).metrics)
        runs.check_global_batch(cfg.run_dir, m.get("global_batch"), m.get("replicas", 1), where)
        here = layout.Run(cfg.run_dir).fold(k)
        if here.finished.is_file():
            ours, theirs = (files.read_json(f.finished)["weights_sha256"] for f in (here, src.fold(k)))
            if ours != theirs:
                raise RunError(f"fold {k} is already finished in {cfg.run_dir} with other weights; delete "
                               f"{here.root} to take {where}'s, or leave it out")
            continue
        new.append(k)
    return new


def merge(cfg, src: layout.Run, folds: list[int], handle: str):
    """Copy the checked folds in; a run that starts here gets the kernel's model description and tokenizer and
    this machine's config."""
    run = layout.Run(cfg.run_dir)
    info = files.read_json(src.info)
    if not run.info.is_file():
        run.root.mkdir(parents=True, exist_ok=True)
        files.write_text(run.model, src.model.read_text())
        runs.save_tokenizer(tokenizer_lib.load(src.tokenizer), run.tokenizer)
        files.write_text(run.config, config_lib.to_toml(cfg))
        base = {**info, "command": sys.argv, "model_path": str(cfg.path(cfg.model.path))}
    else:
        base = files.read_json(run.info)
    for k in folds:
        staging = run.root / f".fold{k}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(src.fold(k).root, staging)
        shutil.rmtree(run.fold(k).root, ignore_errors=True)  # an unfinished local attempt, if any
        staging.rename(run.fold(k).root)
    collected = base.get("collected", []) + [{"kernel": handle, "folds": folds, "git_commit": info.get("git_commit"),
                                              "trained_model_path": info.get("model_path")}]
    files.write_json(run.info, {**base, "collected": collected})
