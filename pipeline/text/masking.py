"""Masked-LM inputs: text documents cut into windows, and BERT-style masks drawn per batch.

A window is [CLS] tokens [SEP] with, per token, the index of the word it belongs to (-1 for specials and
padding). Masking picks whole words in random order until about `rate` of the window's real tokens are
chosen (a word that would overshoot is skipped, so whole words stay whole), then replaces 80% of the chosen
tokens by the mask token, 10% by a random non-special token and leaves 10% as they are; the model predicts
the original token at every chosen position. Without word marks each token is its own word.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen tokens; the rest stay unchanged


@dataclass
class Windows:
    token_ids: np.ndarray  # (W, max_len) int32, padded with the pad id
    word_ids: np.ndarray  # (W, max_len) int32 word index per token, -1 on specials and padding
    lengths: np.ndarray  # (W,) int32 real tokens (specials included)

    def __len__(self) -> int:
        return len(self.lengths)


def windows(encoded: list[tuple[list[int], list[int]]], tok, max_len: int, whole_word: bool) -> Windows:
    """Each document's tokens in consecutive windows of max_len - 2 (plus [CLS] and [SEP])."""
    room = max_len - 2
    ids_rows, word_rows = [], []
    for ids, words in encoded:
        if not whole_word:
            words = list(range(len(ids)))
        for start in range(0, max(len(ids), 1), room):
            piece, w = ids[start:start + room], np.asarray(words[start:start + room], np.int64)
            if not len(piece):
                continue
            w = np.unique(w, return_inverse=True)[1] if len(w) else w  # renumber 0.. within the window
            ids_rows.append([tok.cls_id, *piece, tok.sep_id])
            word_rows.append([-1, *w.tolist(), -1])
    n = len(ids_rows)
    token_ids = np.full((n, max_len), tok.pad_id, np.int32)
    word_ids = np.full((n, max_len), -1, np.int32)
    lengths = np.zeros(n, np.int32)
    for r, (ids, words) in enumerate(zip(ids_rows, word_rows)):
        token_ids[r, :len(ids)], word_ids[r, :len(ids)], lengths[r] = ids, words, len(ids)
    return Windows(token_ids, word_ids, lengths)


def max_predictions(max_len: int, rate: float) -> int:
    """Masked positions per window, fixed so every batch has one shape: enough for `rate` of a full window."""
    return max(1, int(np.ceil((max_len - 2) * rate)))


def mask_batch(token_ids: np.ndarray, word_ids: np.ndarray, rng: np.random.Generator, rate: float, mask_id: int,
               replacement_ids: np.ndarray, n_predictions: int) -> dict:
    """Masked copies of the rows and what to predict: token_ids (masked), mask_positions, labels (the original
    ids there) and weights (1 where a position is real, 0 where it pads mask_positions)."""
    masked = token_ids.copy()
    b = len(token_ids)
    positions = np.zeros((b, n_predictions), np.int32)
    labels = np.zeros((b, n_predictions), np.int32)
    weights = np.zeros((b, n_predictions), np.float32)
    for r in range(b):
        real = np.flatnonzero(word_ids[r] >= 0)
        if not len(real):
            continue
        target = min(n_predictions, max(1, int(round(rate * len(real)))))
        words, sizes = np.unique(word_ids[r, real], return_counts=True)
        chosen, total = [], 0
        for i in rng.permutation(len(words)):
            if total + sizes[i] <= target:
                chosen.append(words[i])
                total += sizes[i]
            if total == target:
                break
        picked = real[np.isin(word_ids[r, real], chosen)]
        roll = rng.random(len(picked))
        masked[r, picked[roll < MASK_SHARE]] = mask_id
        swap = picked[(roll >= MASK_SHARE) & (roll < MASK_SHARE + RANDOM_SHARE)]
        masked[r, swap] = rng.choice(replacement_ids, size=len(swap))
        positions[r, :len(picked)], labels[r, :len(picked)], weights[r, :len(picked)] = picked, token_ids[r, picked], 1.0
    return {"token_ids": masked, "mask_positions": positions, "labels": labels, "weights": weights}


def replacement_ids(vocab_size: int, special_ids) -> np.ndarray:
    """Token ids a masked position may be swapped for: the whole vocabulary but its special tokens."""
    return np.setdiff1d(np.arange(vocab_size, dtype=np.int32), np.fromiter(special_ids, np.int32))
