"""A tiny BERT model directory built offline: WordPiece vocabulary trained on the given texts plus
a Hugging Face config.json without weights (random init). Used by the demo, tests and benchmarks."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.core import files


def make(path: str | Path, texts: list[str], hidden: int = 64, layers: int = 2, heads: int = 2,
         vocab_size: int = 4000, max_positions: int = 512) -> Path:
    from tokenizers import BertWordPieceTokenizer

    path = Path(path)
    if (path / "config.json").is_file() and (path / "tokenizer.json").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, show_progress=False,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    with files.atomic_path(path / "vocab.txt") as tmp:
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        tmp.write_text("".join(t + "\n" for t, _ in vocab))
    with files.atomic_path(path / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": tok.get_vocab_size(),
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": 4 * hidden, "max_position_embeddings": max_positions, "type_vocab_size": 2,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12, "pad_token_id": 0,
    }
    files.write_text(path / "tokenizer_config.json", json.dumps({"do_lower_case": True}) + "\n")
    files.write_text(path / "config.json", json.dumps(config, indent=2) + "\n")  # last: marks the dir complete
    return path
