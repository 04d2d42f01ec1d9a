"""Fold assignment as data: written once to folds.csv (qa_id, fold) with folds.json beside it.

Answers to one question always share a fold (GroupKFold over question groups, groups shuffled with
the recorded seed; optionally stratified by a target-profile bin of each group). Every later stage
reads this file; nothing re-splits.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from pipeline.core import files, layout
from pipeline.core.columns import ID, TARGETS
from pipeline.core.errors import PipelineError
from pipeline.data import tables


class FoldsError(PipelineError, ValueError):
    pass


def assign(train: pd.DataFrame, n_folds: int, seed: int, group_key: str, stratify: bool) -> np.ndarray:
    groups = pd.factorize(train[group_key])[0]
    if len(np.unique(groups)) < n_folds:
        raise FoldsError(f"{len(np.unique(groups))} question groups cannot fill {n_folds} folds")
    fold = np.full(len(train), -1, np.int64)
    if stratify:
        # One label per group: the quantile bin of the first principal component of its mean targets.
        y = train[list(TARGETS)].to_numpy(float)
        y = y - y.mean(0)
        pc = y @ np.linalg.svd(y, full_matrices=False)[2][0]
        group_pc = pd.Series(pc).groupby(groups).transform("mean").to_numpy()
        labels = pd.qcut(group_pc, q=min(5, n_folds), labels=False, duplicates="drop")
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(train, labels, groups)
    else:
        splits = GroupKFold(n_folds, shuffle=True, random_state=seed).split(train, groups=groups)
    for k, (_, val) in enumerate(splits):
        fold[val] = k
    return fold


def inner_split(groups: np.ndarray, rows: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """rows split into (fit, inner): about `share` of them held out as whole question groups (groups, one key per
    train row), drawn with `seed`; the inner rows choose a fold's epoch (train.keep = inner) and are never trained on."""
    codes, inverse = np.unique(np.asarray(groups)[rows], return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(codes))
    counts = np.bincount(inverse, minlength=len(codes))[order]
    taken = order[:int(np.searchsorted(np.cumsum(counts), share * len(rows))) + 1]  # whole groups, >= share
    if len(taken) >= len(codes):
        raise FoldsError(f"{len(codes)} question group(s) in a fold's training rows: too few to hold out {share:.0%} "
                         "of them and still train (train.inner_share)")
    inner = np.isin(inverse, taken)
    return rows[~inner], rows[inner]


def settings(cfg) -> dict:
    f = cfg.folds
    return {"n_folds": f.n_folds, "seed": f.seed, "group_key": f.group_key, "stratify": f.stratify}


def make(cfg, train: pd.DataFrame, force: bool = False) -> list:
    """Write folds.csv + folds.json unless an identical split is already there."""
    path = cfg.folds_file
    meta_path = layout.folds_meta(path)
    want = {**settings(cfg), "train_ids_sha256": _ids_hash(train[ID])}
    if path.is_file() and meta_path.is_file() and not force:
        have = files.read_json(meta_path)
        if have == want:
            return [path, meta_path]
        raise FoldsError(f"{path} already exists with other settings ({have}); runs trained on it would no longer "
                         "match. Use another folds.file, or `python run.py folds --force` to overwrite.")
    fold = assign(train, **settings(cfg))
    files.write_csv(path, pd.DataFrame({ID: train[ID].to_numpy(), "fold": fold}))
    files.write_json(meta_path, want)
    return [path, meta_path]


def read(cfg, train: pd.DataFrame) -> np.ndarray:
    """Fold of each train row, in train order; checks the file matches the train set and config."""
    path = cfg.folds_file
    if not path.is_file():
        raise FoldsError(f"{path} not found; run `python run.py folds` first")
    table = pd.read_csv(path, dtype={ID: str})
    if list(table.columns) != [ID, "fold"]:
        raise FoldsError(f"{path}: expected columns [{ID!r}, 'fold'], got {list(table.columns)}")
    table[ID] = tables.parse_ids(path, table[ID])
    dup = table[ID][table[ID].duplicated()]
    if len(dup):
        raise FoldsError(f"{path}: each {ID} must be in one fold; {len(dup)} listed twice, e.g. {int(dup.iloc[0])} "
                         "(the last row would win silently). Re-run `python run.py folds --force`")
    mapping = dict(zip(table[ID], table["fold"]))
    missing = [int(q) for q in train[ID] if q not in mapping]
    if missing or len(mapping) != len(train):
        raise FoldsError(f"{path} does not match the train file ({len(missing)} train qa_id(s) missing, "
                         f"{len(mapping)} rows vs {len(train)}); re-run `python run.py folds --force`")
    labels = pd.to_numeric(table["fold"], errors="coerce")
    if labels.isna().any() or (labels != labels.round()).any():
        row = int(np.flatnonzero((labels.isna() | (labels != labels.round())).to_numpy())[0])
        raise FoldsError(f"{path}: fold labels must be integers; row {row} holds {table['fold'].iloc[row]!r}")
    fold = train[ID].map(mapping).to_numpy(np.int64)
    n = int(fold.max()) + 1
    if n != cfg.folds.n_folds:
        raise FoldsError(f"{path} holds {n} folds but folds.n_folds = {cfg.folds.n_folds}")
    if fold.min() < 0:
        raise FoldsError(f"{path}: fold label {int(fold.min())}; expected 0..{n - 1} (a row of a negative fold would "
                         "train in every fold and never be validated). Re-run `python run.py folds --force`")
    empty = sorted(set(range(n)) - set(fold.tolist()))
    if empty:
        raise FoldsError(f"{path}: folds {empty} hold no rows; expected each of 0..{n - 1} to hold rows. Re-run "
                         "`python run.py folds --force`")
    return fold


def by_id(cfg, train: pd.DataFrame) -> pd.Series:
    """read() as a Series indexed by qa_id, for stages that hold a subset of the train rows."""
    return pd.Series(read(cfg, train), index=train[ID].to_numpy())


def fingerprint(cfg) -> str:
    return files.sha256_file(cfg.folds_file)[:16]


def _ids_hash(ids: pd.Series) -> str:
    return files.sha256_text(",".join(map(str, ids.tolist())))
