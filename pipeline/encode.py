"""Question/answer rows into two-segment transformer inputs, cached on disk.

triple: [CLS] title [SEP] body [SEP] answer [SEP]   (segment 0 up to the body's [SEP], then 1)
pair:   [CLS] title body [SEP] answer [SEP]
RoBERTa-style vocabularies get <s> ... </s></s> ... </s>; families without segment embeddings get
all-zero segments. Each field has a token budget; budget a short field leaves unused flows to the
others, and a field longer than its share keeps its head and its tail.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import files, layout, modeldir
from . import tokenizer as tokenizer_lib
from .errors import UsageError
from .schema import ANSWER, BODY, ID, TEXT_COLUMNS, TITLE

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the layout of encoded arrays changes
ARRAYS = ("qa_id", "token_ids", "segment_ids", "padding_mask", "lengths", "field_lengths")


@dataclass
class Encoded:
    qa_id: np.ndarray  # (N,) int64
    token_ids: np.ndarray  # (N, max_len) int32
    segment_ids: np.ndarray  # (N, max_len) int32
    padding_mask: np.ndarray  # (N, max_len) int32, 1 on real tokens
    lengths: np.ndarray  # (N,) int32 true length after truncation
    field_lengths: np.ndarray  # (N, 3) int32 title/body/answer tokens before truncation
    tokenizer_fingerprint: str = ""

    def inputs(self, rows=slice(None)) -> dict[str, np.ndarray]:
        return {"token_ids": self.token_ids[rows], "segment_ids": self.segment_ids[rows],
                "padding_mask": self.padding_mask[rows]}

    def save(self, path: Path) -> Path:
        with files.atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, tokenizer_fingerprint=np.array(self.tokenizer_fingerprint),
                     **{k: getattr(self, k) for k in ARRAYS})
        return path

    @classmethod
    def load(cls, path: Path) -> "Encoded":
        with np.load(path) as z:
            return cls(**{k: z[k] for k in ARRAYS}, tokenizer_fingerprint=str(z["tokenizer_fingerprint"]))


def allocate(lengths: list[int], budgets: list[int], total: int) -> list[int]:
    """Tokens to keep per field: each gets min(length, budget); spare budget flows to fields that want more."""
    take = [min(n, b) for n, b in zip(lengths, budgets)]
    spare = total - sum(take)
    while spare > 0:
        needy = [i for i, n in enumerate(lengths) if take[i] < n]
        if not needy:
            break
        share = max(spare // len(needy), 1)
        for i in needy:
            add = min(share, lengths[i] - take[i], spare)
            take[i] += add
            spare -= add
    return take


def head_tail(ids: list[int], keep: int, head_share: float) -> list[int]:
    if len(ids) <= keep:
        return ids
    head = int(round(keep * head_share))
    return ids[:head] + ids[len(ids) - (keep - head):] if keep > head else ids[:head]


def _budgets(settings, available: int, n_fields: int) -> list[int]:
    raw = [settings.title_weight, settings.question_weight, settings.answer_weight]
    if n_fields == 2:
        raw = [raw[0] + raw[1], raw[2]]
    scaled = [int(b * available / sum(raw)) for b in raw]
    scaled[-1] += available - sum(scaled)
    return scaled


def truncation_table(enc: Encoded, tok, settings) -> list[dict]:
    """Per field: its budget, token lengths before truncation (median, p75, p90) and the share of rows cut."""
    available = settings.max_len - n_special(tok, settings.mode)
    lengths = enc.field_lengths
    if settings.mode == "pair":
        lengths, names = np.column_stack([lengths[:, 0] + lengths[:, 1], lengths[:, 2]]), ["title+body", ANSWER]
    else:
        names = list(TEXT_COLUMNS)
    budgets = _budgets(settings, available, len(names))
    kept = np.array([allocate(list(map(int, row)), budgets, available) for row in lengths]).reshape(lengths.shape)
    return [{"field": name, "budget": budgets[i], "median": float(np.median(lengths[:, i])),
             "p75": float(np.percentile(lengths[:, i], 75)), "p90": float(np.percentile(lengths[:, i], 90)),
             "truncated_share": float((kept[:, i] < lengths[:, i]).mean())} for i, name in enumerate(names)]


def n_special(tok, mode: str) -> int:
    """Special tokens per row: [CLS] + one [SEP] per field (+1 for RoBERTa's doubled separator)."""
    return (2 if mode == "pair" else 3) + 1 + int(tok.double_sep)


def assemble(fields: list[list[list[int]]], tok, settings, uses_segments: bool) -> dict[str, np.ndarray]:
    """fields: per field (title, body, answer), per row, token ids without specials."""
    pair = settings.mode == "pair"
    if pair:
        fields = [[t + b for t, b in zip(fields[0], fields[1])], fields[2]]
    n, max_len = len(fields[0]), settings.max_len
    sep = [tok.sep_id, tok.sep_id] if tok.double_sep else [tok.sep_id]
    available = max_len - n_special(tok, settings.mode)
    budgets = _budgets(settings, available, len(fields))
    token_ids = np.full((n, max_len), tok.pad_id, np.int32)
    segment_ids = np.zeros((n, max_len), np.int32)
    lengths = np.zeros(n, np.int32)
    for r in range(n):
        parts = [f[r] for f in fields]
        keep = allocate([len(p) for p in parts], budgets, available)
        parts = [head_tail(p, k, settings.head_share) for p, k in zip(parts, keep)]
        first = [tok.cls_id]
        for p in parts[:-1]:
            first += p + [tok.sep_id]
        second = (sep[1:] if tok.double_sep else []) + parts[-1] + [tok.sep_id]
        row = first + second
        token_ids[r, :len(row)] = row
        if uses_segments:
            segment_ids[r, len(first):len(row)] = 1
        lengths[r] = len(row)
    padding_mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.int32)
    return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask, "lengths": lengths}


def tokenize_columns(frame: pd.DataFrame, tok, chunk: int = 2048, desc: str = "tokenize") -> list[list[list[int]]]:
    out = [[] for _ in TEXT_COLUMNS]
    with tqdm(total=len(frame) * len(TEXT_COLUMNS), desc=desc, unit="text", disable=None, leave=False) as bar:
        for c, col in enumerate(TEXT_COLUMNS):
            texts = frame[col].tolist()
            for start in range(0, len(texts), chunk):
                out[c] += tok.encode_batch(texts[start:start + chunk])
                bar.update(len(texts[start:start + chunk]))
    return out


def encode_frame(frame: pd.DataFrame, tok, settings, uses_segments: bool) -> Encoded:
    fields = tokenize_columns(frame, tok)
    arrays = assemble(fields, tok, settings, uses_segments)
    field_lengths = np.array([[len(f[r]) for f in fields] for r in range(len(frame))], np.int32).reshape(-1, 3)
    return Encoded(frame[ID].to_numpy(np.int64), field_lengths=field_lengths,
                   tokenizer_fingerprint=tok.fingerprint, **arrays)


def cache_key(frame: pd.DataFrame, tok, settings, uses_segments: bool) -> str:
    content = pd.util.hash_pandas_object(frame[[ID, *TEXT_COLUMNS]], index=False).to_numpy().tobytes()
    return files.sha256_text(FORMAT_VERSION, files.sha256_text(content), tok.fingerprint, settings.mode,
                             settings.max_len, settings.title_weight, settings.question_weight,
                             settings.answer_weight, settings.head_share, uses_segments)[:16]


def for_model(cfg):
    """(tokenizer, model info) for cfg.model.path, checked against the encoding settings."""
    info = modeldir.inspect(cfg.path(cfg.model.path))
    tok = tokenizer_lib.load(info.path)
    if tok.vocab_size > info.vocab_size > 0:
        raise UsageError(f"{info.path}: tokenizer has {tok.vocab_size} tokens but the model only {info.vocab_size}")
    if cfg.encode.max_len > info.max_positions:
        raise UsageError(f"encode.max_len = {cfg.encode.max_len} exceeds the model's {info.max_positions} positions "
                         f"({info.path / 'config.json'})")
    return tok, info


def encode_cached(settings, cache_dir: Path, frame: pd.DataFrame, split: str, tok,
                  uses_segments: bool) -> tuple[Encoded, Path]:
    """Encode `frame`, reusing cache_dir when data, tokenizer and settings are unchanged."""
    key = cache_key(frame, tok, settings, uses_segments)
    path = layout.cache_file(cache_dir, split, settings.mode, settings.max_len, key)
    if path.is_file():
        try:
            return Encoded.load(path), path
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("%s is damaged (%s: %s); encoding again", path, type(err).__name__, err)
    if frame.empty:
        raise UsageError(f"nothing to encode: the {split} rows are empty")
    enc = encode_frame(frame, tok, settings, uses_segments)
    enc.save(path)
    truncated = float((enc.field_lengths.sum(1) + n_special(tok, settings.mode) > settings.max_len).mean())
    log.info("encoded %d %s rows -> %s (%.0f%% truncated)", len(frame), split, path.name, 100 * truncated)
    return enc, path


def check_fingerprint(enc: Encoded, tok, where: str):
    if enc.tokenizer_fingerprint != tok.fingerprint:
        raise UsageError(f"{where}: encoded with a different tokenizer than the model's "
                         f"({enc.tokenizer_fingerprint[:12]} vs {tok.fingerprint[:12]}); re-run `encode` for this model")
