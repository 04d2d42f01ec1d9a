"""Target codings: what the model is trained on, and how its outputs come back to 30 columns in [0, 1].

raw:     the labels themselves (BCE on soft targets), one unit per column.
rank:    per column, the labels' average rank among the training rows, min-max scaled to [0, 1]
         (6th place); a prediction maps back through the same (rank, value) points.
ordinal: per column, one binary unit per "label > v" for every training value v but the largest
         (2nd place, about 170 units); the prediction is the expected value
         v_0 + sum_i (v_{i+1} - v_i) * P(label > v_i). A soft label between two training values (a
         pseudo-label) sets the unit of that step to the fraction it climbs, so it decodes back exactly.
A coding is fitted on a fold's training rows only and saved with the fold (it is part of the model).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

KINDS = ("raw", "rank", "ordinal")


@dataclass
class TargetCoding:
    kind: str = "raw"
    values: list[list[float]] = field(default_factory=list)  # per column: sorted distinct training values
    points: list[list[float]] = field(default_factory=list)  # rank: per column, each value's scaled rank

    @property
    def n_columns(self) -> int:
        return len(self.values)

    def units(self) -> list[int]:
        """Model output units per column."""
        if self.kind == "ordinal":
            return [max(len(v) - 1, 1) for v in self.values]
        return [1] * self.n_columns

    def encode(self, y: np.ndarray) -> np.ndarray:
        """(N, 30) labels -> (N, sum(units)) training targets in [0, 1]."""
        y = np.asarray(y, np.float64)
        if self.kind == "raw":
            return y.astype(np.float32)
        cols = []
        for c, values in enumerate(self.values):
            if self.kind == "rank":
                cols.append(np.interp(y[:, c], values, self.points[c])[:, None])
            elif len(values) == 1:
                cols.append(np.zeros((len(y), 1)))
            else:  # unit i: how far the label climbs the step (v_i, v_i+1]: 0/1 on the grid, fractional off it
                v = np.asarray(values)
                climb = np.round((y[:, c, None] - v[None, :-1]) / np.diff(v)[None, :], 6)  # labels on the grid: 0/1
                cols.append(np.clip(climb, 0.0, 1.0))
        return np.concatenate(cols, axis=1).astype(np.float32)

    def decode(self, p: np.ndarray) -> np.ndarray:
        """(N, sum(units)) model outputs -> (N, 30) predictions in [0, 1]."""
        p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
        if self.kind == "raw":
            return p
        out, start = np.empty((len(p), self.n_columns)), 0
        for c, (values, n) in enumerate(zip(self.values, self.units())):
            part, start = p[:, start:start + n], start + n
            if self.kind == "rank":
                out[:, c] = np.interp(part[:, 0], self.points[c], values) if len(values) > 1 else values[0]
            else:
                steps = np.diff(values) if len(values) > 1 else np.zeros(1)
                out[:, c] = values[0] + part @ steps
        return np.clip(out, 0.0, 1.0)

    def expand(self, per_column: np.ndarray) -> np.ndarray:
        """A per-column quantity (e.g. a positive weight) repeated over each column's units."""
        return np.repeat(np.asarray(per_column, np.float32), self.units())

    def to_dict(self) -> dict:
        return {"kind": self.kind, "values": self.values, "points": self.points}

    @classmethod
    def from_dict(cls, d: dict) -> "TargetCoding":
        return cls(d["kind"], [list(map(float, v)) for v in d.get("values", [])],
                   [list(map(float, v)) for v in d.get("points", [])])


def fit(kind: str, y: np.ndarray) -> TargetCoding:
    """The coding of `kind` fitted on training labels y (N, columns)."""
    if kind not in KINDS:
        raise ValueError(f"target coding {kind!r}; expected one of {', '.join(KINDS)}")
    y = np.asarray(y, np.float64)
    values = [np.unique(np.round(y[:, c], 9)).tolist() for c in range(y.shape[1])]
    points = []
    if kind == "rank":
        for c, v in enumerate(values):
            ranks = rankdata(np.round(y[:, c], 9), method="average")
            span = ranks.max() - ranks.min()
            scaled = (ranks - ranks.min()) / span if span else np.zeros_like(ranks)
            # every distinct value has one average rank: its point
            order = np.searchsorted(v, np.round(y[:, c], 9))
            pts = np.zeros(len(v))
            pts[order] = scaled
            points.append(pts.tolist())
    return TargetCoding(kind, values, points)
