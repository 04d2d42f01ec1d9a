"""The submission CSV: exactly the sample submission's rows (same qa_id order) and 30 target columns."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import files
from pipeline.core.columns import ID, SUBMISSION_COLUMNS, TARGETS
from pipeline.core.errors import PipelineError
from pipeline.data import metrics


def predictions_frame(qa_ids, preds) -> pd.DataFrame:
    """The one prediction-table format (OOF, test, blend, submission): qa_id then the 30 targets."""
    frame = pd.DataFrame(np.asarray(preds, np.float64), columns=list(TARGETS))
    frame.insert(0, ID, np.asarray(qa_ids, np.int64))
    return frame


class SubmissionError(PipelineError, ValueError):
    pass


def build(sample: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """Predictions (qa_id + targets, any row order) laid out like the sample submission."""
    out = pd.DataFrame(metrics.lookup(preds, sample[ID], SubmissionError), columns=list(TARGETS))
    out.insert(0, ID, sample[ID].to_numpy())
    return out


def validate(sub: pd.DataFrame, sample: pd.DataFrame):
    if list(sub.columns) != list(SUBMISSION_COLUMNS):
        raise SubmissionError(f"columns must be exactly {list(SUBMISSION_COLUMNS)}")
    if len(sub) != len(sample) or not np.array_equal(sub[ID].to_numpy(), sample[ID].to_numpy()):
        raise SubmissionError(f"rows must be the sample submission's {len(sample)} {ID}s in the same order")
    values = sub[list(TARGETS)].to_numpy(float)
    if not np.isfinite(values).all():
        raise SubmissionError(f"{int((~np.isfinite(values)).sum())} NaN/inf value(s) in the submission")
    if values.min() < 0 or values.max() > 1:
        raise SubmissionError(f"values must lie in [0, 1]; found [{values.min():.4g}, {values.max():.4g}]")


def write(path: str | Path, sample: pd.DataFrame, preds: pd.DataFrame) -> Path:
    sub = build(sample, preds)
    validate(sub, sample)
    return files.write_csv(path, sub)
