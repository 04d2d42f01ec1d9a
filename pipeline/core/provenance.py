"""Where a run came from: the git commit of the code and the versions of the libraries a saved model needs."""
from __future__ import annotations

import json
import subprocess

from pipeline.core import config as config_lib, layout


def git_commit() -> str:
    """The checkout's commit (+ "-dirty"); code running from a Kaggle bundle reports the commit it was packaged at."""
    manifest = config_lib.ROOT / layout.MANIFEST_NAME
    if manifest.is_file() and not (config_lib.ROOT / ".git").exists():
        return json.loads(manifest.read_text()).get("git_commit", "unknown")
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

    import keras

    out = {"backend": keras.config.backend()}
    for dist in ("keras", "keras-hub", "tensorflow", "jax", "jaxlib"):  # the backend's own, whichever is installed
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def record() -> dict:
    """How a fold was made, recorded with the fold when it finishes (so a later command that makes no fold never
    rewrites it): the command line, the code's commit, the library versions, the time."""
    import datetime as dt
    import sys

    return {"command": list(sys.argv), "git_commit": git_commit(), "versions": library_versions(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
