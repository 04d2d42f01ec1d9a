"""The only code that touches the network: every call the pipeline makes to the Kaggle API, each checked.

`client` arguments take a KaggleApi (tests pass one whose network is a local fake server). Every call runs
inside client.answering, so a refusal is a pipeline error with Kaggle's message and the next step; and
nothing is uploaded, pushed or submitted before the step it depends on has been confirmed.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from pipeline.core import archives, files, layout
from pipeline.core.errors import PipelineError, UsageError
from pipeline.data import tables as data_lib
from pipeline.kaggle.client import KaggleApiError, KaggleUnavailable, answering, get_client  # noqa: F401

log = logging.getLogger(__name__)
COMPETITION_FILES = {"train": "train_file", "test": "test_file", "sample_submission": "sample_submission_file"}


def rules_step(competition: str) -> str:
    return (f"permission denied: accept the competition's rules at https://www.kaggle.com/c/{competition}/rules "
            "with the account you log in with (and check that every handle is yours)")


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


def _unpack_all(folder: Path):
    """Every archive the client left in folder, unpacked by the checked extractor (core.archives) and removed;
    then nothing but plain files may be there."""
    for a in sorted(folder.iterdir()):
        if a.is_file() and not a.is_symlink() and a.name.endswith((".zip", ".tar", ".tar.gz", ".tgz")):
            archives.extract(a, folder)
            a.unlink()
    archives.check_tree(folder)


def _fresh_staging(target: Path) -> Path:
    staging = layout.staging(target)
    files.remove_tree(staging)
    staging.mkdir(parents=True)
    return staging


def download_competition(cfg, client=None, force: bool = False) -> list[Path]:
    target = cfg.path(cfg.data.dir)
    paths = [cfg.data_file(key) for key in COMPETITION_FILES.values()]
    if not force and competition_files_valid(cfg):
        return paths
    with files.exclusive(layout.lock_of(target), f"{target} is being downloaded by {{holder}}; wait for it"):
        return _download_competition(cfg, target, paths, client)


def _download_competition(cfg, target: Path, paths: list[Path], client) -> list[Path]:
    staging = _fresh_staging(target)
    try:
        client = client or get_client()
        with answering("downloading the competition files", {403: rules_step(cfg.kaggle.competition)}):
            client.competition_download_files(cfg.kaggle.competition, path=str(staging), quiet=False)
        _unpack_all(staging)
    except PipelineError as err:
        files.remove_tree(staging)
        raise KaggleUnavailable(f"{err}. {_manual_help(cfg)}") from None
    target.mkdir(parents=True, exist_ok=True)
    for f in staging.iterdir():
        files.refuse_link(target / f.name)
        os.replace(f, target / f.name)
    staging.rmdir()
    if not competition_files_valid(cfg):
        raise KaggleUnavailable(f"downloaded files in {target} are incomplete or invalid. {_manual_help(cfg)}")
    return paths


MODEL_SOURCE = "kaggle-source.json"  # in a downloaded model's folder: the handle it came from


def model_folder(cfg) -> Path:
    """Where kaggle.model goes: kaggle.model_name, else a name made of the whole handle (two models at the same
    version number never share a folder)."""
    parts = cfg.kaggle.model.strip("/").split("/")
    if len(parts) not in (2, 5):
        raise UsageError(f"kaggle.model = {cfg.kaggle.model!r}; expected 'owner/model/framework/variation/version' "
                         "(Kaggle Models, e.g. keras/bert/keras/bert_base_en_uncased/2) or 'owner/dataset'")
    name = cfg.kaggle.model_name or "__".join(layout.plain(p, "kaggle.model part") for p in parts)
    return cfg.path(cfg.kaggle.models_dir) / layout.plain(name, "kaggle.model_name")


def download_model(cfg, client=None, force: bool = False) -> list[Path]:
    """kaggle.model: 'owner/model/framework/variation/version' (Kaggle Models) or 'owner/dataset'. The client
    only downloads; the archive is unpacked here, checked member by member; the folder records its handle, and a
    folder holding another handle's model is refused rather than reused."""
    handle, target = cfg.kaggle.model.strip("/"), model_folder(cfg)
    source = target / MODEL_SOURCE
    held = files.read_json(source).get("handle") if source.is_file() else None
    if (target / "config.json").is_file() and not force:
        if held not in (None, handle):
            raise UsageError(f"{target} holds the model {held!r}, not {handle!r}: set kaggle.model_name to another "
                             "folder name, or --force to download it there again")
        return [target]
    if os.path.lexists(target) and held is None and (target.is_symlink() or not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} holds a model folder `download` did not make (no {MODEL_SOURCE}); it is never "
                         "replaced: set kaggle.model_name to another folder name")
    with files.exclusive(layout.lock_of(target), f"{target} is being downloaded by {{holder}}; wait for it"):
        return _download_model(handle, target, cfg, client)


def _download_model(handle: str, target: Path, cfg, client) -> list[Path]:
    staging = _fresh_staging(target)
    try:
        client = client or get_client()
        with answering(f"downloading the model {handle!r}"):
            if handle.count("/") == 4:
                client.model_instance_version_download(handle, path=str(staging), untar=False, quiet=False)
            else:
                client.dataset_download_files(handle, path=str(staging), unzip=False, quiet=False)
        _unpack_all(staging)
        found = sorted((p.parent for p in staging.rglob("config.json")), key=lambda p: (len(p.parts), str(p)))
        if not found:
            raise KaggleUnavailable(f"{handle!r} holds no config.json; not a model directory")
        files.write_json(found[0] / MODEL_SOURCE, {"handle": handle})
        files.swap(found[0], target)
    except PipelineError as err:
        raise KaggleUnavailable(f"{err}. {_manual_help(cfg)}") from None
    finally:
        files.remove_tree(staging)
    return [target]


def _field(result, *names):
    for n in names:
        value = getattr(result, n, None)
        if value:
            return value
    return None


def check_result(result, what: str):
    """Raise KaggleApiError when an API result object carries an error, a bad status or invalid sources (kaggle
    2.x reports these in fields of the answer, not as exceptions)."""
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
            step = (f"; if you have not yet: {rules_step(list(bad)[0])}" if snake == "invalid_competition_sources"
                    else "")
            raise KaggleApiError(f"{what} failed: Kaggle does not accept these sources: {list(bad)} ({snake}){step}")
    return result


# Dataset processing states (kagglesdk DatabundleVersionStatus, lower-cased as dataset_status answers them).
DATASET_FINAL_FAILURES = ("failed", "deleted")


def dataset_state(handle: str, client) -> dict | None:
    """{"status": ..., "current_version_number": n} of a dataset, or None when Kaggle answers 404 (no such
    dataset, or one too new to be visible yet)."""
    try:
        with answering(f"looking up dataset {handle}"):
            return json.loads(client.dataset_status(handle, format="json"))
    except KaggleApiError as err:
        if err.status == 404:
            return None
        raise


def upload_dataset(folder: Path, client=None, notes: str = "update") -> tuple[str, int]:
    """Create the dataset described by folder/dataset-metadata.json, or add a version when Kaggle says it exists
    (asked before anything is uploaded). Returns ("created" | "version", the version number to wait for)."""
    client = client or get_client()
    handle = files.read_json(layout.Bundle(folder).metadata)["id"]
    state = dataset_state(handle, client)
    if state is None:
        with answering(f"creating the dataset {handle} from {folder}"):
            result = client.dataset_create_new(str(folder), public=False, dir_mode="zip", quiet=False)
        if "already in use" in str(_field(result, "error") or ""):
            # The client asks for the dataset itself before creating it and answers "the requested title is already
            # in use" when it is there: our first look missed it (Kaggle shows a new dataset late). Ours: add a version.
            state = dataset_state(handle, client)
        if state is None:
            check_result(result, f"creating the dataset {handle} from {folder}")
            return "created", 1
    with answering(f"adding a version to the dataset {handle}", {403: f"Kaggle shows {handle}, but you may not add "
                   "versions to it: choose a slug under your own user name (kaggle.dataset)"}):
        result = client.dataset_create_version(str(folder), version_notes=notes, dir_mode="zip", quiet=False)
    check_result(result, f"adding a version to the dataset {handle}")
    return "version", int(state.get("current_version_number") or 0) + 1


def wait_dataset_ready(handle: str, client=None, timeout: float = 900, poll: float = 15, version: int = 0) -> str:
    """Poll until the dataset (at least version `version`) is ready: a kernel pushed before that sees no files or
    an older version. A brand-new dataset answers 404 for a while: that is waited out; failed and deleted are
    final. Bounded by timeout."""
    client = client or get_client()
    waited = 0.0
    while True:
        state = dataset_state(handle, client)
        status = (state or {}).get("status", "not visible yet")
        current = int((state or {}).get("current_version_number") or 0)
        if status == "ready" and current >= version:
            return status
        if status in DATASET_FINAL_FAILURES:
            raise KaggleApiError(f"dataset {handle} is {status!r} on Kaggle; open it on kaggle.com to see why, then "
                                 "upload it again (`python run.py package --upload`)")
        if waited >= timeout:
            raise KaggleApiError(f"dataset {handle} still {status!r} (version {current}, waiting for {version or 'any'}) "
                                 f"after {timeout:.0f}s; check the handle, and push the kernel later with "
                                 "`python run.py kernel --push`")
        log.info("dataset %s: %s (version %s, waiting for %s), %.0fs of at most %.0fs", handle, status, current,
                 version or "any", waited, timeout)
        time.sleep(poll)
        waited += poll


def push_kernel(folder: Path, client=None) -> dict:
    """Push folder (kernel-metadata.json + notebook); returns the new version number and URL."""
    client = client or get_client()
    with answering(f"pushing the kernel in {folder}"):
        res = client.kernels_push(str(folder))
    check_result(res, f"pushing the kernel in {folder}")
    return {"version": _field(res, "version_number", "versionNumber"), "url": _field(res, "url")}


def kernel_version(handle: str, client) -> int:
    """The kernel's latest version number, by the exact lookup the client's kernels_pull makes (GetKernel:
    metadata.current_version_number), never a title search that may lag or match another kernel. A kernel Kaggle
    does not show is an error naming the handle."""
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    owner, slug = handle.split("/")
    request = ApiGetKernelRequest()
    request.user_name, request.kernel_slug = owner, slug
    with answering(f"looking up kernel {handle}", {404: "not found: check the handle (owner/slug)"}), \
            client.build_kaggle_client() as kaggle:
        found = kaggle.kernels.kernels_api_client.get_kernel(request)
    version = getattr(getattr(found, "metadata", None), "current_version_number", None)
    if not version:
        raise KaggleApiError(f"kernel {handle}: Kaggle shows no version of it (pushed but never saved?); push it "
                             "again (`python run.py kernel --push`)")
    return int(version)


def submit_kernel(competition: str, kernel: str, version: int, message: str, client=None,
                  file_name: str = layout.SUBMISSION_NAME) -> str:
    """Submit a kernel version's output file to a code competition, once that version is known to have run."""
    client = client or get_client()
    latest = kernel_version(kernel, client)
    if version > latest:
        raise KaggleApiError(f"{kernel} has no version {version} (its latest is {latest})")
    if version < latest:
        raise KaggleApiError(f"{kernel} version {version} is not its latest ({latest}): Kaggle's API reports the run "
                             f"status and output of the latest version only, so whether version {version} ran and "
                             f"wrote {file_name} cannot be checked from here. Submit it from the kernel's page "
                             f"(kaggle.com/code/{kernel}, version {version}, Output > Submit), or submit version "
                             f"{latest}")
    status, failure = kernel_status(kernel, client)
    if status != "complete":
        raise KaggleApiError(f"{kernel} version {version} is {status!r}{': ' + failure if failure else ''}; "
                             f"submit it when it has finished (run `python run.py submit --version {version}` again)")
    what = f"submitting {kernel} version {version} to {competition}"
    with answering(what, {403: rules_step(competition), 429: DAILY_LIMIT, 400: lambda message: DAILY_LIMIT if
                          "allowance" in message.lower() or "daily" in message.lower() else
                          f"Kaggle refused the submission as sent: check that version {version} wrote {file_name} "
                          "to its working directory"}):
        res = client.competition_submit_code(file_name, message, competition, kernel=kernel, kernel_version=version,
                                             quiet=True)
    if res is None:
        raise KaggleApiError(f"{what}: the Kaggle API returned nothing")
    ref, text = _field(res, "ref"), _field(res, "message", "error")
    if not ref and text:
        raise KaggleApiError(f"{what} failed: {text}")
    return text or f"submitted (ref {ref})"


def kernel_status(handle: str, client=None) -> tuple[str, str]:
    """(status, failure message) of a kernel's latest version: queued, running, complete, error, cancel_..."""
    client = client or get_client()
    with answering(f"asking the status of kernel {handle}", "check the handle (owner/slug) and that it is yours"):
        res = client.kernels_status(handle)
    status = getattr(res, "status", res)
    name = str(getattr(status, "name", status)).split(".")[-1].lower()  # KernelWorkerStatus.COMPLETE -> complete
    return name, str(_field(res, "failure_message", "failureMessage") or "")


DAILY_LIMIT = "the daily submission limit is reached: submit again after it resets (00:00 UTC)"
# A version's run has ended (cancel_requested has not: it still runs until acknowledged).
KERNEL_FINAL = ("complete", "error", "cancel_acknowledged")
# No run of the version will come (a new script saved without running): waiting would never end.
KERNEL_NO_RUN = ("new_script",)


def wait_kernel(handle: str, client=None, timeout: float = 0, poll: float = 60) -> tuple[str, str]:
    """Poll a kernel until its latest version has ended, bounded by timeout (0: look once); returns (status,
    failure message): complete, error or cancel_*. One still running at the deadline is an error that says what
    to do."""
    client = client or get_client()
    waited, start = 0.0, time.monotonic()
    while True:
        status, failure = kernel_status(handle, client)
        if status in KERNEL_FINAL:
            return status, failure
        if status in KERNEL_NO_RUN:
            raise KaggleApiError(f"kernel {handle}'s latest version has not run ({status!r}: saved without running); "
                                 "run it on kaggle.com or push it again (`python run.py kernel --push`)")
        if waited >= timeout:
            raise KaggleApiError(f"kernel {handle} is {status!r}" + (f" after {timeout:.0f}s" if timeout else "") +
                                 "; collect it when it has run (--wait SECONDS waits for it)")
        log.info("kernel %s: %s (%.0f min so far, waiting at most %.0f min)", handle, status,
                 (time.monotonic() - start) / 60, timeout / 60)
        time.sleep(min(poll, max(timeout - waited, 1)))
        waited += poll


def download_kernel_output(handle: str, dest: Path, client=None) -> list[Path]:
    """A kernel's output files (its working directory, and its log) into dest, a fresh folder of the pipeline's,
    under its lock. The listing is asked through the client's own request (the one kernels_output sends); every
    name is checked to stay inside dest before a byte is fetched, an answer cut into pages is refused with the
    count, and each file's download must answer 200 (kernels_output writes whatever comes back, an error page
    included). Files are written whole (temp file + rename), never through a link."""
    import requests
    from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

    client = client or get_client()
    owner, slug = handle.split("/")
    request = ApiListKernelSessionOutputRequest()
    request.user_name, request.kernel_slug = owner, slug
    what = f"downloading the output of kernel {handle}"
    with files.exclusive(layout.lock_of(dest), f"{dest} is being downloaded by {{holder}}; wait for it"), \
            answering(what), client.build_kaggle_client() as kaggle:
        response = kaggle.kernels.kernels_api_client.list_kernel_session_output(request)
        items = list(response.files or [])
        if response.next_page_token:
            raise KaggleApiError(f"kernel {handle}'s output is cut into pages ({len(items)} files on the first); "
                                 "the kaggle client reads the first page only. Write fewer files from the kernel")
        bad = [f"{i.file_name!r} ({why})" for i in items if (why := archives.name_problem(i.file_name))]
        if bad:
            raise archives.UnsafeArchive(f"kernel {handle}'s output names file(s) outside its folder: "
                                         f"{', '.join(bad[:3])}; nothing was downloaded")
        files.remove_tree(dest)
        dest.mkdir(parents=True)
        for item in items:
            got = requests.get(item.url, stream=True, timeout=600)
            got.raise_for_status()
            with files.atomic_path(dest / item.file_name) as tmp:
                tmp.write_bytes(got.content)
        if response.log:
            files.write_text(dest / f"{slug}.log", response.log)
    return sorted(p for p in dest.rglob("*") if p.is_file())
