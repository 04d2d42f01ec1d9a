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

from pipeline.core import files, layout
from pipeline.core.columns import ID, TARGETS
from pipeline.core.errors import MissingArtifact, UsageError
from pipeline.data import submission, tables
from pipeline.run import predict
from pipeline.run.rundir import Run
from pipeline.text import encode

log = logging.getLogger(__name__)
RULE = "fold k's labels come only from the teachers' fold-k models, which never trained on fold k's rows"
SIDE_COLUMNS = ("category", "host")  # kept with the rows when present: a student may read them


def default_name(teachers: list[Run], input_csv: Path) -> str:
    return f"{teachers[0].name}-on-{Path(input_csv).stem}"


def make(cfg, teachers: list[str], input_csv: str | None = None) -> list[Path]:
    """Per-fold soft labels of input_csv (default: pseudo.input, else the test file) from the teacher runs."""
    names = teachers or cfg.pseudo.teachers
    if not names:
        raise UsageError("pseudo: name the teacher run(s) with --runs (or pseudo.teachers)")
    teachers = [Run.resolve(n, cfg) for n in names]
    csv = Path(input_csv) if input_csv else (cfg.path(cfg.pseudo.input) if cfg.pseudo.input else cfg.data_file("test_file"))
    fingerprints = {t.name: t.read_info().folds_fingerprint for t in teachers}
    if len(set(fingerprints.values())) != 1:
        raise UsageError(f"the teachers were trained on different splits (folds fingerprints {fingerprints}): their "
                         "fold k does not hold out the same rows, so their labels cannot be combined per fold")
    folds = sorted(set.intersection(*(set(t.finished_folds()) for t in teachers)))
    if not folds:
        raise MissingArtifact(f"the teachers {[t.name for t in teachers]} have no finished fold in common")
    out = layout.pseudo(cfg, cfg.pseudo.name or default_name(teachers, csv))
    stamp = {"input_sha256": files.sha256_file(csv), "folds_fingerprint": next(iter(fingerprints.values())),
             "teachers": [{"run": str(t.root), "folds": {k: files.read_json(t.fold(k).finished)["weights_sha256"]
                                                         for k in folds}} for t in teachers]}
    if files.is_current(out.manifest, stamp, out.rows, *(out.fold(k) for k in folds)):
        log.info("pseudo-labels %s are current", out.root.name)
        return [out.root]
    raw = tables.read_csv(csv, "predict")
    keep = [c for c in (*tables.PREDICT_COLUMNS, *SIDE_COLUMNS) if c in raw.columns]
    labels = {k: np.zeros((len(raw), len(TARGETS))) for k in folds}
    for teacher in teachers:
        predictor = predict.Predictor.of(teacher, cfg.cache_dir)
        for k, pred in predictor.fold_predictions(predictor.rows(raw), folds):
            labels[k] += pred / len(teachers)  # teacher fold k only: never a model that saw fold k's rows
    files.write_csv(out.rows, raw[keep])
    for k in folds:
        files.write_csv(out.fold(k), submission.predictions_frame(raw[ID], labels[k]))
    files.write_json(out.manifest, {"stamp": stamp, "rule": RULE, "input": str(csv), "rows": len(raw),
                                    "folds": folds, "teachers": [t.name for t in teachers]})  # last
    log.info("pseudo-labels %s: %d rows x folds %s from %s", out.root, len(raw), folds, [t.name for t in teachers])
    return [out.root]


def resolve(cfg, name_or_dir: str) -> layout.Pseudo:
    for candidate in (Path(name_or_dir), cfg.path(name_or_dir), layout.pseudo(cfg, name_or_dir).root):
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


def load_for_training(cfg, encoder, wanted_folds: list[int]) -> PseudoRows:
    """train.pseudo for the student cfg: refused unless made on the student's own split and for its folds."""
    from pipeline.data import folds as folds_lib

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
    frame = tables.read_csv(src.rows, "predict")
    if cfg.data.clean_text:
        tables.clean_frame(frame)
    enc = encoder.encode(frame, "pseudo")
    labels = {k: pd.read_csv(src.fold(k)).set_index(ID).loc[frame[ID], list(TARGETS)].to_numpy()
              for k in manifest["folds"]}
    return PseudoRows(src.root, frame, enc, labels, cfg.train.pseudo_weight, manifest["stamp"])
