"""Where a run came from: the git commit of the code and the versions of the libraries a saved model needs."""
from __future__ import annotations

import subprocess

from . import config as config_lib


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config_lib.ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=config_lib.ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("-dirty" if dirty else "")


def library_versions() -> dict:
    """Versions a saved model depends on; `package` bundles the pure-Python ones for the Kaggle kernel."""
    import importlib.metadata

    return {d: importlib.metadata.version(d) for d in ("keras", "keras-hub", "tensorflow")}
