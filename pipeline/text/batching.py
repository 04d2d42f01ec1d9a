"""Length bucketing and dynamic padding: batches of similar-length rows, each sequence cut to its longest row.

Training: each epoch shuffles rows (seeded by run seed and epoch), sorts them by length inside
chunks of `chunk_batches` batches, cuts the chunks into batches and shuffles the batch order. Each
sequence of a batch (one joint sequence, or the question and the answer sequence of a dual model) is
padded only up to its own longest row, rounded up to `pad_multiple`, so the number of distinct shapes
(and so retracing / XLA compiles) stays small.
A batch is planned here as an index vector plus one width per sequence (numpy only); modeling/feeding.py
turns plans into tf.data batches. Inference: rows sorted by length, results put back in the original order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_BATCHES = 50
INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")  # keras-hub's names, one set per sequence


@dataclass
class Feed:
    """Model inputs of some rows: per-sequence arrays (N, L) that batches cut to their sequence's longest row,
    and per-row arrays (N, 1) such as side features, taken whole."""
    arrays: dict
    seq_lengths: np.ndarray  # (N, S) true tokens of each sequence
    prefixes: tuple = ("",)  # sequence s owns the arrays named prefixes[s] + token_ids / segment_ids / padding_mask

    def __len__(self) -> int:
        return len(self.seq_lengths)

    @property
    def lengths(self) -> np.ndarray:
        return self.seq_lengths.sum(axis=1)

    def sequence_of(self, name: str) -> int | None:
        """The sequence an input belongs to (None: a per-row input)."""
        for s, prefix in sorted(enumerate(self.prefixes), key=lambda sp: -len(sp[1])):
            if name.startswith(prefix) and name[len(prefix):] in INPUT_NAMES:
                return s
        return None

    def rows(self, idx) -> "Feed":
        return Feed({k: v[idx] for k, v in self.arrays.items()}, self.seq_lengths[idx], self.prefixes)

    def only(self, names) -> "Feed":
        """The inputs a model takes (families without segment embeddings take no segment_ids)."""
        return Feed({k: v for k, v in self.arrays.items() if k in names}, self.seq_lengths, self.prefixes)

    def concat(self, other: "Feed") -> "Feed":
        """These rows, then other's (same inputs, same sequence widths)."""
        if other.prefixes != self.prefixes or set(other.arrays) != set(self.arrays):
            raise ValueError(f"cannot join feeds of inputs {sorted(self.arrays)} and {sorted(other.arrays)}")
        return Feed({k: np.concatenate([v, other.arrays[k]]) for k, v in self.arrays.items()},
                    np.concatenate([self.seq_lengths, other.seq_lengths]), self.prefixes)

    def plus(self, extra: dict) -> "Feed":
        return Feed({**self.arrays, **extra}, self.seq_lengths, self.prefixes)

    def widths(self, rows: np.ndarray, dynamic: bool, multiple: int) -> np.ndarray:
        """Padded width of each sequence for a batch of rows."""
        full = self._max_lens()
        if not dynamic:
            return full
        longest = self.seq_lengths[rows].max(axis=0)
        return np.array([padded_length(int(n), multiple, int(m)) for n, m in zip(longest, full)], np.int32)

    def _max_lens(self) -> np.ndarray:
        full = np.zeros(len(self.prefixes), np.int32)
        for k, v in self.arrays.items():
            s = self.sequence_of(k)
            if s is not None:
                full[s] = v.shape[1]
        return full

    def batch(self, rows: np.ndarray, dynamic: bool, multiple: int) -> dict:
        w = self.widths(rows, dynamic, multiple)
        return {k: (v[rows] if (s := self.sequence_of(k)) is None else v[rows, :w[s]]) for k, v in self.arrays.items()}


def plan(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, bucketing: bool,
         multiple: int = 32) -> list[np.ndarray]:
    """Row-index batches covering every row once. rng=None keeps order (inference sorts by length). lengths: one
    per row, or one per row and sequence (N, S): dual rows are bucketed on both sequences (see _by_length);
    multiple: the pad multiple their widths are rounded to."""
    lengths = np.asarray(lengths)
    n = len(lengths)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if not bucketing:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if rng is None:
        order = _by_length(lengths, order, multiple)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for start in range(0, n, chunk):
        part = _by_length(lengths, order[start:start + chunk], multiple)
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _by_length(lengths: np.ndarray, rows: np.ndarray, multiple: int) -> np.ndarray:
    """rows in an order where neighbours have similar lengths. One sequence: by length. Two or more: by the
    first sequence's padded width, then by the others' length, in alternating directions from one width to
    the next (a snake), so a batch that spans two widths stays short in both. Sorting dual rows by their
    total instead pairs a long question with a short answer and the reverse: 1.39x the true tokens computed
    at 256 + 256 on the real rows, 1.13x with the snake (tests/test_model.py)."""
    if lengths.ndim == 1 or lengths.shape[1] == 1:
        return rows[np.argsort(lengths[rows].reshape(len(rows), -1).sum(axis=1), kind="stable")]
    width = -(-lengths[rows, 0] // multiple)
    rest = lengths[rows, 1:].sum(axis=1)
    return rows[np.lexsort((np.where(width % 2 == 0, rest, -rest), width))]


def padded_length(longest: int, multiple: int, max_len: int) -> int:
    return int(min(max_len, -(-max(longest, 1) // multiple) * multiple))


def batches_per_epoch(n_rows: int, batch_size: int) -> int:
    return -(-n_rows // batch_size)
