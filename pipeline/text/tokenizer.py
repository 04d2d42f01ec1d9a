"""Tokenizers from the ecosystem's own loaders, never from the network.

- Hugging Face directories: transformers' AutoTokenizer (fast), which knows each family's files (tokenizer.json,
  vocab.txt, spiece.model, vocab.json + merges.txt ...), casing and special tokens. Columns are tokenised by its
  Rust backend in one batch call.
- keras-hub presets (as Kaggle Models ships them): keras-hub's Tokenizer.from_preset.
The special tokens and whether a pair doubles its separator (RoBERTa: <s> A </s></s> B </s>) come from the
loaded tokenizer itself. `save` writes a copy a run can reload; `fingerprint` changes whenever the vocabulary,
normalisation or special tokens do (it keys the encoding cache and is checked at predict time).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core import files
from pipeline.core.errors import PipelineError


class TokenizerError(PipelineError, FileNotFoundError):
    pass


# Vocabulary word marks: (prefix, whether it marks a word's first piece rather than a continuation).
WORD_MARKS = {"wordpiece": ("##", False), "sentencepiece": ("\u2581", True), "bpe": ("\u0120", True)}


@dataclass
class Tokenizer:
    backend: object  # transformers' fast tokenizer, or a keras-hub Tokenizer
    kind: str  # "hf" or "keras_hub"
    fingerprint: str
    cls_id: int = 0
    sep_id: int = 0
    pad_id: int = 0
    double_sep: bool = False
    vocab_size: int = 0
    special_ids: set = field(default_factory=set)
    mask_id: int | None = None  # the mask token (masked-LM pre-training); None when the vocabulary has none

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "keras_hub":
            out = self.backend.tokenize(list(texts))
            out = out.to_list() if hasattr(out, "to_list") else out  # a ragged tensor, or lists (newer keras-hub)
            return [[int(i) for i in ids] for ids in out]
        return [e.ids for e in self.backend.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def word_marking(self) -> str:
        """How encode_words finds word boundaries: "word_ids" (the fast tokenizer's own) or, for a vocabulary,
        one of WORD_MARKS (WordPiece's continuation mark, SentencePiece's and byte-level BPE's word-start mark),
        or "none"."""
        if self.kind == "hf":
            return "word_ids"
        vocab = [str(t) for t in self.backend.get_vocabulary()]
        return next((name for name, (prefix, _) in WORD_MARKS.items()
                     if sum(t.startswith(prefix) for t in vocab) > len(vocab) // 20), "none")

    def encode_words(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """Per text: token ids (no specials) and, per token, the index of the word it belongs to, so whole words
        can be masked together; with no word marking each token is its own word."""
        if self.kind == "hf":
            out = self.backend.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
            return [(e.ids, [-1 if w is None else w for w in e.word_ids]) for e in out]
        marking, rows = self.word_marking(), self.encode_batch(texts)
        if marking == "none":
            return [(ids, list(range(len(ids)))) for ids in rows]
        prefix, marks_start = WORD_MARKS[marking]
        starts = np.array([str(t).startswith(prefix) == marks_start for t in self.backend.get_vocabulary()])
        return [(ids, (np.cumsum(starts[ids] | (np.arange(len(ids)) == 0)) - 1).tolist()) for ids in rows]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) != self.pad_id]
        if self.kind == "keras_hub":
            if not ids:
                return ""
            out = self.backend.detokenize([ids])
            out = out.numpy() if hasattr(out, "numpy") else out
            return out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        return self.backend.decode(ids)

    def save(self, folder: Path):
        """A copy of this tokenizer that `load` reads back with the same fingerprint."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "keras_hub":
            self.backend.save_to_preset(str(folder))
        else:
            self.backend.save_pretrained(str(folder))


def _is_keras_hub(path: Path) -> bool:
    config = path / "tokenizer.json"
    return config.is_file() and "class_name" in json.loads(config.read_text())  # HF's tokenizer.json has "model"


def load(model_path: str | Path) -> Tokenizer:
    path = Path(model_path)
    if not path.is_dir():
        raise TokenizerError(f"tokenizer directory not found: {path}")
    return _keras_hub(path) if _is_keras_hub(path) else _hugging_face(path)


def _hugging_face(path: Path) -> Tokenizer:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TokenizerError(f"{path}: transformers' AutoTokenizer cannot load a tokenizer from it ({err}); expected "
                             "a Hugging Face model directory (tokenizer.json, or vocab.txt / spiece.model / vocab.json "
                             "+ merges.txt with config.json or tokenizer_config.json)") from None
    if not tok.is_fast:
        raise TokenizerError(f"{path}: only a slow tokenizer is available; install `tokenizers` or add tokenizer.json")
    backend = tok.backend_tokenizer
    backend.no_truncation()  # whole fields; encode.py truncates them by its own budgets
    backend.no_padding()
    specials = {"cls": tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id,
                "sep": tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id,
                "pad": tok.pad_token_id}
    missing = [k for k, v in specials.items() if v is None]
    if missing:
        raise TokenizerError(f"{path}: the tokenizer defines no {missing} token(s); a BERT-style encoder needs them")
    pair = tok("a", "b")["input_ids"]
    double = any(a == b == specials["sep"] for a, b in zip(pair, pair[1:]))
    return Tokenizer(tok, "hf", files.sha256_text(backend.to_str()), specials["cls"], specials["sep"],
                     specials["pad"], double, len(tok), set(tok.all_special_ids), tok.mask_token_id)


def _keras_hub(path: Path) -> Tokenizer:
    import keras
    import keras_hub

    try:  # the preset's own tokenizer config and assets (a run's copy has no backbone config beside them)
        tok = keras.saving.deserialize_keras_object(json.loads((path / "tokenizer.json").read_text()))
        tok.load_preset_assets(str(path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TokenizerError(f"{path}: keras-hub cannot load its tokenizer ({err})") from None
    ids = {name: getattr(tok, f"{name}_token_id", None) for name in ("cls", "sep", "start", "end", "pad")}
    cls, sep = ids["cls"] if ids["cls"] is not None else ids["start"], ids["sep"] if ids["sep"] is not None else ids["end"]
    if None in (cls, sep, ids["pad"]):
        raise TokenizerError(f"{path}: {type(tok).__name__} defines no start/separator/padding token")
    double = isinstance(tok, (keras_hub.models.RobertaTokenizer, keras_hub.models.XLMRobertaTokenizer))
    fingerprint = files.sha256_text(type(tok).__name__, json.dumps(list(tok.get_vocabulary())),
                                    json.dumps(getattr(tok, "merges", None), default=str),
                                    getattr(tok, "lowercase", None))
    mask = getattr(tok, "mask_token_id", None)
    return Tokenizer(tok, "keras_hub", fingerprint, int(cls), int(sep), int(ids["pad"]), double,
                     int(tok.vocabulary_size()), {int(i) for i in (cls, sep, ids["pad"], mask) if i is not None},
                     None if mask is None else int(mask))
