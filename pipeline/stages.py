"""Stage functions: each takes the config and returns the paths it wrote (or found current)."""
from __future__ import annotations

import logging
from pathlib import Path

from . import data, encode as encode_lib, folds as folds_lib, kaggle, synth, tinymodel
from .schema import TEXT_COLUMNS

log = logging.getLogger(__name__)


def download(cfg, client=None, force: bool = False) -> list[Path]:
    paths = kaggle.download_competition(cfg, client=client, force=force)
    if cfg.kaggle.model:
        paths += kaggle.download_model(cfg, client=client, force=force)
    return paths


def folds(cfg, force: bool = False) -> list[Path]:
    return folds_lib.make(cfg, data.load(cfg, "train"), force=force)


def encode(cfg) -> list[Path]:
    return [encode_lib.encode_cached(cfg, data.load(cfg, split), split)[1] for split in ("train", "test")]


def demo_inputs(cfg, n_train: int = 600, n_test: int = 120) -> list[Path]:
    """Generated competition files and a tiny random BERT directory, where the demo config points."""
    paths = []
    if not kaggle.competition_files_valid(cfg):
        paths += list(synth.write(cfg.path(cfg.data.dir), n_train=n_train, n_test=n_test, seed=0).values())
    train = data.load(cfg, "train")
    texts = [t for col in TEXT_COLUMNS for t in train[col].tolist()]
    paths.append(tinymodel.make(cfg.path(cfg.model.path), texts, max_positions=max(512, cfg.encode.max_len)))
    return paths
