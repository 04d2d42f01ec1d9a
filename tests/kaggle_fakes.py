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
