"""Question/answer rows into transformer inputs, cached on disk.

encode.inputs = "joint": one sequence per row
  triple: [CLS] title [SEP] body [SEP] answer [SEP]   (segment 0 up to the body's [SEP], then 1)
  pair:   [CLS] title body [SEP] answer [SEP]
encode.inputs = "dual": two sequences per row (2nd/6th place), each with its own length and budgets
  question: [CLS] title [SEP] body [SEP]     (max_len; title/question weights)
  answer:   [CLS] title [SEP] answer [SEP]   (answer_max_len; title/answer weights)
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

from pipeline.core import files, layout
from pipeline.core.columns import ID, TEXT_COLUMNS
from pipeline.core.errors import UsageError
from pipeline.text import batching, modeldir, tokenizer as tokenizer_lib

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # bump when the layout of encoded arrays changes
INPUT_NAMES = batching.INPUT_NAMES
# encode.inputs -> the input-name prefix of each sequence (the model's inputs are prefix + INPUT_NAMES)
SEQUENCE_PREFIXES = {"joint": ("",), "dual": ("question_", "answer_")}


@dataclass(frozen=True)
class SequenceSpec:
    prefix: str  # "" (joint), "question_" or "answer_" (dual): model input names are prefix + INPUT_NAMES
    fields: tuple[tuple[int, ...], ...]  # per segment field: the TEXT_COLUMNS it concatenates
    weights: tuple[int, ...]  # field weights -> budgets
    max_len: int
    title_floor: int = 0  # tokens the title field (when it is a field of its own) keeps before the others share

    def names(self) -> list[str]:
        return ["+".join(TEXT_COLUMNS[i] for i in f) for f in self.fields]


def sequence_specs(settings) -> list[SequenceSpec]:
    s = settings
    if s.inputs == "dual":
        question, answer = SEQUENCE_PREFIXES["dual"]
        return [SequenceSpec(question, ((0,), (1,)), (s.title_weight, s.question_weight), s.max_len, s.title_floor),
                SequenceSpec(answer, ((0,), (2,)), (s.title_weight, s.answer_weight), s.answer_max_len, s.title_floor)]
    (joint,) = SEQUENCE_PREFIXES["joint"]
    if s.mode == "pair":
        return [SequenceSpec(joint, ((0, 1), (2,)), (s.title_weight + s.question_weight, s.answer_weight), s.max_len)]
    return [SequenceSpec(joint, ((0,), (1,), (2,)), (s.title_weight, s.question_weight, s.answer_weight), s.max_len,
                         s.title_floor)]


@dataclass
class Encoded:
    qa_id: np.ndarray  # (N,) int64
    arrays: dict  # model inputs by name, each (N, that sequence's max_len) int32
    seq_lengths: np.ndarray  # (N, S) int32 true length of each sequence after truncation
    field_lengths: np.ndarray  # (N, 3) int32 title/body/answer tokens before truncation
    prefixes: tuple = ("",)  # one per sequence
    tokenizer_fingerprint: str = ""

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per row over all sequences: the length that bucketing sorts by."""
        return self.seq_lengths.sum(axis=1)

    def feed(self, rows=slice(None)) -> batching.Feed:
        return batching.Feed({k: v[rows] for k, v in self.arrays.items()}, self.seq_lengths[rows], self.prefixes)

    def save(self, path: Path) -> Path:
        with files.atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, tokenizer_fingerprint=np.array(self.tokenizer_fingerprint), qa_id=self.qa_id,
                     seq_lengths=self.seq_lengths, field_lengths=self.field_lengths,
                     prefixes=np.array(self.prefixes), **{f"input/{k}": v for k, v in self.arrays.items()})
        return path

    @classmethod
    def load(cls, path: Path) -> "Encoded":
        with np.load(path) as z:
            arrays = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("input/")}
            return cls(z["qa_id"], arrays, z["seq_lengths"], z["field_lengths"], tuple(map(str, z["prefixes"])),
                       str(z["tokenizer_fingerprint"]))


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


def n_special(tok, spec: SequenceSpec) -> int:
    """Special tokens per sequence: [CLS] + one [SEP] per field (+1 for RoBERTa's doubled separator)."""
    return 1 + len(spec.fields) + int(tok.double_sep)


def budgets(spec: SequenceSpec, available: int) -> list[int]:
    """Token budgets per field: `available` shared by weight; with a title floor, the title (a field of its own,
    with a positive weight) gets at least min(floor, available // 2) and the others share the rest by weight.
    A field shorter than its budget passes what it leaves to the others (allocate)."""
    scaled = [int(w * available / sum(spec.weights)) for w in spec.weights]
    scaled[-1] += available - sum(scaled)
    floor = min(spec.title_floor, available // 2)
    others = spec.weights[1:]
    if spec.fields[0] == (0,) and spec.weights[0] and scaled[0] < floor and sum(others):
        rest = available - floor
        scaled = [floor] + [int(w * rest / sum(others)) for w in others]
        scaled[-1] += available - sum(scaled)
    return scaled


def _spec_lengths(field_lengths: np.ndarray, spec: SequenceSpec) -> np.ndarray:
    return np.column_stack([field_lengths[:, list(f)].sum(1) for f in spec.fields])


def truncation_table(enc: Encoded, tok, settings) -> list[dict]:
    """Per sequence and field: its budget, token lengths before truncation (median, p75, p90), share of rows cut."""
    rows = []
    for spec in sequence_specs(settings):
        available = spec.max_len - n_special(tok, spec)
        lengths, b = _spec_lengths(enc.field_lengths, spec), budgets(spec, available)
        kept = np.array([allocate(list(map(int, r)), b, available) for r in lengths]).reshape(lengths.shape)
        rows += [{"field": spec.prefix + name, "budget": b[i], "median": float(np.median(lengths[:, i])),
                  "p75": float(np.percentile(lengths[:, i], 75)), "p90": float(np.percentile(lengths[:, i], 90)),
                  "truncated_share": float((kept[:, i] < lengths[:, i]).mean())} for i, name in enumerate(spec.names())]
    return rows


def truncated_share(enc: Encoded, tok, settings) -> float:
    """Rows with at least one sequence cut."""
    cut = np.zeros(len(enc.qa_id), bool)
    for spec in sequence_specs(settings):
        cut |= _spec_lengths(enc.field_lengths, spec).sum(1) + n_special(tok, spec) > spec.max_len
    return float(cut.mean())


def assemble(fields: list[list[list[int]]], tok, spec: SequenceSpec, head_share: float,
             uses_segments: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """fields: per text column (title, body, answer), per row, token ids without specials -> one sequence's
    arrays (named prefix + INPUT_NAMES) and its true lengths."""
    parts_by_field = [[sum((fields[i][r] for i in f), []) for r in range(len(fields[0]))] for f in spec.fields]
    n, max_len = len(fields[0]), spec.max_len
    sep = [tok.sep_id, tok.sep_id] if tok.double_sep else [tok.sep_id]
    available = max_len - n_special(tok, spec)
    b = budgets(spec, available)
    token_ids = np.full((n, max_len), tok.pad_id, np.int32)
    segment_ids = np.zeros((n, max_len), np.int32)
    lengths = np.zeros(n, np.int32)
    for r in range(n):
        parts = [f[r] for f in parts_by_field]
        keep = allocate([len(p) for p in parts], b, available)
        parts = [head_tail(p, k, head_share) for p, k in zip(parts, keep)]
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
    arrays = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
    return {spec.prefix + k: v for k, v in arrays.items()}, lengths


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
    specs = sequence_specs(settings)
    arrays, lengths = {}, []
    for spec in specs:
        a, n = assemble(fields, tok, spec, settings.head_share, uses_segments)
        arrays.update(a)
        lengths.append(n)
    field_lengths = np.array([[len(f[r]) for f in fields] for r in range(len(frame))], np.int32).reshape(-1, 3)
    return Encoded(frame[ID].to_numpy(np.int64), arrays, np.column_stack(lengths).astype(np.int32), field_lengths,
                   tuple(s.prefix for s in specs), tok.fingerprint)


def cache_key(frame: pd.DataFrame, tok, settings, uses_segments: bool) -> str:
    content = pd.util.hash_pandas_object(frame[[ID, *TEXT_COLUMNS]], index=False).to_numpy().tobytes()
    return files.sha256_text(FORMAT_VERSION, files.sha256_text(content), tok.fingerprint, sequence_specs(settings),
                             settings.head_share, uses_segments)[:16]


@dataclass(frozen=True)
class Encoder:
    """A tokenizer with the encode settings and a cache folder: data frames in, encoded rows out, reused from the
    cache while data, tokenizer and settings are unchanged. `Encoder.for_model(cfg)` encodes for training with
    model.path's tokenizer; run.predict.Predictor builds one from a run's own tokenizer copy."""
    settings: object  # an EncodeConfig
    tok: tokenizer_lib.Tokenizer
    uses_segments: bool  # the backbone reads segment ids (else they are all zero)
    cache_dir: Path
    info: modeldir.ModelDir | None = None  # the backbone directory it was made for (for_model)

    @classmethod
    def for_model(cls, cfg, cache_dir: Path | None = None) -> "Encoder":
        """model.path's tokenizer, checked against the model and the encoding settings."""
        info = modeldir.inspect(cfg.path(cfg.model.path))
        tok = tokenizer_lib.load(info.path)
        if tok.vocab_size > info.vocab_size > 0:
            raise UsageError(f"{info.path}: tokenizer has {tok.vocab_size} tokens but the model only "
                             f"{info.vocab_size}")
        for spec in sequence_specs(cfg.encode):
            if spec.max_len > info.max_positions:
                key = "answer_max_len" if spec.prefix == SEQUENCE_PREFIXES["dual"][1] else "max_len"
                raise UsageError(f"encode.{key} = {spec.max_len} exceeds the model's {info.max_positions} positions "
                                 f"({info.path / 'config.json'})")
        return cls(cfg.encode, tok, info.uses_segments, Path(cache_dir or cfg.cache_dir), info)

    def cached(self, frame: pd.DataFrame, split: str) -> tuple[Encoded, Path]:
        """The encoded rows of `frame` and their cache file (`split` names it: train, test, predict ...)."""
        s = self.settings
        key = cache_key(frame, self.tok, s, self.uses_segments)
        path = layout.cache_file(self.cache_dir, split, s.inputs if s.inputs == "dual" else s.mode, s.max_len, key)
        if path.is_file():
            try:
                enc = Encoded.load(path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                log.warning("%s is damaged (%s: %s); encoding again", path, type(err).__name__, err)
            else:
                if np.array_equal(enc.qa_id, frame[ID].to_numpy(np.int64)):
                    return enc, path
                log.warning("%s holds other rows or another order than the %s rows (its qa_id column differs); "
                            "encoding again", path, split)
        if frame.empty:
            raise UsageError(f"nothing to encode: the {split} rows are empty")
        enc = encode_frame(frame, self.tok, s, self.uses_segments)
        enc.save(path)
        log.info("encoded %d %s rows -> %s (%.0f%% truncated)", len(frame), split, path.name,
                 100 * truncated_share(enc, self.tok, s))
        return enc, path

    def encode(self, frame: pd.DataFrame, split: str) -> Encoded:
        return self.cached(frame, split)[0]


def check_fingerprint(enc: Encoded, tok, where: str):
    if enc.tokenizer_fingerprint != tok.fingerprint:
        raise UsageError(f"{where}: encoded with a different tokenizer than the model's "
                         f"({enc.tokenizer_fingerprint[:12]} vs {tok.fingerprint[:12]}); re-run `encode` for this model")
