"""Load and validate the competition CSVs; safe text clean-up shared by every tokenizer."""
from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.columns import ID, INPUT_COLUMNS, SUBMISSION_COLUMNS, TARGETS, TEXT_COLUMNS
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)
PREDICT_COLUMNS = (ID,) + TEXT_COLUMNS  # what a trained run reads from a row


class DataError(PipelineError, ValueError):
    """A competition file that does not have the expected shape."""


_SPACES = re.compile(r"[ \t\u00a0\u200b]+")
_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")


def clean_text(text: str) -> str:
    """Unescape HTML entities, normalise newlines, fold whitespace runs. Keeps every word."""
    text = html.unescape(text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def require_file(path: str | Path, kind: str) -> Path:
    """A CSV the user named: there, and a file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{kind} file {path} is a folder; expected a CSV file")
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}")
    return path


def read_csv(path: str | Path, kind: str) -> pd.DataFrame:
    """Read one competition file of `kind` and validate it: "train", "test", "sample_submission", or
    "predict" (any CSV to predict: only the id and the text fields a run reads are required)."""
    path = require_file(path, kind)
    try:
        # Only empty fields are missing: a body that reads "None" or "NA" is text.
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in INPUT_COLUMNS})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot parse as CSV: {err}") from None
    expected = {"train": INPUT_COLUMNS + TARGETS, "test": INPUT_COLUMNS, "sample_submission": SUBMISSION_COLUMNS,
                "predict": PREDICT_COLUMNS}[kind]
    _check_columns(path, frame, expected, allow_extra=kind != "sample_submission")
    if frame.empty:
        raise DataError(f"{path}: the header is there but no rows; a {kind} file needs at least one row")
    _check_ids(path, frame)
    if kind in ("train", "sample_submission"):
        _check_targets(path, frame, require_unit=kind == "train")
    if kind in ("train", "test", "predict"):
        frame = _fill_text(path, frame)
    return frame


def _check_columns(path, frame, expected, allow_extra):
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected the columns {list(expected)}")
    extra = [c for c in frame.columns if c not in expected]
    if extra and not allow_extra:
        raise DataError(f"{path}: unexpected column(s) {extra}; expected exactly {list(expected)}")


_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def parse_ids(path, column: pd.Series) -> np.ndarray:
    """An id column read as text, parsed as exact integers (never through float64, which rounds ids past 2**53:
    9007199254740993 would read as ...992); DataError naming the row for a non-integer or one beyond int64."""
    text = column.astype(str).str.strip()
    ok = text.str.fullmatch(r"[+-]?\d+(\.0*)?")
    if not ok.all():
        row = int(np.flatnonzero(~ok.to_numpy())[0])
        raise DataError(f"{path}: column {column.name!r} must be integers; row {row} holds {column.iloc[row]!r}")
    values = [int(t.split(".")[0]) for t in text]
    beyond = [i for i, v in enumerate(values) if not _INT64[0] <= v <= _INT64[1]]
    if beyond:
        raise DataError(f"{path}: column {column.name!r} must fit a 64-bit integer ({_INT64[0]} .. {_INT64[1]}); "
                        f"row {beyond[0]} holds {column.iloc[beyond[0]]!r}")
    return np.array(values, dtype=np.int64)


def _check_ids(path, frame):
    frame[ID] = parse_ids(path, frame[ID])
    dup = frame[ID][frame[ID].duplicated()]
    if len(dup):
        raise DataError(f"{path}: column {ID!r} must be unique; {len(dup)} duplicate(s), e.g. {int(dup.iloc[0])}")


def _check_targets(path, frame, require_unit):
    for col in TARGETS:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: target column {col!r} must be numeric; row {row} holds {frame[col].iloc[row]!r}")
        if require_unit and ((values < 0) | (values > 1)).any():
            raise DataError(f"{path}: target column {col!r} must lie in [0, 1]; "
                            f"found min {values.min():.4g}, max {values.max():.4g}")
        frame[col] = values.astype(np.float64)


def _fill_text(path, frame):
    for col in [c for c in INPUT_COLUMNS[1:] if c in frame.columns]:
        n = int(frame[col].isna().sum())
        if n:
            if col in TEXT_COLUMNS:
                _warn_once(path, f"{n} empty value(s) in {col!r} read as empty text")
            frame[col] = frame[col].fillna("")
    return frame


_warned: set = set()  # (file, message) pairs said in this process: a stage reads a file several times


def _warn_once(path: Path, message: str):
    if (str(path), message) not in _warned:
        _warned.add((str(path), message))
        log.warning("%s: %s", path.name, message)


def load(cfg, kind: str) -> pd.DataFrame:
    """Load train/test/sample_submission as named in the config, text cleaned when configured."""
    key = {"train": "train_file", "test": "test_file", "sample_submission": "sample_submission_file"}[kind]
    frame = read_csv(cfg.data_file(key), kind)
    return clean_frame(frame) if kind != "sample_submission" and cfg.data.clean_text else frame


def clean_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """clean_text over the title, body and answer columns (in place; returns the frame)."""
    for col in TEXT_COLUMNS:
        frame[col] = frame[col].map(clean_text)
    return frame


def check_same_rows(test: pd.DataFrame, sample: pd.DataFrame, test_path: Path, sample_path: Path):
    """The submission's rows are the sample submission's: checked before any prediction is made."""
    missing = sorted(set(sample[ID]) - set(test[ID]))
    extra = sorted(set(test[ID]) - set(sample[ID]))
    if missing or extra:
        raise DataError(f"{test_path} and {sample_path} disagree on {ID}: {len(missing)} id(s) only in the sample "
                        f"submission (e.g. {missing[:3]}), {len(extra)} only in the test file (e.g. {extra[:3]}); "
                        "use the two files of one competition download")


def targets(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(TARGETS)].to_numpy(np.float32)


def fingerprint(cfg) -> dict:
    """What a run trains on, as read from the train file (before text cleaning, which the run's settings
    record): a digest of its labels (qa_id + the 30 targets) and of its inputs (qa_id + every input column)."""
    import hashlib

    frame = read_csv(cfg.data_file("train_file"), "train")

    def digest(columns) -> str:
        return hashlib.sha256(pd.util.hash_pandas_object(frame[list(columns)], index=False).to_numpy().tobytes()
                              ).hexdigest()[:16]
    return {"labels": digest((ID,) + TARGETS), "inputs": digest(INPUT_COLUMNS)}
