"""Test doubles for the Kaggle side: minimal wheels, a fake KaggleApi with kaggle 2.x result objects,
a network guard for notebook kernels, and a fake /kaggle/input in either mount layout."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

# Loaded into a notebook kernel through PYTHONPATH: any connection off this machine fails.
SOCKET_GUARD = '''
import socket
_connect = socket.socket.connect
def _guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("::1", "localhost") or host.startswith("/")):
        raise OSError(f"network disabled for this kernel: {address}")
    return _connect(self, address)
socket.socket.connect = _guarded
'''


def make_wheel(folder: Path, name: str = "questdummy", version: str = "0.1", requires: tuple = (),
               tag: str = "py3-none-any") -> Path:
    """A minimal valid wheel declaring `requires` (Requires-Dist lines)."""
    path = Path(folder) / f"{name}-{version}-{tag}.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    entries = {f"{name}/__init__.py": f"VERSION = {version!r}\n", f"{name}-{version}.dist-info/METADATA": meta,
               f"{name}-{version}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"}
    record = []
    for n, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{n},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for n, text in entries.items():
            z.writestr(n, text)
        z.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


class FakeApi:
    """KaggleApi stand-in. Like kaggle 2.2.1, failures come back in fields of the result, not as exceptions."""

    def __init__(self, exists=False, error="", statuses=("ready",), invalid_sources=(), submit_ref=7):
        self.exists, self.error, self.statuses = exists, error, list(statuses)
        self.invalid_sources, self.submit_ref, self.calls = list(invalid_sources), submit_ref, []

    def dataset_create_version(self, folder, version_notes, dir_mode, quiet):
        self.calls.append(("version", folder))
        if not self.exists:
            raise RuntimeError("404 Client Error: Not Found")
        return SimpleNamespace(status="error" if self.error else "ok", error=self.error, url="u")

    def dataset_create_new(self, folder, public, dir_mode, quiet):
        self.calls.append(("create", folder))
        return SimpleNamespace(status="error" if self.error else "ok", error=self.error, url="u")

    def dataset_status(self, handle):
        self.calls.append(("status", handle))
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def kernels_push(self, folder):
        self.calls.append(("push", folder))
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
        assert (Path(folder) / meta["code_file"]).is_file()
        return SimpleNamespace(error=self.error, invalidDatasetSources=self.invalid_sources, versionNumber=3,
                               url="https://www.kaggle.com/code/someone/quest-inference")

    def competition_submit_code(self, file_name, message, competition, kernel=None, kernel_version=None, quiet=False):
        self.calls.append(("submit", competition, kernel, kernel_version, file_name))
        return SimpleNamespace(ref=self.submit_ref, message="" if self.submit_ref else "Kernel version has no output")


def mount(root: Path, bundle: Path, data: Path, layout: str, owner: str = "someone", slug: str = "my-quest-models"):
    """Lay out bundle + competition data under root as a Kaggle notebook sees them; returns (bundle, data) paths."""
    if layout == "current":
        b, d = root / "datasets" / owner / slug, root / "competitions" / "google-quest-challenge"
    else:
        b, d = root / slug, root / "google-quest-challenge"
    shutil.copytree(bundle, b)
    shutil.copytree(data, d)
    return b, d


def read_only(root: Path):
    """chmod a-w the tree (root ignores it, so tests also compare snapshot() before and after)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            p = Path(dirpath) / n
            p.chmod(p.stat().st_mode & ~0o222)
    root.chmod(root.stat().st_mode & ~0o222)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def run_notebook(python: str, root, work, tmp_path, extra_env=None, notebook: Path | None = None) -> str:
    """Execute a kernel notebook (default notebooks/kaggle_inference.ipynb) headless with `python` as the kernel,
    /kaggle/input at root, the working directory at work, the network blocked; returns the cells' text output."""
    import nbformat
    from nbclient import NotebookClient

    from pipeline.core import files, layout

    tmp_path = Path(tmp_path)
    guard, kernels = tmp_path / "guard", tmp_path / "jupyter" / "kernels" / "quest-test"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    kernels.mkdir(parents=True, exist_ok=True)
    files.write_json(kernels / "kernel.json", {"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                               "display_name": "quest-test", "language": "python"})
    env = {"QUEST_INPUT_ROOT": str(root), "QUEST_WORK": str(work), "QUEST_SITE": str(tmp_path / "site"),
           "QUEST_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "PYTHONPATH": str(guard),
           "TF_CPP_MIN_LOG_LEVEL": "3", "JUPYTER_PATH": str(tmp_path / "jupyter"), **(extra_env or {})}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    for var in ("QUEST_BUNDLE", "QUEST_DATA", "QUEST_MODEL"):
        os.environ.pop(var, None)
    try:
        nb = nbformat.read(notebook or layout.INFERENCE_NOTEBOOK, as_version=4)
        NotebookClient(nb, timeout=900, kernel_name="quest-test", resources={"metadata": {"path": str(work)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def status(name: str, failure: str = "") -> SimpleNamespace:
    """A kernels_status answer as kaggle 2.x gives it: status is an enum (KernelWorkerStatus.COMPLETE ...)."""
    return SimpleNamespace(status=SimpleNamespace(name=name.upper()), failure_message=failure)


class KernelCloud(FakeApi):
    """Kaggle as far as training kernels need it, on this machine. Uploaded datasets are kept by id; a pushed kernel
    runs when its output is asked for: its notebook is executed (network blocked) against a fake, read-only
    /kaggle/input built from its metadata's sources, and its working directory is the output."""

    def __init__(self, tmp: Path, competition: Path, datasets: dict | None = None, python: str | None = None,
                 statuses=("queued", "running", "complete")):
        super().__init__(statuses=("ready",))
        import sys

        self.tmp, self.competition, self.python = Path(tmp), Path(competition), python or sys.executable
        self.datasets, self.kernels, self.runs = dict(datasets or {}), {}, []
        self.kernel_statuses, self._left = list(statuses), {}

    def _keep(self, folder):
        meta = json.loads((Path(folder) / "dataset-metadata.json").read_text())
        dest = self.tmp / "datasets" / meta["id"].replace("/", "__")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(folder, dest)
        self.datasets[meta["id"]] = dest
        return SimpleNamespace(status="ok", error="", url="u")

    def dataset_create_version(self, folder, version_notes, dir_mode, quiet):
        self.calls.append(("version", folder))
        meta = json.loads((Path(folder) / "dataset-metadata.json").read_text())
        if meta["id"] not in self.datasets:
            raise RuntimeError("404 Client Error: Not Found")
        return self._keep(folder)

    def dataset_create_new(self, folder, public, dir_mode, quiet):
        self.calls.append(("create", folder))
        return self._keep(folder)

    def kernels_push(self, folder):
        self.calls.append(("push", folder))
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
        dest = self.tmp / "pushed" / meta["id"].replace("/", "__")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(folder, dest)
        self.kernels[meta["id"]] = dest
        self._left[meta["id"]] = list(self.kernel_statuses)
        return SimpleNamespace(error="", invalidDatasetSources=[], versionNumber=1, url=f"https://kaggle/{meta['id']}")

    def kernels_status(self, handle):
        self.calls.append(("kernel status", handle))
        left = self._left[handle]
        return status(left.pop(0) if len(left) > 1 else left[0])

    def kernels_output(self, handle, path, file_pattern=None, force=False, quiet=True):
        self.calls.append(("output", handle))
        folder = self.kernels[handle]
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        where = self.tmp / "sessions" / handle.replace("/", "__")
        shutil.rmtree(where, ignore_errors=True)
        root, work = where / "input", where / "working"
        work.mkdir(parents=True)
        shutil.copytree(self.competition, root / "competitions" / meta["competition_sources"][0])
        for source in meta["dataset_sources"]:
            owner, slug = source.split("/")
            shutil.copytree(self.datasets[source], root / "datasets" / owner / slug)
        for source in meta["model_sources"]:
            shutil.copytree(self.datasets[source], root / "models" / source)
        read_only(root)
        self.runs.append(run_notebook(self.python, root, work, where, notebook=folder / meta["code_file"]))
        shutil.copytree(work, path, dirs_exist_ok=True)
        return sorted(str(p) for p in Path(path).rglob("*") if p.is_file()), None


class KernelOutput(FakeApi):
    """A finished kernel whose output is a folder prepared by the test (no notebook is run)."""

    def __init__(self, output: Path, statuses=("complete",)):
        super().__init__()
        self.output, self.kernel_statuses = Path(output), list(statuses)

    def kernels_status(self, handle):
        self.calls.append(("kernel status", handle))
        entry = self.kernel_statuses.pop(0) if len(self.kernel_statuses) > 1 else self.kernel_statuses[0]
        return status(*entry) if isinstance(entry, tuple) else status(entry)

    def kernels_output(self, handle, path, file_pattern=None, force=False, quiet=True):
        self.calls.append(("output", handle))
        shutil.copytree(self.output, path, dirs_exist_ok=True)
        return [], None
