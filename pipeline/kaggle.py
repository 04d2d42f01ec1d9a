"""The only code that touches the network: the `kaggle` package, behind an injectable client.

`client` arguments take anything with the KaggleApi methods used here, so tests run offline.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from . import data as data_lib

COMPETITION_FILES = {"train": "train_file", "test": "test_file", "sample_submission": "sample_submission_file"}


class KaggleUnavailable(RuntimeError):
    """No credentials or no network: says exactly which files to put where instead."""


def get_client():
    has_token = (Path.home() / ".kaggle" / "kaggle.json").is_file() or os.environ.get("KAGGLE_API_TOKEN") or (
        os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
    if not has_token:
        raise KaggleUnavailable("no Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)")
    from kaggle.api.kaggle_api_extended import KaggleApi  # `import kaggle` would authenticate at import

    api = KaggleApi()
    api.authenticate()
    return api


def _manual_help(cfg) -> str:
    d = cfg.path(cfg.data.dir)
    return (f"Download the competition files by hand from https://www.kaggle.com/c/{cfg.kaggle.competition}/data "
            f"and put train.csv, test.csv and sample_submission.csv in {d}/ (or set data.dir). "
            f"Put model weights in {cfg.path(cfg.kaggle.models_dir)}/<name>/ (Hugging Face: config.json, model.safetensors, "
            "tokenizer.json or vocab.txt; keras-hub preset: metadata.json, config.json, model.weights.h5, assets/).")


def competition_files_valid(cfg) -> bool:
    try:
        for kind in COMPETITION_FILES:
            data_lib.read_csv(cfg.data_file(COMPETITION_FILES[kind]), kind)
    except data_lib.DataError:
        return False
    return True


def _unzip_all(folder: Path):
    for z in folder.glob("*.zip"):
        with zipfile.ZipFile(z) as zf:
            zf.extractall(folder)
        z.unlink()


def download_competition(cfg, client=None, force: bool = False) -> list[Path]:
    target = cfg.path(cfg.data.dir)
    paths = [cfg.data_file(key) for key in COMPETITION_FILES.values()]
    if not force and competition_files_valid(cfg):
        return paths
    try:
        client = client or get_client()
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        client.competition_download_files(cfg.kaggle.competition, path=str(staging), quiet=False)
        _unzip_all(staging)
    except KaggleUnavailable as err:
        raise KaggleUnavailable(f"{err}. {_manual_help(cfg)}") from None
    except Exception as err:  # network errors come in many types; all end the same way
        raise KaggleUnavailable(f"Kaggle download failed ({type(err).__name__}: {err}). {_manual_help(cfg)}") from None
    target.mkdir(parents=True, exist_ok=True)
    for f in staging.iterdir():
        os.replace(f, target / f.name)
    staging.rmdir()
    if not competition_files_valid(cfg):
        raise KaggleUnavailable(f"downloaded files in {target} are incomplete or invalid. {_manual_help(cfg)}")
    return paths


def download_model(cfg, client=None, force: bool = False) -> list[Path]:
    """kaggle.model: 'owner/model/framework/variation/version' (Kaggle Models) or 'owner/dataset'."""
    handle, name = cfg.kaggle.model, cfg.kaggle.model_name or cfg.kaggle.model.rstrip("/").split("/")[-1]
    target = cfg.path(cfg.kaggle.models_dir) / name
    if (target / "config.json").is_file() and not force:
        return [target]
    parts = handle.strip("/").split("/")
    if len(parts) not in (2, 5):
        raise ValueError(f"kaggle.model = {handle!r}; expected 'owner/model/framework/variation/version' "
                         "(Kaggle Models, e.g. keras/bert/keras/bert_base_en_uncased/2) or 'owner/dataset'")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        client = client or get_client()
        if len(parts) == 5:
            client.model_instance_version_download(handle, path=str(staging), untar=True, quiet=False)
        else:
            client.dataset_download_files(handle, path=str(staging), unzip=True, quiet=False)
        _unzip_all(staging)
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise KaggleUnavailable(f"model download of {handle!r} failed ({err}). {_manual_help(cfg)}") from None
    found = sorted(p.parent for p in staging.rglob("config.json"))
    if not found:
        shutil.rmtree(staging, ignore_errors=True)
        raise KaggleUnavailable(f"{handle!r} holds no config.json; not a model directory")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(found[0], target)
    shutil.rmtree(staging, ignore_errors=True)
    return [target]


def upload_dataset(folder: Path, client=None, notes: str = "update") -> str:
    """Create the dataset described by folder/dataset-metadata.json, or add a version if it exists."""
    client = client or get_client()
    try:
        client.dataset_create_version(str(folder), version_notes=notes, dir_mode="zip", quiet=False)
        return "version"
    except Exception as err:  # the API answers 404 for a dataset that does not exist yet
        if "404" not in str(err) and "not found" not in str(err).lower():
            raise
    client.dataset_create_new(str(folder), public=False, dir_mode="zip", quiet=False)
    return "created"


def push_kernel(folder: Path, client=None):
    client = client or get_client()
    return client.kernels_push(str(folder))
