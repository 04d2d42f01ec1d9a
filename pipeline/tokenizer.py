"""Fast batch tokenizers read from a model directory, never from the network.

Sources, in order: tokenizer.json (any HF fast tokenizer), vocab.txt (WordPiece), and a keras-hub
preset's assets/tokenizer/ (vocabulary.txt WordPiece, vocabulary.json + merges.txt byte-level BPE,
vocabulary.spm SentencePiece). All run in native code and tokenise whole columns at once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import files
from .errors import PipelineError

_SPECIALS = (("[CLS]", "[SEP]", "[PAD]"), ("<s>", "</s>", "<pad>"))


class TokenizerError(PipelineError, FileNotFoundError):
    pass


@dataclass
class Tokenizer:
    backend: object
    kind: str  # "hf" (tokenizers.Tokenizer) or "spm" (sentencepiece)
    fingerprint: str  # changes whenever the vocabulary or its settings change
    cls_id: int = 0
    sep_id: int = 0
    pad_id: int = 0
    double_sep: bool = False  # RoBERTa-style pairs: <s> A </s></s> B </s>
    vocab_size: int = 0
    special_ids: set = field(default_factory=set)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "spm":
            return self.backend.encode(list(texts), out_type=int)
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) != self.pad_id]
        if self.kind == "spm":
            return " ".join(self.backend.id_to_piece(i) for i in ids)
        return self.backend.decode(ids, skip_special_tokens=False)


def _lowercase(path: Path, default: bool = True) -> bool:
    for name in ("tokenizer_config.json", "tokenizer.json"):
        f = path / name
        if f.is_file():
            conf = json.loads(f.read_text())
            conf = conf.get("config", conf)
            for key in ("do_lower_case", "lowercase"):
                if key in conf:
                    return bool(conf[key])
    return default


def _wordpiece(vocab: Path, lowercase: bool):
    from tokenizers.implementations import BertWordPieceTokenizer

    return BertWordPieceTokenizer(str(vocab), lowercase=lowercase)._tokenizer


def load(model_path: str | Path) -> Tokenizer:
    path = Path(model_path)
    assets = path / "assets" / "tokenizer"
    if (path / "tokenizer.json").is_file() and "model" in json.loads((path / "tokenizer.json").read_text()):
        from tokenizers import Tokenizer as HFTokenizer

        f = path / "tokenizer.json"
        tok, kind, fp = HFTokenizer.from_file(str(f)), "hf", files.sha256_file(f)
        tok.no_truncation()
        tok.no_padding()
    elif (path / "vocab.txt").is_file() or (assets / "vocabulary.txt").is_file():
        f = path / "vocab.txt" if (path / "vocab.txt").is_file() else assets / "vocabulary.txt"
        lower = _lowercase(path)
        tok, kind, fp = _wordpiece(f, lower), "hf", files.sha256_text(files.sha256_file(f), lower)
    elif (assets / "vocabulary.json").is_file() and (assets / "merges.txt").is_file():
        from tokenizers.implementations import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer(str(assets / "vocabulary.json"), str(assets / "merges.txt"))._tokenizer
        kind = "hf"
        fp = files.sha256_text(files.sha256_file(assets / "vocabulary.json"), files.sha256_file(assets / "merges.txt"))
    elif (assets / "vocabulary.spm").is_file():
        import sentencepiece

        f = assets / "vocabulary.spm"
        tok, kind, fp = sentencepiece.SentencePieceProcessor(model_file=str(f)), "spm", files.sha256_file(f)
    else:
        raise TokenizerError(
            f"{path}: no tokenizer found; expected tokenizer.json or vocab.txt (Hugging Face), "
            "or assets/tokenizer/vocabulary.txt|vocabulary.json+merges.txt|vocabulary.spm (keras-hub preset)")
    return _with_specials(tok, kind, fp, path)


def _with_specials(tok, kind, fp, path) -> Tokenizer:
    lookup = tok.piece_to_id if kind == "spm" else tok.token_to_id
    unk = tok.unk_id() if kind == "spm" else None
    for cls, sep, pad in _SPECIALS:
        ids = [lookup(t) for t in (cls, sep, pad)]
        if all(i is not None and i != unk for i in ids):
            size = tok.get_piece_size() if kind == "spm" else tok.get_vocab_size()
            return Tokenizer(tok, kind, fp, *ids, double_sep=cls == "<s>", vocab_size=size, special_ids=set(ids))
    raise TokenizerError(f"{path}: tokenizer has neither [CLS]/[SEP]/[PAD] nor <s>/</s>/<pad> tokens")
