"""Run directories (paths in layout.Run): opening a run for training with its provenance (resolved config,
command line, seed, git commit, library versions, tokenizer copy), the checks that keep it consistent
(settings, folds fingerprint, weights hashes, current predictions, one trainer at a time), OOF summaries
and rebuilding a fold's model.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import config as config_lib
from . import files, layout, metrics, modeldir, provenance
from .errors import MissingArtifact, PipelineError
from .schema import ID

# Settings that may differ when a run is resumed or extended; anything else must match.
_RESUMABLE = {("train", "folds"), ("train", "verbose"), ("train", "eval_batch_size"), ("train", "mixed_precision"),
              ("train", "predict_precision"), ("train", "xla"), ("train", "max_steps"), ("train", "strategy"),
              # locations, not settings: the content behind them is checked by fingerprint instead
              ("folds", "file"), ("encode", "cache_dir")}
_TRAINING_SECTIONS = ("folds", "encode", "model", "train")


class RunError(PipelineError, ValueError):
    """A run directory whose artifacts do not match what was recorded, or that another process holds."""


def training_settings(cfg) -> dict:
    d = config_lib.to_dict(cfg)
    return {(s, k): v for s in _TRAINING_SECTIONS for k, v in d[s].items() if (s, k) not in _RESUMABLE}


def check_folds(cfg, run_dir: Path):
    """The run's folds.csv must be the one it was trained on (fingerprint in run.json), else its OOF is wrong."""
    from . import folds as folds_lib

    info = layout.Run(run_dir).info
    recorded = files.read_json(info).get("folds_fingerprint") if info.is_file() else None
    if not recorded or not finished_folds(run_dir):
        return
    current = folds_lib.fingerprint(cfg)
    if current != recorded:
        raise RunError(f"{cfg.folds_file} changed since {run_dir.name} was trained on it (fingerprint "
                       f"{current} vs {recorded} in {info}): its out-of-fold rows no longer match. "
                       "Restore that folds file (same folds.seed / n_folds / group_key) or train a new run")


def check_compatible(cfg):
    """A run is resumed or extended only with the settings (and the folds) it was trained with."""
    check_folds(cfg, cfg.run_dir)
    old = layout.Run(cfg.run_dir).config
    if old.is_file():
        before = training_settings(config_lib.from_toml_text(old.read_text()))
        changed = {f"{s}.{k}": (before.get((s, k)), v) for (s, k), v in training_settings(cfg).items()
                   if before.get((s, k)) != v}
        if changed:
            raise RunError(f"{cfg.run_dir} was trained with other settings {changed} (old, new); "
                       "pick a new train.run_name or delete the run")


def check_global_batch(run_dir: Path, batch: int, replicas: int, where: str = "this machine"):
    """A run's folds share one effective batch (rows per optimizer step: train.batch_size x the replicas the
    strategy found x train.grad_accum), so a fold trained on two GPUs does not join folds trained on one at the
    same settings; train.grad_accum = 2 on one GPU matches two GPUs."""
    for k in finished_folds(run_dir):
        m = files.read_json(layout.Run(run_dir).fold(k).metrics)
        if m.get("global_batch", batch) != batch:
            raise RunError(f"fold {k} of {run_dir.name} was trained with a global batch of {m['global_batch']} "
                           f"({m.get('replicas', 1)} replica(s) x train.batch_size x train.grad_accum); {where} gives "
                           f"{batch} ({replicas} replica(s)). Its folds would not be one recipe: use the same kind of "
                           "machine, --set train.strategy=default (one device) everywhere, or a train.grad_accum that "
                           "makes the products equal")


def open_run(cfg, model_info, tok, extra: dict | None = None) -> Path:
    """Create or re-open cfg.run_dir for training and record how it is being trained."""
    check_compatible(cfg)
    run = layout.Run(cfg.run_dir)
    files.write_text(run.config, config_lib.to_toml(cfg))
    files.write_json(run.info, {
        "command": sys.argv, "seed": cfg.train.seed, "git_commit": provenance.git_commit(),
        "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_path": str(model_info.path), "family": model_info.family, "uses_segments": model_info.uses_segments,
        "max_positions": model_info.max_positions, "tokenizer_fingerprint": tok.fingerprint,
        "backbone_sha256": None if cfg.model.random_init else modeldir.weights_sha256(model_info),
        "versions": provenance.library_versions(), **_pretrained(model_info.path), **(extra or {})})
    save_tokenizer(tok, run.tokenizer)
    return run.root


def _pretrained(model_path: Path) -> dict:
    """What a backbone pre-trained by `pretrain` was pre-trained on (its pretrain.json), for the run's record."""
    manifest = layout.Pretrained(Path(model_path)).manifest
    if not manifest.is_file():
        return {}
    m = files.read_json(manifest)
    return {"pretrained": {k: m.get(k) for k in ("base_model", "sources", "labels_read", "steps", "tokens_seen", "seed",
                                                 "masking", "git_commit")}}


def save_tokenizer(tok, dest: Path):
    """The run's own copy of its tokenizer, written whole or not at all, and checked to reload identically."""
    from . import tokenizer as tokenizer_lib

    if dest.is_dir() and tokenizer_lib.load(dest).fingerprint == tok.fingerprint:
        return
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    tok.save(staging)
    if tokenizer_lib.load(staging).fingerprint != tok.fingerprint:
        raise tokenizer_lib.TokenizerError(f"the tokenizer saved to {staging} does not reload as the same tokenizer")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def resolve(name_or_dir: str | Path, cfg) -> Path:
    """A run given by name (under output/runs/) or by directory."""
    p = Path(name_or_dir)
    for candidate in (p, cfg.path(str(p)), layout.runs_root(cfg) / str(p)):
        if layout.Run(candidate).config.is_file():
            return candidate.resolve()
    raise MissingArtifact(f"no run {name_or_dir!r} (looked for {layout.Run(p).config.name} in {p} and "
                            f"{layout.runs_root(cfg) / str(p)})")


def load_config(run_dir: Path):
    return config_lib.from_toml_text(layout.Run(run_dir).config.read_text())


def verify_weights(run_dir: Path, k: int) -> Path:
    """The fold's weights file, checked against the sha256 recorded when the fold finished."""
    fold = layout.Run(run_dir).fold(k)
    recorded = files.read_json(fold.finished).get("weights_sha256")
    if not fold.weights.is_file():
        raise RunError(f"{fold.weights} is missing; delete {fold.root} and run `python run.py train --folds {k}` again")
    if recorded and files.sha256_file(fold.weights) != recorded:
        raise RunError(f"{fold.weights} is damaged or was replaced (its sha256 differs from the one recorded in "
                       f"{fold.finished.name}); delete {fold.root} and run `python run.py train --folds {k}` again")
    return fold.weights


@contextlib.contextmanager
def lock(run_dir: Path):
    """One training process per run directory; stale temp files of a killed one are removed once we hold it."""
    import fcntl
    import os
    import socket

    run_dir.mkdir(parents=True, exist_ok=True)
    lock_file = layout.Run(run_dir).lock
    handle = open(lock_file, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunError(f"{run_dir} is being trained by {holder}; wait for it to finish, or use another "
                       "train.run_name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
    handle.flush()
    stale = [p for p in run_dir.rglob(".*") if p.is_file() and p != lock_file]
    for p in stale:  # temp files of files.atomic_path left by a killed process
        p.unlink()
    try:
        yield
    finally:
        handle.close()


def prediction_stamp(run_dir: Path, csv_path: Path, precision: str | None = None) -> dict:
    """What a prediction of csv_path by this run depends on: the input's content, the finished folds, precision."""
    return {"input": str(csv_path), "input_sha256": files.sha256_file(csv_path), "folds": finished_folds(run_dir),
            "precision": precision or "run"}


def current_prediction(run_dir: Path, csv_path: Path, out_dir: Path | None = None,
                       precision: str | None = None, stamp: dict | None = None) -> Path | None:
    """`predict`'s output for csv_path if it is there and current, else None (stamp: prediction_stamp's, if
    the caller already has it)."""
    run = layout.Run(run_dir)
    stamp = stamp or prediction_stamp(run_dir, csv_path, precision)
    out = run.prediction(csv_path, out_dir)
    return out if files.is_current(run.prediction_stamp(csv_path, out_dir), stamp, out) else None


def finished_folds(run_dir: Path) -> list[int]:
    return layout.Run(run_dir).finished_folds()


def load_oof(run_dir: Path) -> pd.DataFrame:
    done = finished_folds(run_dir)
    if not done:
        raise MissingArtifact(f"{run_dir}: no finished fold; run `python run.py train` first")
    return pd.concat([pd.read_csv(layout.Run(run_dir).fold(k).oof) for k in done], ignore_index=True)


def summarize(run_dir: Path, train: pd.DataFrame) -> Path:
    """oof.csv and summary.json over the folds finished so far."""
    oof = load_oof(run_dir)
    truth = train[train[ID].isin(oof[ID])]
    score = metrics.score_frames(truth, oof)
    run = layout.Run(run_dir)
    per_fold = {k: files.read_json(run.fold(k).metrics)["val_spearman"] for k in run.finished_folds()}
    files.write_csv(run.oof, oof.set_index(ID).loc[truth[ID]].reset_index())
    return files.write_json(run.summary, {
        "folds_done": list(per_fold), "per_fold": per_fold, "mean_fold_spearman": float(np.mean(list(per_fold.values()))),
        "oof_spearman": score.mean, "n_rows": len(truth),
        "n_constant": score.n_constant, "constant_columns": score.constant_columns})
