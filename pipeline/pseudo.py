"""Leak-free pseudo-labels (1st place): soft labels on unlabeled rows, made per fold so a student stays honest.

`python run.py pseudo --runs TEACHER [...] --input unlabeled.csv` writes output/pseudo/<name>/: the rows
(rows.csv) and, for each fold k, fold<k>.csv with labels from the teachers' fold-k models alone (the mean
over teachers). Teacher fold k never trained on fold k's rows, so when a student's fold k trains on
fold<k>.csv (`--set train.pseudo=<name>`), no label of its validation rows reaches it, not even through
the teacher. That holds only on the teachers' split: the student must use the same folds file (checked by
its fingerprint). At training time a fold also drops the pseudo rows that are train rows (by qa_id) or ask
one of its validation questions, so no validation text enters training either.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import data, encode, files, layout, predict, runs, submission
from .errors import MissingArtifact, UsageError
from .schema import ID, TARGETS

log = logging.getLogger(__name__)
RULE = "fold k's labels come only from the teachers' fold-k models, which never trained on fold k's rows"
SIDE_COLUMNS = ("category", "host")  # kept with the rows when present: a student may read them


def default_name(teacher_dirs: list[Path], input_csv: Path) -> str:
    return f"{teacher_dirs[0].name}-on-{Path(input_csv).stem}"


def make(cfg, teachers: list[str], input_csv: str | None = None) -> list[Path]:
    """Per-fold soft labels of input_csv (default: pseudo.input, else the test file) from the teacher runs."""
    names = teachers or cfg.pseudo.teachers
    if not names:
        raise UsageError("pseudo: name the teacher run(s) with --runs (or pseudo.teachers)")
    teacher_dirs = [runs.resolve(n, cfg) for n in names]
    csv = Path(input_csv) if input_csv else (cfg.path(cfg.pseudo.input) if cfg.pseudo.input else cfg.data_file("test_file"))
    fingerprints = {d.name: files.read_json(layout.Run(d).info).get("folds_fingerprint") for d in teacher_dirs}
    if len(set(fingerprints.values())) != 1:
        raise UsageError(f"the teachers were trained on different splits (folds fingerprints {fingerprints}): their "
                         "fold k does not hold out the same rows, so their labels cannot be combined per fold")
    folds = sorted(set.intersection(*(set(runs.finished_folds(d)) for d in teacher_dirs)))
    if not folds:
        raise MissingArtifact(f"the teachers {[d.name for d in teacher_dirs]} have no finished fold in common")
    out = layout.Pseudo(cfg.under_output("pseudo") / (cfg.pseudo.name or default_name(teacher_dirs, csv)))
    stamp = {"input_sha256": files.sha256_file(csv), "folds_fingerprint": next(iter(fingerprints.values())),
             "teachers": [{"run": str(d), "folds": {k: files.read_json(layout.Run(d).fold(k).finished)["weights_sha256"]
                                                    for k in folds}} for d in teacher_dirs]}
    if files.is_current(out.manifest, stamp, out.rows, *(out.fold(k) for k in folds)):
        log.info("pseudo-labels %s are current", out.root.name)
        return [out.root]
    raw = data.read_csv(csv, "predict")
    keep = [c for c in (*data.PREDICT_COLUMNS, *SIDE_COLUMNS) if c in raw.columns]
    labels = {k: np.zeros((len(raw), len(TARGETS))) for k in folds}
    for d in teacher_dirs:
        rcfg = runs.load_config(d)
        rows = predict.rows_for_run(rcfg, raw)
        for k, pred in predict.fold_predictions(d, rcfg, rows, folds, cfg.cache_dir):
            labels[k] += pred / len(teacher_dirs)  # teacher fold k only: never a model that saw fold k's rows
    files.write_csv(out.rows, raw[keep])
    for k in folds:
        files.write_csv(out.fold(k), submission.predictions_frame(raw[ID], labels[k]))
    files.write_json(out.manifest, {"stamp": stamp, "rule": RULE, "input": str(csv), "rows": len(raw),
                                    "folds": folds, "teachers": [d.name for d in teacher_dirs]})  # last
    log.info("pseudo-labels %s: %d rows x folds %s from %s", out.root, len(raw), folds, [d.name for d in teacher_dirs])
    return [out.root]


def resolve(cfg, name_or_dir: str) -> layout.Pseudo:
    for candidate in (Path(name_or_dir), cfg.path(name_or_dir), cfg.under_output("pseudo") / name_or_dir):
        if layout.Pseudo(candidate).manifest.is_file():
            return layout.Pseudo(candidate)
    raise MissingArtifact(f"train.pseudo = {name_or_dir!r}: no pseudo-label set there (pseudo.json) nor under "
                          f"{cfg.under_output('pseudo')}; make one with `python run.py pseudo --runs TEACHER --input CSV`")


@dataclass
class PseudoRows:
    """A pseudo-label set as a student reads it: its rows, encoded, and each fold's labels."""
    source: Path
    frame: pd.DataFrame
    enc: encode.Encoded
    labels: dict  # fold -> (N, 30)
    weight: float
    stamp: dict  # what the set was made from (its pseudo.json), recorded in the student's run.json

    def record(self) -> dict:
        return {"source": str(self.source), "weight": self.weight, "stamp": self.stamp}

    def for_fold(self, k: int, train: pd.DataFrame, validation_rows: np.ndarray, group_key: str) -> np.ndarray:
        """Rows a student's fold k may train on: not a train row, and not asking one of fold k's validation
        questions (so no validation text enters training)."""
        held = set(train[group_key].iloc[validation_rows])
        ok = ~self.frame[ID].isin(train[ID]).to_numpy()
        if group_key in self.frame.columns:
            ok &= ~self.frame[group_key].isin(held).to_numpy()
        return np.flatnonzero(ok)

    def extend(self, k: int, feed, y, model, coding, train: pd.DataFrame, validation_rows: np.ndarray,
               group_key: str):
        """Fold k's training feed and coded labels with its pseudo rows appended, their loss weights, their count."""
        rows = self.for_fold(k, train, validation_rows, group_key)
        weights = np.concatenate([np.ones(len(feed)), np.full(len(rows), self.weight)])
        log.info("fold %d: + %d pseudo-labelled rows (of %d) at weight %g", k, len(rows), len(self.frame), self.weight)
        return (feed.concat(model.feed(self.enc, self.frame).rows(rows)),
                np.concatenate([y, coding.encode(self.labels[k][rows])]), weights, len(rows))


def load_for_training(cfg, tok, uses_segments: bool, wanted_folds: list[int]) -> PseudoRows:
    """train.pseudo for the student cfg: refused unless made on the student's own split and for its folds."""
    from . import folds as folds_lib

    src = resolve(cfg, cfg.train.pseudo)
    manifest = files.read_json(src.manifest)
    mine, theirs = folds_lib.fingerprint(cfg), manifest["stamp"]["folds_fingerprint"]
    if mine != theirs:
        raise UsageError(f"{src.root}: its teachers were trained on another split (folds fingerprint {theirs}, this "
                         f"run's {cfg.folds_file} is {mine}); their fold k may have trained on this run's fold-k "
                         "validation rows, which would leak their labels. Make the pseudo-labels with teachers "
                         "trained on this folds file")
    missing = sorted(set(wanted_folds) - set(manifest["folds"]))
    if missing:
        raise UsageError(f"{src.root} has labels for folds {manifest['folds']} only; folds {missing} would need "
                         "labels from a teacher fold that was not trained. Train those teacher folds and run `pseudo` again")
    frame = data.read_csv(src.rows, "predict")
    if cfg.data.clean_text:
        data.clean_frame(frame)
    enc, _ = encode.encode_cached(cfg.encode, cfg.cache_dir, frame, "pseudo", tok, uses_segments)
    labels = {k: pd.read_csv(src.fold(k)).set_index(ID).loc[frame[ID], list(TARGETS)].to_numpy()
              for k in manifest["folds"]}
    return PseudoRows(src.root, frame, enc, labels, cfg.train.pseudo_weight, manifest["stamp"])
