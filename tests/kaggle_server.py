"""The real kaggle client (kaggle 2.x / kagglesdk) talking to an in-memory Kaggle instead of the network.

Import only where the kaggle client is installed (kaggle_fakes.HAS_CLIENT).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import sys
import tempfile
import weakref
import zipfile
from pathlib import Path
from unittest import mock

import requests
from kagglesdk.blobs.types import blob_api_service as blob_types
from kagglesdk.competitions.types import competition_api_service as competition_types
from kagglesdk.datasets.types import dataset_api_service as dataset_types
from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
from kagglesdk.kaggle_http_client import KaggleHttpClient
from kagglesdk.kernels.types import kernels_api_service as kernel_types
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

from kaggle_fakes import read_only, run_notebook
from pipeline.kaggle import client as client_lib

# The client under test is the installed kaggle client's own KaggleApi; only its transport is replaced:
# KaggleHttpClient.call hands the real request object (serialised as the client would) to KaggleServer, and
# the answer goes back through the client's own _prepare_response, so successes are parsed into kagglesdk's
# response classes and failures raise exactly what kagglesdk raises (requests.HTTPError carrying Kaggle's
# message, the status on err.response). File transfers (dataset uploads, output downloads) are the only
# parts served above the transport; their failures are made the same way.

KaggleApi = client_lib.api_class()
# The machine shapes Kaggle's kernel push takes (others: 400).
MACHINE_SHAPES = ("NvidiaTeslaP100", "NvidiaTeslaT4", "NvidiaTeslaT4Highmem", "NvidiaL4", "NvidiaL4X1", "Tpu1VmV38")
EXTENDED = sys.modules[KaggleApi.__module__]


class Refusal(Exception):
    """An answer >= 400 from Kaggle: {"code": code, "message": message}, as its API sends them."""

    def __init__(self, code: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}


def _response(code: int, body: str, url: str = "https://api.kaggle.com/v1/fake") -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp.url, resp._content = code, url, body.encode()
    resp.headers["Content-Type"] = "application/json"
    resp.reason = "OK" if code < 400 else "Refused"
    return resp


def http_error(code: int, message: str) -> requests.HTTPError:
    """The exception kagglesdk raises for this answer, made by kagglesdk itself."""
    try:
        KaggleHttpClient()._prepare_response(None, _response(code, json.dumps({"code": code, "message": message})))
    except requests.HTTPError as err:
        return err
    raise AssertionError("kagglesdk accepted a refusal")


def bound_args(name: str, args, kwargs) -> dict:
    """The call's arguments bound to the installed client's signature (a renamed argument fails here as it
    would against the real client), defaults applied."""
    bound = inspect.signature(getattr(KaggleApi, name)).bind(None, *args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


@dataclasses.dataclass
class Dataset:
    folder: Path | None
    title: str
    version: int = 1
    # GetDatasetStatus's next answers: a status, or (status, the version number Kaggle shows with it)
    statuses: list = dataclasses.field(default_factory=lambda: ["ready"])
    hidden: int = 0  # polls answered 404 before a brand-new dataset shows
    shown: int | None = None  # the version number the last status answer showed


@dataclasses.dataclass
class Kernel:
    version: int = 1
    statuses: list = dataclasses.field(default_factory=lambda: ["complete"])  # name or (name, failure message)
    output: Path | None = None
    pushed: Path | None = None  # the pushed notebook's folder (notebook + the sources it named)


OWN_FOLDERS: list[Path] = []  # folders servers made for themselves; a suite left hundreds in /tmp


class KaggleServer:
    """Datasets, kernels and submissions of one user, answering with kagglesdk's response classes.

    Scripting: `processing` is what a new dataset version answers while Kaggle processes it; `run_statuses`
    what a pushed kernel answers; `extracts` whether folders uploaded as zips show as folders (False keeps the
    client's archives, to test a bundle that does not rely on it); `push_error`, `rules_accepted` and
    `submissions_left` refuse pushes and submissions as Kaggle does."""

    def __init__(self, tmp: Path | None = None, user: str = "someone", processing=("ready",),
                 run_statuses=("complete",), extracts: bool = True, rules_accepted: bool = True,
                 submissions_left: int = 5, push_error: str = ""):
        self.tmp = Path(tmp) if tmp else Path(tempfile.mkdtemp(prefix="kaggle-server-"))
        if not tmp:  # a folder of its own: gone with the server, or at the end of the session (conftest)
            OWN_FOLDERS.append(self.tmp)
            weakref.finalize(self, shutil.rmtree, self.tmp, True)
        self.user, self.processing, self.run_statuses = user, list(processing), list(run_statuses)
        self.extracts, self.rules_accepted, self.submissions_left = extracts, rules_accepted, submissions_left
        self.push_error = push_error
        self.datasets: dict[str, Dataset] = {}
        self.kernels: dict[str, Kernel] = {}
        self.calls: list[tuple] = []
        self.blobs: dict[str, Path] = {}  # output files served for download
        self.blobs_uploaded: dict[str, dict] = {}  # token -> name, declared length, bytes received
        self.rate_limited = 0  # StartBlobUpload calls to answer 429 first
        self.failing: set[str] = set()  # output file names whose download answers 500
        self.page_size = 0  # ListKernelSessionOutput: files per page (0: one page)

    # -- scripting ------------------------------------------------------------------------------------------
    def add_dataset(self, handle: str, folder: Path | None = None, **kw) -> Dataset:
        self.datasets[handle] = Dataset(Path(folder) if folder else None, kw.pop("title", handle.split("/")[1]), **kw)
        return self.datasets[handle]

    def add_kernel(self, handle: str, output: Path | None = None, **kw) -> Kernel:
        self.kernels[handle] = Kernel(output=Path(output) if output else None, **kw)
        return self.kernels[handle]

    # -- the API --------------------------------------------------------------------------------------------
    def answer(self, name: str, request):
        return getattr(self, name)(request)

    @staticmethod
    def _next(queue: list):
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def _dataset(self, owner: str, slug: str) -> Dataset:
        d = self.datasets.get(f"{owner}/{slug}")
        if d is None or d.hidden > 0:
            if d is not None:
                d.hidden -= 1
            raise Refusal(404, "Failed to resolve the necessary information to perform the requested action.")
        return d

    def GetDatasetStatus(self, r):
        self.calls.append(("status", f"{r.owner_slug}/{r.dataset_slug}"))
        d = self._dataset(r.owner_slug, r.dataset_slug)
        entry = self._next(d.statuses)
        name, d.shown = entry if isinstance(entry, tuple) else (entry, None)
        out = dataset_types.ApiGetDatasetStatusResponse()
        out.status = DatabundleVersionStatus[name.upper()]
        return out

    def GetDataset(self, r):
        d = self._dataset(r.owner_slug, r.dataset_slug)
        out = dataset_types.ApiDataset()
        out.current_version_number = d.shown or d.version
        return out

    # -- uploads: the client's own blob upload (StartBlobUpload, then a PUT of the bytes), then the create call --
    def StartBlobUpload(self, r):
        self.calls.append(("blob", r.name))
        if self.rate_limited > 0:  # Kaggle's 429, with the Retry-After the client honours
            self.rate_limited -= 1
            raise Refusal(429, "Too many requests", headers={"Retry-After": "0"})
        token = f"blob-{len(self.blobs_uploaded)}"
        self.blobs_uploaded[token] = {"name": r.name, "length": r.content_length, "data": None}
        out = blob_types.ApiStartBlobUploadResponse()
        out.token, out.create_url = token, f"https://www.kaggle.com/api/upload/{token}"
        return out

    def put_blob(self, url: str, data=None) -> requests.Response:
        """requests.Session.put of an upload URL: the bytes arrive (a resume probe sends none)."""
        blob = self.blobs_uploaded.get(url.rsplit("/", 1)[-1])
        if blob is None:
            return _response(404, "{}", url)
        if data is not None:
            blob["data"] = data.read()
        return _response(200 if blob["data"] is not None else 308, "{}", url)

    def CreateDataset(self, r):
        return self._create(f"{r.owner_slug}/{r.slug}", r.title, r.files, new=True)

    def CreateDatasetVersion(self, r):
        return self._create(f"{r.owner_slug}/{r.dataset_slug}", None, r.body.files, new=False)

    def _create(self, handle: str, title, new_files, new: bool):
        """What Kaggle keeps of a create or version call: the files whose blobs arrived whole (a folder sent as
        the client's zip shows as a folder, unless `extracts` is off)."""
        self.calls.append(("create" if new else "version", handle))
        owner = handle.split("/")[0]
        out = dataset_types.ApiCreateDatasetResponse()
        if owner != self.user or (not new and handle not in self.datasets):
            raise Refusal(403, f"Permission 'datasets.{'create' if new else 'update'}' was denied")
        if new and handle in self.datasets:
            out.error = "The requested slug is already in use by a dataset. Please choose another slug."
            return out
        if new and any(d.title == title for h, d in self.datasets.items() if h != handle and h.startswith(owner + "/")):
            out.error = "The requested title is already in use by a dataset. Please choose another title."
            return out
        dest = self.tmp / "datasets" / handle.replace("/", "__") / f"v{len(self.calls)}"
        dest.mkdir(parents=True)
        for f in new_files:
            blob = self.blobs_uploaded.get(f.token)
            if blob is None or blob["data"] is None or len(blob["data"]) != blob["length"]:
                raise Refusal(400, f"Blob upload with token {f.token!r} is incomplete")
            (dest / blob["name"]).write_bytes(blob["data"])
            if self.extracts and blob["name"].endswith(".zip"):
                with zipfile.ZipFile(dest / blob["name"]) as z:
                    z.extractall(dest / blob["name"][:-len(".zip")])
                (dest / blob["name"]).unlink()
        if new:
            self.add_dataset(handle, dest, title=title, version=1, statuses=list(self.processing))
        else:
            d = self.datasets[handle]
            d.folder, d.version, d.statuses = dest, d.version + 1, list(self.processing)
        out.status, out.url, out.ref = "ok", f"https://www.kaggle.com/datasets/{handle}", handle
        return out

    def SaveKernel(self, r):
        handle = r.slug
        self.calls.append(("push", handle))
        if handle.split("/")[0] != self.user:
            raise Refusal(403, "Permission 'kernels.update' was denied")
        out = kernel_types.ApiSaveKernelResponse()
        if r.machine_shape and r.machine_shape not in MACHINE_SHAPES:
            raise Refusal(400, f"Invalid machine shape '{r.machine_shape}'")
        missing = [s for s in r.dataset_data_sources if s not in self.datasets]
        if missing or self.push_error:
            out.invalid_dataset_sources, out.error = missing, self.push_error
            return out
        if not self.rules_accepted:  # a competition whose rules the user has not accepted is not a usable source
            out.invalid_competition_sources = list(r.competition_data_sources)
            return out
        k = self.kernels.get(handle)
        k = self.add_kernel(handle, version=k.version + 1) if k else self.add_kernel(handle, version=1)
        k.statuses = list(self.run_statuses)
        k.pushed = self.tmp / "pushed" / handle.replace("/", "__") / f"v{k.version}"
        k.pushed.mkdir(parents=True)
        (k.pushed / "notebook.ipynb").write_text(r.text)
        (k.pushed / "sources.json").write_text(json.dumps({
            "datasets": list(r.dataset_data_sources), "competitions": list(r.competition_data_sources),
            "models": list(r.model_data_sources), "machine_shape": r.machine_shape}))
        out.ref, out.url, out.version_number = f"/code/{handle}", f"https://www.kaggle.com/code/{handle}", k.version
        return out

    def _kernel(self, user: str, slug: str) -> tuple[str, Kernel]:
        handle = f"{user}/{slug}"
        if handle not in self.kernels:
            raise Refusal(403, "Permission 'kernels.get' was denied")
        return handle, self.kernels[handle]

    def GetKernel(self, r):
        """What kernels_pull asks: the kernel (slug, or slug/version) and its metadata."""
        slug, _, version = r.kernel_slug.partition("/")
        handle, k = self._kernel(r.user_name, slug)
        self.calls.append(("get kernel", handle))
        if version and int(version) > k.version:
            raise Refusal(404, "Kernel version not found")
        meta = kernel_types.ApiKernelMetadata()
        meta.ref, meta.slug, meta.title, meta.current_version_number = handle, slug, slug, k.version
        out = kernel_types.ApiGetKernelResponse()
        out.metadata = meta
        return out

    def GetKernelSessionStatus(self, r):
        handle, k = self._kernel(r.user_name, r.kernel_slug)
        self.calls.append(("kernel status", handle))
        entry = self._next(k.statuses)
        name, failure = entry if isinstance(entry, tuple) else (entry, "")
        out = kernel_types.ApiGetKernelSessionStatusResponse()
        out.status, out.failure_message = KernelWorkerStatus[name.upper()], failure
        return out

    def ListKernels(self, r):
        self.calls.append(("list", r.user))
        out = kernel_types.ApiListKernelsResponse()
        found = []
        for handle, k in self.kernels.items():
            if handle.split("/")[0] == r.user and r.search in handle.split("/")[1]:
                meta = kernel_types.ApiKernelMetadata()
                meta.ref, meta.title, meta.current_version_number = handle, handle.split("/")[1], k.version
                found.append(meta)
        out.kernels = found
        return out

    def run(self, handle: str, k: Kernel) -> Path:
        """The kernel's working directory after its run (KernelOutput: prepared by the test)."""
        return k.output

    def ListKernelSessionOutput(self, r):
        handle, k = self._kernel(r.user_name, r.kernel_slug)
        self.calls.append(("output", handle))
        work = self.run(handle, k)
        out = kernel_types.ApiListKernelSessionOutputResponse()
        items = []
        for f in sorted(p for p in Path(work).rglob("*") if p.is_file()):
            item = kernel_types.ApiKernelSessionOutputFile()
            item.file_name, item.url = str(f.relative_to(work)), f"https://www.kaggleusercontent.com/blob/{len(self.blobs)}"
            self.blobs[item.url] = f
            items.append(item)
        if self.page_size and len(items) > self.page_size:
            items, out.next_page_token = items[:self.page_size], "page-2"
        out.files, out.log = items, f"[log of {handle} version {k.version}]"
        return out

    def fetch(self, url: str, stream: bool = False, **kw) -> requests.Response:
        """requests.get of an output file's URL (`failing`: names answered 500, as a storage hiccup would)."""
        if any(url == u and f.name in self.failing for u, f in self.blobs.items()):
            return _response(500, '{"error": "backend error"}', url)
        resp = _response(200, "", url)
        resp._content = self.blobs[url].read_bytes()
        return resp

    def CreateCodeSubmission(self, r):
        handle = f"{r.kernel_owner}/{r.kernel_slug}"
        self.calls.append(("submit", r.competition_name, handle, r.kernel_version, r.file_name))
        if not self.rules_accepted:
            raise Refusal(403, "You must accept this competition's rules before you'll be able to submit.")
        if self.submissions_left <= 0:
            raise Refusal(400, "Submission not allowed: Your team has used its daily Submission allowance (5) today, "
                               "please try again tomorrow UTC.")
        _, k = self._kernel(r.kernel_owner, r.kernel_slug)
        status = k.statuses[0] if isinstance(k.statuses[0], str) else k.statuses[0][0]
        if r.kernel_version == k.version and status != "complete":
            raise Refusal(400, f"Submission not allowed: version {r.kernel_version} of the notebook has not "
                               "completed successfully")
        if r.kernel_version == k.version and k.output is not None and not (Path(k.output) / r.file_name).is_file():
            raise Refusal(400, f"Submission not allowed: {r.file_name} was not found in the notebook's output")
        self.submissions_left -= 1
        out = competition_types.ApiCreateCodeSubmissionResponse()
        out.message, out.ref = "Your submission was successfully saved", 7
        return out


class _Serving:
    """The client object build_kaggle_client returns, which while open also serves the file URLs its answers
    name (requests.get: output files), as Kaggle's storage does."""

    def __init__(self, kaggle, serving):
        self._kaggle, self._serving = kaggle, serving

    def __enter__(self):
        self._serving.start()
        return self._kaggle.__enter__()

    def __exit__(self, *exc):
        self._serving.stop()
        return self._kaggle.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._kaggle, name)


class FakeApi(KaggleApi):
    """The installed kaggle client's KaggleApi, logged in as server.user, talking to `server` instead of Kaggle."""

    def __init__(self, server: KaggleServer | None = None, **script):
        super().__init__()
        self.server = server or KaggleServer(**script)
        self.config_values = {self.CONFIG_NAME_USER: self.server.user}

    @property
    def calls(self) -> list[tuple]:
        return self.server.calls

    def build_kaggle_client(self):
        kaggle = super().build_kaggle_client()
        http, server = kaggle._http_client, self.server

        def call(service_name, request_name, request, response_type):
            http._init_session()
            http._prepare_request(service_name, request_name, request)  # serialised as it would be sent
            try:
                obj = server.answer(request_name, request)
                resp = _response(200, type(obj).to_json(obj))
            except Refusal as r:
                resp = _response(r.code, json.dumps({"code": r.code, "message": r.message}))
                resp.headers.update(r.headers)
            return http._prepare_response(response_type, resp)

        http.call = call
        return _Serving(kaggle, mock.patch.object(requests, "get", server.fetch))

    def _uploading(self):
        """The blob PUTs the client sends with its own requests.Session go to the server (the rest of an upload
        already runs through the faked transport)."""
        server = self.server
        return mock.patch.object(requests.Session, "put", lambda session, url, data=None, **kw: server.put_blob(url, data))

    def dataset_create_new(self, *args, **kwargs):
        with self._uploading():
            return super().dataset_create_new(*args, **kwargs)

    def dataset_create_version(self, *args, **kwargs):
        with self._uploading():
            return super().dataset_create_version(*args, **kwargs)

    def kernels_output(self, *args, **kwargs):
        bound_args("kernels_output", args, kwargs)
        with mock.patch.object(EXTENDED.requests, "get", self.server.fetch):
            return super().kernels_output(*args, **kwargs)


class KernelOutput(KaggleServer):
    """Kaggle with one finished kernel per handle given, whose output is a folder prepared by the test."""

    def __init__(self, output: Path, handles=(), statuses=("complete",), version: int = 1, **kw):
        super().__init__(**kw)
        for h in handles:
            self.add_kernel(h, output=output, statuses=list(statuses), version=version)


class KernelCloud(KaggleServer):
    """Kaggle as far as training kernels need it, on this machine. A pushed kernel runs when its output is asked
    for: its notebook (as the client sent it) is executed, network blocked, against a fake read-only
    /kaggle/input built from the sources it named; its working directory is the output."""

    def __init__(self, tmp: Path, competition: Path, datasets: dict | None = None, python: str | None = None,
                 run_statuses=("queued", "running", "complete"), **kw):
        super().__init__(tmp, run_statuses=run_statuses, **kw)
        self.competition, self.python, self.runs = Path(competition), python or sys.executable, []
        for handle, folder in (datasets or {}).items():
            self.add_dataset(handle, folder)

    def run(self, handle: str, k: Kernel) -> Path:
        sources = json.loads((k.pushed / "sources.json").read_text())
        where = self.tmp / "sessions" / handle.replace("/", "__") / f"v{k.version}"
        shutil.rmtree(where, ignore_errors=True)
        root, work = where / "input", where / "working"
        work.mkdir(parents=True)
        shutil.copytree(self.competition, root / "competitions" / sources["competitions"][0])
        for source in sources["datasets"]:
            owner, slug = source.split("/")
            shutil.copytree(self.datasets[source].folder, root / "datasets" / owner / slug)
        for source in sources["models"]:
            shutil.copytree(self.datasets[source].folder, root / "models" / source)
        read_only(root)
        self.runs.append(run_notebook(self.python, root, work, where, notebook=k.pushed / "notebook.ipynb"))
        return work
