"""`python run.py collect`: folds trained by Kaggle training kernels, merged into this run as if trained here.

For each kernel (--kernels, else those `kernel --train --push` recorded for this run, whose recorded version
must still be the latest): wait (bounded) until it has ended, download its output (a failed kernel's too: the
folds it finished before failing are kept, the others named) and check the run it trained against this one: the same training settings
(only the places files live may differ), folds file (fingerprint), tokenizer (fingerprint), backbone
weights (sha256), model description, keras / keras-hub versions and global batch; each fold's weights
against their recorded sha256. A mismatch is refused with its reason, before anything is copied. A fold
that passes is copied whole (staged, then renamed), so validate, ensemble and package then work as for
folds trained here; a fold this run already has is skipped when identical and refused when not.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import pandas as pd

from pipeline.core import config as config_lib, files, layout
from pipeline.core.columns import ID
from pipeline.core.errors import UsageError
from pipeline.data import folds as folds_lib, tables
from pipeline.kaggle import api, kernels
from pipeline.run.rundir import Run, RunError, training_settings
from pipeline.text import modeldir, tokenizer as tokenizer_lib

log = logging.getLogger(__name__)
# What a collected fold brings (layout.Fold attributes); anything else in its folder stays behind.
FOLD_FILES = ("weights", "coding", "oof", "epoch_oof", "test", "history", "metrics", "finished")


def collect(cfg, kernel_handles: list[str] | None = None, wait: float = 0, client=None) -> list[Path]:
    handles = kernel_handles or kernels.pushed_for_run(cfg)
    if not handles:
        raise UsageError(f"no training kernel to collect for run {cfg.run_name}: name them with --kernels owner/slug "
                         "(or push them from here with `python run.py kernel --train --push`)")
    client = client or api.get_client()
    run = Run.of(cfg)
    with run.lock():
        run.check_compatible(cfg)
        for handle in handles:
            _collect_one(cfg, run, handle, kernels.pushed_record(cfg).get(handle, {}), wait, client)
        if not run.finished_folds():
            return [run.root]
        return [run.root, run.summarize(tables.load(cfg, "train"))]


def _collect_one(cfg, run: Run, handle: str, pushed: dict, wait: float, client):
    """One kernel: the version pushed from here (refused when a newer one exists, whose status and output the API
    would give instead), waited for, downloaded even when it failed, and every finished fold that passes the
    checks merged; the folds asked of it that did not finish are named."""
    if pushed.get("version"):
        latest = api.kernel_version(handle, client)
        if latest is not None and latest != pushed["version"]:
            raise RunError(f"kernel {handle} is at version {latest}, but version {pushed['version']} was pushed from "
                           f"here for run {pushed.get('run')}: Kaggle gives the status and output of the latest "
                           "version only. Push it again from here (`python run.py kernel --train --push`)")
    status, failure = api.wait_kernel(handle, client, timeout=wait)
    staging = layout.collected(cfg, handle)
    api.download_kernel_output(handle, staging, client)
    ended = f"ended {status!r}" + (f" ({failure})" if failure else "")
    src = Run(layout.KernelWork(staging).run(cfg.run_name))
    if not src.config.is_file():
        found = sorted(p.parent.name for p in staging.rglob(src.config.name))
        why = "was it pushed for this config?" if status == "complete" else f"its log is in {staging}"
        raise RunError(f"kernel {handle} {ended} and left no run {cfg.run_name!r} (runs in its output: "
                       f"{found or 'none'}); {why}")
    folds = check(cfg, run, src, handle)
    merge(cfg, run, src, folds, handle)
    log.info("kernel %s (%s): folds %s collected into %s", handle, status, folds or "(none new)", run.root)
    missing = sorted(set(pushed.get("folds") or []) - set(src.finished_folds()))
    if missing:
        log.warning("kernel %s %s: folds %s did not finish and were not collected; train them again "
                    "(`python run.py kernel --train --push --folds %s`)", handle, ended, missing,
                    ",".join(map(str, missing)))


def _differences(cfg, kernel_cfg) -> dict:
    """Training settings that differ (locations never count: model.path is /kaggle/input/... on a kernel by design,
    and the weights' hash is compared instead)."""
    mine, theirs = (training_settings(c) for c in (cfg, kernel_cfg))
    return {f"{s}.{k}": (theirs.get((s, k)), v) for (s, k), v in mine.items() if theirs.get((s, k)) != v}


def expected_identity(cfg) -> dict:
    """What this run's folds must share: recorded by the run if it has folds, else read off the local model."""
    run = Run.of(cfg)
    if run.info.is_file():
        info = run.read_info()
        return {"tokenizer_fingerprint": info.tokenizer_fingerprint, "backbone_sha256": info.backbone_sha256,
                "versions": info.versions, "model": run.architecture() if run.model.is_file() else None}
    found = {"model": None, "versions": None}
    path = cfg.path(cfg.model.path)
    if path.is_dir():
        found["tokenizer_fingerprint"] = tokenizer_lib.load(path).fingerprint
        found["backbone_sha256"] = None if cfg.model.random_init else modeldir.weights_sha256(modeldir.inspect(path))
    return found


def check(cfg, run: Run, src: Run, handle: str) -> list[int]:
    """The kernel run's folds that may join this run (raises RunError naming the first mismatch)."""
    where = f"kernel {handle}"
    changed = _differences(cfg, src.load_config())
    if changed:
        raise RunError(f"{where} trained with other settings {changed} (kernel, here); push it again from this config")
    info = src.read_info()
    if info.folds_fingerprint != folds_lib.fingerprint(cfg):
        raise RunError(f"{where} trained on another split (folds fingerprint {info.folds_fingerprint}, here "
                       f"{folds_lib.fingerprint(cfg)} for {cfg.folds_file}): its OOF rows would not match this run's "
                       "folds. Package the code dataset again from this folds file and push the kernel again")
    here = tables.fingerprint(cfg)
    if info.data_fingerprint and info.data_fingerprint != here:
        raise RunError(f"{where} trained on another train file (labels or inputs fingerprint "
                       f"{info.data_fingerprint} vs {here} here for {cfg.data_file('train_file')}): its folds would "
                       "be scored against other labels. Use the same competition files here and there")
    if tokenizer_lib.load(src.tokenizer).fingerprint != info.tokenizer_fingerprint:
        raise RunError(f"{where}: its tokenizer copy {src.tokenizer} does not match its run.json")
    want = expected_identity(cfg)
    for key, what in (("tokenizer_fingerprint", "tokenizer"), ("backbone_sha256", "backbone weights")):
        if want.get(key) and getattr(info, key) != want[key]:
            raise RunError(f"{where} trained with another {what} ({key} {str(getattr(info, key))[:16]} vs "
                           f"{str(want[key])[:16]} here); attach the same model to the kernel")
    if want["model"] is not None and src.architecture() != want["model"]:
        raise RunError(f"{where}: its model description ({src.model.name}) differs from this run's")
    trained_with = {d: info.versions.get(d) for d in ("keras", "keras-hub")}
    if want["versions"] and run.finished_folds() and any(
            want["versions"].get(d) != v for d, v in trained_with.items()):
        raise RunError(f"{where} trained with {trained_with}, this run's folds with {want['versions']}: a bundle "
                       "runs one keras / keras-hub; package the code dataset from this environment")
    new = []
    train = tables.load(cfg, "train")
    fold_of = folds_lib.by_id(cfg, train)
    for k in src.finished_folds():
        src.verify_weights(k)
        rows = pd.read_csv(src.fold(k).oof, usecols=[ID])[ID]
        if set(rows) != set(fold_of.index[fold_of == k]):
            raise RunError(f"{where}: its fold {k} predicted {len(rows)} out-of-fold rows that are not fold {k}'s "
                           f"{int((fold_of == k).sum())} rows of {cfg.folds_file}; it holds another fold's output")
        m = files.read_json(src.fold(k).metrics)
        run.check_global_batch(m.get("global_batch"), m.get("replicas", 1), where)
        if m.get("precision"):
            run.check_precision(m["precision"], where)
        here = run.fold(k)
        if here.finished.is_file():
            ours, theirs = (files.read_json(f.finished)["weights_sha256"] for f in (here, src.fold(k)))
            if ours != theirs:
                raise RunError(f"fold {k} is already finished in {cfg.run_dir} with other weights; delete "
                               f"{here.root} to take {where}'s, or leave it out")
            continue
        new.append(k)
    from pipeline.run import predict

    predict.check_backends(src, train, new)  # a kernel on another backend: equal predictions
    return new


def merge(cfg, run: Run, src: Run, folds: list[int], handle: str):
    """Copy the checked folds in; a run that starts here gets the kernel's model description and tokenizer and
    this machine's config."""
    info = src.read_info()
    if not run.info.is_file():
        run.root.mkdir(parents=True, exist_ok=True)
        files.write_text(run.model, src.model.read_text())
        run.save_tokenizer(tokenizer_lib.load(src.tokenizer))
        files.write_text(run.config, config_lib.to_toml(cfg))
        base = dataclasses.replace(info, command=sys.argv, model_path=str(cfg.path(cfg.model.path)))
    else:
        base = run.read_info()
    for k in folds:  # an unfinished local attempt, if any, is replaced whole
        with files.staged_dir(run.fold(k).root) as staging:
            for name in FOLD_FILES:
                if (f := getattr(src.fold(k), name)).is_file():
                    files.copy_file(f, getattr(layout.Fold(staging), name), within=src.root)
    collected = base.collected + [{"kernel": handle, "folds": folds, "git_commit": info.git_commit,
                                   "trained_model_path": info.model_path}]
    files.write_json(run.info, dataclasses.replace(base, collected=collected).to_dict())
