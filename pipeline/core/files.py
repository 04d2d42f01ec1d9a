"""Atomic writes (temp file or staging folder + rename), directory locks and content hashes. A crash never leaves
half an artifact where a later stage looks."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.core.errors import DamagedArtifact
from pipeline.core.layout import TEMP_MARK, staging as staging_of


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temp path in the target's folder; rename it onto `path` only if the block succeeds. What the file
    system says (read-only, full, missing) names `path`, the file the user asked for, not the temp file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=suffix or path.suffix, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.filename and TEMP_MARK in Path(str(err.filename)).name:  # said of our temp file: name the target
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def staged_dir(dest: str | Path, staging: str | Path | None = None):
    """Yield an empty staging folder beside `dest` (layout.staging's name); when the block succeeds it replaces
    `dest` whole, when it fails (an error, a full disk) it is removed. The one write-then-rename for folders."""
    dest = Path(dest)
    staging = Path(staging) if staging else staging_of(dest)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


@contextlib.contextmanager
def exclusive(directory: Path, lock_file: Path, error: type[Exception], hint: str):
    """One process at a time in `directory` (an flock on lock_file, which names the holder); stale temp files
    of a killed holder (atomic_path's, by their TEMP_MARK; nothing else, no link followed) are removed once we
    hold it. Another holder: `error` naming it, then `hint`."""
    import datetime as dt
    import fcntl
    import socket

    directory.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise error(f"{directory} is being trained by {holder}; {hint}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
    handle.flush()
    stale = [p for p in directory.rglob(f"*{TEMP_MARK}*") if p.is_file() and not p.is_symlink()]
    for p in stale:  # temp files of atomic_path left by a killed process
        p.unlink()
    try:
        yield
    finally:
        handle.close()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | Path):
    """A JSON file; one that does not parse is a DamagedArtifact naming it (never a bare JSONDecodeError)."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise DamagedArtifact(f"{path} is damaged ({err}); run the stage that writes it again") from None


def is_current(marker: str | Path, stamp, *outputs: str | Path) -> bool:
    """The one is-current check: an artifact is current when its marker (a JSON file written last) records
    exactly this stamp (a digest of everything it was made from) and every output beside it exists."""
    marker = Path(marker)
    if not (marker.is_file() and all(Path(o).is_file() for o in outputs)):
        return False
    try:
        return read_json(marker).get("stamp") == stamp
    except (DamagedArtifact, AttributeError):  # a damaged marker: not current, made again
        return False


def write_csv(path: str | Path, frame, float_format: str | None = None) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def _jsonable(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()
