"""The only code that touches the network: the `kaggle` package, behind an injectable client.

`client` arguments take anything with the KaggleApi methods used here, so tests run offline.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import zipfile
from pathlib import Path

from pipeline.core import layout
from pipeline.core.errors import PipelineError, UsageError
from pipeline.data import tables as data_lib

log = logging.getLogger(__name__)
COMPETITION_FILES = {"train": "train_file", "test": "test_file", "sample_submission": "sample_submission_file"}


class KaggleUnavailable(PipelineError, RuntimeError):
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
        raise UsageError(f"kaggle.model = {handle!r}; expected 'owner/model/framework/variation/version' "
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


class KaggleApiError(PipelineError, RuntimeError):
    """The Kaggle API answered, but with a failure (kaggle 2.x reports many failures in the returned object)."""


def _field(result, *names):
    for n in names:
        value = getattr(result, n, None)
        if value:
            return value
    return None


def check_result(result, what: str):
    """Raise KaggleApiError when an API result object carries an error, a bad status or invalid sources."""
    if result is None:
        raise KaggleApiError(f"{what}: the Kaggle API returned nothing")
    error = _field(result, "error")
    status = _field(result, "status")
    if error or (isinstance(status, str) and status.lower() not in ("ok", "ready", "")):
        raise KaggleApiError(f"{what} failed: {error or status}")
    for snake, camel in (("invalid_dataset_sources", "invalidDatasetSources"),
                         ("invalid_competition_sources", "invalidCompetitionSources"),
                         ("invalid_kernel_sources", "invalidKernelSources"),
                         ("invalid_model_sources", "invalidModelSources")):
        bad = _field(result, snake, camel)
        if bad:
            raise KaggleApiError(f"{what} failed: Kaggle does not accept these sources: {list(bad)} ({snake})")
    return result


def upload_dataset(folder: Path, client=None, notes: str = "update") -> str:
    """Create the dataset described by folder/dataset-metadata.json, or add a version if it exists."""
    client = client or get_client()
    try:
        check_result(client.dataset_create_version(str(folder), version_notes=notes, dir_mode="zip", quiet=False),
                     f"new version of the dataset in {folder}")
        return "version"
    except KaggleApiError:
        raise
    except Exception as err:  # the API answers 404 for a dataset that does not exist yet
        if "404" not in str(err) and "not found" not in str(err).lower():
            raise
    check_result(client.dataset_create_new(str(folder), public=False, dir_mode="zip", quiet=False),
                 f"creating the dataset in {folder}")
    return "created"


def wait_dataset_ready(handle: str, client=None, timeout: float = 900, poll: float = 15) -> str:
    """Poll dataset_status until 'ready' (a kernel pushed before that sees no files); bounded by timeout."""
    client = client or get_client()
    sleep = time.sleep
    waited = 0.0
    while True:
        status = str(client.dataset_status(handle) or "").lower()
        if status == "ready":
            return status
        if status in ("error", "failed"):
            raise KaggleApiError(f"dataset {handle} failed to process on Kaggle (status {status!r}); "
                                 "open it on kaggle.com to see why, then upload again")
        if waited >= timeout:
            raise KaggleApiError(f"dataset {handle} still {status!r} after {timeout:.0f}s; "
                                 "push the kernel later with `python run.py kernel --push`")
        log.info("dataset %s: %s, waiting (%.0fs of at most %.0fs)", handle, status or "unknown", waited, timeout)
        sleep(poll)
        waited += poll


def push_kernel(folder: Path, client=None) -> dict:
    """Push folder (kernel-metadata.json + notebook); returns the new version number and URL."""
    client = client or get_client()
    res = check_result(client.kernels_push(str(folder)), f"pushing the kernel in {folder}")
    return {"version": _field(res, "version_number", "versionNumber"), "url": _field(res, "url")}


def submit_kernel(competition: str, kernel: str, version: int, message: str, client=None,
                  file_name: str = layout.SUBMISSION_NAME) -> str:
    """Submit a kernel version's output file to a code competition."""
    client = client or get_client()
    res = client.competition_submit_code(file_name, message, competition, kernel=kernel, kernel_version=version,
                                         quiet=True)
    if res is None:
        raise KaggleApiError(f"submitting {kernel} version {version}: the Kaggle API returned nothing")
    ref, text = _field(res, "ref"), _field(res, "message", "error")
    if not ref and text:
        raise KaggleApiError(f"submitting {kernel} version {version} to {competition} failed: {text}")
    return text or f"submitted (ref {ref})"


def kernel_status(handle: str, client=None) -> tuple[str, str]:
    """(status, failure message) of a kernel's latest version: queued, running, complete, error, cancel_..."""
    client = client or get_client()
    res = client.kernels_status(handle)
    status = getattr(res, "status", res)
    name = str(getattr(status, "name", status)).split(".")[-1].lower()  # KernelWorkerStatus.COMPLETE -> complete
    return name, str(_field(res, "failure_message", "failureMessage") or "")


def wait_kernel(handle: str, client=None, timeout: float = 0, poll: float = 60) -> str:
    """Poll a kernel until it has run ('complete'), bounded by timeout (0: look once); a failed or cancelled
    kernel, or one still running at the deadline, is an error that says what to do."""
    client = client or get_client()
    waited, start = 0.0, time.monotonic()
    while True:
        status, failure = kernel_status(handle, client)
        if status == "complete":
            return status
        if status == "error" or status.startswith("cancel"):
            raise KaggleApiError(f"kernel {handle} ended with status {status!r}{': ' + failure if failure else ''}; "
                                 "open its log on kaggle.com, fix, and push it again")
        if waited >= timeout:
            raise KaggleApiError(f"kernel {handle} is {status!r}" + (f" after {timeout:.0f}s" if timeout else "") +
                                 "; collect it when it has run (--wait SECONDS waits for it)")
        log.info("kernel %s: %s (%.0f min so far, waiting at most %.0f min)", handle, status,
                 (time.monotonic() - start) / 60, timeout / 60)
        time.sleep(min(poll, max(timeout - waited, 1)))
        waited += poll


def download_kernel_output(handle: str, dest: Path, client=None) -> list[Path]:
    """A kernel's output files (its working directory) under dest."""
    client = client or get_client()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        client.kernels_output(handle, path=str(dest), force=True, quiet=True)
    except Exception as err:  # network and API errors come in many types
        raise KaggleApiError(f"downloading the output of kernel {handle} failed ({type(err).__name__}: {err})") from None
    return sorted(p for p in dest.rglob("*") if p.is_file())
