"""What a local model directory holds, read from its JSON files only (no TensorFlow import).

Two layouts are understood:
- Hugging Face: config.json with `model_type`, model.safetensors, tokenizer.json and/or vocab.txt.
- keras-hub preset (as Kaggle Models ships them): metadata.json, config.json with `class_name`,
  model.weights.h5, assets/tokenizer/<vocabulary files>.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import files
from pipeline.core.errors import PipelineError

# Families whose backbone has segment (token type) embeddings; the others get all-zero segments.
SEGMENT_FAMILIES = {"bert", "albert", "electra"}
_KERAS_HUB_FAMILY = {
    "BertBackbone": "bert", "AlbertBackbone": "albert", "ElectraBackbone": "electra",
    "RobertaBackbone": "roberta", "XLMRobertaBackbone": "xlm-roberta", "DistilBertBackbone": "distilbert",
    "DebertaV3Backbone": "deberta-v3", "F_NetBackbone": "f_net",
}


class ModelDirError(PipelineError, FileNotFoundError):
    """A model directory that is missing or holds neither layout."""


@dataclass(frozen=True)
class ModelDir:
    path: Path
    layout: str  # "huggingface" or "keras_hub"
    family: str  # "bert", "roberta", "deberta-v3" ...
    vocab_size: int
    max_positions: int
    has_weights: bool
    num_layers: int = 0  # transformer layers (0: the config does not say)

    @property
    def uses_segments(self) -> bool:
        return self.family in SEGMENT_FAMILIES


def inspect(path: str | Path) -> ModelDir:
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(
            f"model directory not found: {path}\n"
            "Put a Hugging Face model there (config.json, model.safetensors, tokenizer.json or vocab.txt), "
            "or a keras-hub preset (metadata.json, config.json, model.weights.h5, assets/tokenizer/), "
            "or run `python run.py download --set kaggle.model=... --set kaggle.model_name=...`.")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelDirError(f"{path}: no config.json; expected a Hugging Face model or keras-hub preset directory")
    config = json.loads(config_file.read_text())
    if (path / "metadata.json").is_file() or "class_name" in config:
        inner = config.get("config", {})
        family = _KERAS_HUB_FAMILY.get(config.get("class_name", ""), config.get("class_name", "?"))
        return ModelDir(path, "keras_hub", family, int(inner.get("vocabulary_size", 0)),
                        int(inner.get("max_sequence_length", 512)), (path / "model.weights.h5").is_file(),
                        int(inner.get("num_layers", 0)))
    if "model_type" not in config:
        raise ModelDirError(f"{config_file}: neither a Hugging Face config (model_type) nor a keras-hub config (class_name)")
    return ModelDir(path, "huggingface", config["model_type"], int(config.get("vocab_size", 0)),
                    int(config.get("max_position_embeddings", 512)),
                    any(path.glob("*.safetensors")), int(config.get("num_hidden_layers", config.get("n_layers", 0))))


def weights_sha256(info: ModelDir) -> str | None:
    """One hash over the directory's weight files (safetensors or keras .h5, sharded or not): a backbone's
    identity wherever the folder is mounted. None without weights (random init)."""
    shards = sorted(p for pattern in ("*.safetensors", "*.weights.h5", "*.weights.json")
                    for p in info.path.glob(pattern))
    return files.sha256_text(*(f"{p.name}:{files.sha256_file(p)}" for p in shards)) if shards else None
