"""Test doubles for the Kaggle side: minimal wheels, a network guard for notebook kernels, and a fake
/kaggle/input in either mount layout. The real kaggle client talking to an in-memory Kaggle: kaggle_server.py."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

# The kaggle client runs on the user's machine (requirements.txt), not in a Kaggle kernel: the Kaggle-image
# environment has only kagglesdk, so the tests of API calls (kaggle_server.py) skip there.
HAS_CLIENT = importlib.util.find_spec("kaggle") is not None
requires_client = pytest.mark.skipif(not HAS_CLIENT, reason="the kaggle client is not installed here (the "
                                     "Kaggle-image environment has kagglesdk only); the API runs from your machine")

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


def mount(root: Path, bundle: Path, data: Path, layout: str, owner: str = "someone", slug: str = "my-quest-models"):
    """Lay out bundle + competition data under root as a Kaggle notebook sees them; returns (bundle, data) paths.
    layout: "current" (datasets/<owner>/<slug>), "old" (<slug>), "old-zipped" (old, each of the bundle's folders
    left as the archive the client's dir_mode="zip" uploads, made by the client's own DirectoryArchive)."""
    if layout == "current":
        b, d = root / "datasets" / owner / slug, root / "competitions" / "google-quest-challenge"
    else:
        b, d = root / slug, root / "google-quest-challenge"
    shutil.copytree(bundle, b)
    shutil.copytree(data, d)
    if layout.endswith("zipped"):
        from pipeline.kaggle import client

        archives = sys.modules[client.api_class().__module__].DirectoryArchive
        for folder in [f for f in b.iterdir() if f.is_dir()]:
            with archives(str(folder), "zip") as archive:
                shutil.copy2(archive.path, b / archive.name)
            shutil.rmtree(folder)
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


