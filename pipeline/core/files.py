"""Atomic writes (temp file or staging folder + rename), directory locks and content hashes. A crash never leaves
half an artifact where a later stage looks."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.core import layout
from pipeline.core.errors import Busy, DamagedArtifact, UnsafePath
from pipeline.core.layout import TEMP_MARK, staging as staging_of


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "", needs: int = 0):
    """Yield a temp path in the target's folder; rename it onto `path` only if the block succeeds. What the file
    system says (read-only, full, missing) names `path`, the file the user asked for, not the temp file. A `path`
    that is a symbolic link is refused (UnsafePath), never written through or replaced. `needs`: bytes the write
    takes, checked free first (a writer that crashes on a full disk, as HDF5 does, never starts)."""
    path = refuse_link(path)  # replaced, it would be gone; followed, another file would be written
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if needs and (free := shutil.disk_usage(path.parent).free) < needs:
            raise OSError(errno.ENOSPC, f"No space left on device: writing it needs {needs / 2**20:.1f} MiB, "
                                        f"{free / 2**20:.1f} MiB are free", str(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=suffix or path.suffix, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.filename and TEMP_MARK in Path(str(err.filename)).name:  # said of our temp file: name the target
            raise OSError(err.errno, err.strerror, str(path)) from None
        if not err.filename and err.errno is not None:  # a writer that names no file (numpy's zip writer)
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from None
        raise
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def staged_dir(dest: str | Path, staging: str | Path | None = None):
    """Yield an empty staging folder of this writer's own beside `dest`; when the block succeeds it replaces `dest`
    by renames only (swap), when it fails (an error, a full disk) it is removed. One writer at a time: the block
    holds `dest`'s lock, so a second writer is refused in one line, and a swap a killed writer left half done is
    finished or undone first. The one write-then-rename for folders. `staging`: a fixed name (a resumable
    writer's), else a fresh one."""
    dest = Path(dest)
    refuse_link(dest)
    with exclusive(layout.lock_of(dest), f"{dest} is being written by {{holder}}; wait for it to finish",
                   sweep=lambda: (p for p in dest.parent.glob(f".{dest.name}{TEMP_MARK}*") if p != layout.aside(dest))):
        settle_swap(dest)
        staging = Path(staging) if staging else Path(tempfile.mkdtemp(prefix=staging_of(dest).name + "-",
                                                                      dir=_made_parent(dest)))
        remove_tree(staging)
        staging.mkdir(parents=True)
        try:
            yield staging
        except BaseException:
            remove_tree(staging)
            raise
        swap(staging, dest)


def _made_parent(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


def swap(new: Path, dest: Path):
    """`new` takes `dest`'s place by renames only: dest -> aside, new -> dest, then aside is deleted. A kill at any
    point leaves either the old folder or the new one whole at `dest` (settle_swap tidies the rest)."""
    aside = layout.aside(dest)
    remove_tree(aside)
    if os.path.lexists(dest):
        refuse_link(dest)
        os.rename(dest, aside)
    os.rename(new, dest)
    remove_tree(aside)


def settle_swap(dest: Path):
    """Finish or undo a swap a killed writer left half done: with `dest` in place the old folder set aside is
    deleted; with `dest` gone, the old folder is put back."""
    aside = layout.aside(dest)
    if not os.path.lexists(aside):
        return
    if os.path.lexists(dest):
        remove_tree(aside)
    else:
        os.rename(aside, dest)


def remove_tree(path: str | Path):
    """Delete a folder or file the pipeline made. A link is removed itself, never followed; a path at or next to
    the root, or the home folder, is refused (a bug that resolved a run folder to "/" once deleted dotfiles)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    resolved = path.parent.resolve() / path.name
    if len(resolved.parts) < 3 or resolved in (Path.home().resolve(), Path("/").resolve()):
        raise UnsafePath(f"refusing to delete {path} (resolves to {resolved}): too close to the root")
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def refuse_link(path: str | Path, within: str | Path | None = None) -> Path:
    """The one link rule: the pipeline never follows a symbolic link it meets in a run, a bundle or an output
    folder, at the source or at the destination. `path` (and, with `within`, every folder between `within` and
    it) must not be a link; raises UnsafePath naming the link and where it points."""
    path = Path(path)
    chain = [path]
    if within is not None:
        try:
            rel = path.relative_to(within)
        except ValueError:
            rel = Path()
        chain = [Path(within).joinpath(*rel.parts[:i]) for i in range(1, len(rel.parts) + 1)] or chain
    for p in chain:
        if p.is_symlink():
            raise UnsafePath(f"{p} is a symbolic link (to {os.readlink(p)}); the pipeline follows no link inside its "
                             "folders: replace it by the file or folder it should hold")
    return path


def copy_file(src: str | Path, dst: str | Path, within: str | Path | None = None) -> Path:
    """One file into a bundle, kernel or run folder: no link at the source (or between `within` and it) or at the
    destination, never a file onto itself, written whole (temp file + rename)."""
    src, dst = refuse_link(src, within), refuse_link(dst)
    if not src.is_file():
        raise UnsafePath(f"{src} is not a regular file")
    if dst.exists() and os.path.samefile(src, dst):
        raise UnsafePath(f"{dst} is the file it would be copied from ({src}); choose another folder")
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
    return dst


def copy_tree(src: str | Path, dst: str | Path) -> list[Path]:
    """A folder's regular files into dst (made), refusing any link or special file met on the way (UnsafePath)."""
    src, dst = refuse_link(src), Path(dst)
    written = []
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        for name in sorted(dirnames):  # a linked folder is listed here, never entered; files: copy_file checks
            refuse_link(here / name)
        for name in sorted(filenames):
            written.append(copy_file(here / name, dst / (here / name).relative_to(src)))
    return written


@contextlib.contextmanager
def exclusive(lock_file: Path, busy: str, error: type[Exception] = Busy, sweep=None):
    """One process at a time: an flock on lock_file (opened without following a link), which names the holder
    while held and is deleted on release. Another holder: `error(busy)` with {holder} filled in. Once held,
    `sweep()` (paths) lists a killed holder's leftovers to delete; only names with TEMP_MARK are ever swept."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = _hold(lock_file, busy, error)
    for p in list(sweep() if sweep else ()):  # what a killed holder left
        if TEMP_MARK in p.name:
            remove_tree(p)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):  # gone with its folder (a finished pre-training's)
            os.unlink(lock_file)  # still ours: _hold checked that the name is the file we locked
        handle.close()


def _hold(lock_file: Path, busy: str, error: type[Exception]):
    """The locked, open lock file, naming this process. A holder deletes the file as it lets go, so a lock taken
    on a file that has just lost its name is let go and taken again on the new one."""
    import datetime as dt
    import fcntl
    import socket

    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                refuse_link(lock_file)
            raise
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "another process"
            handle.close()
            raise error(busy.replace("{holder}", holder)) from None
        try:
            if os.stat(lock_file, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # the holder before us deleted it meanwhile: take the lock on the file now there
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
    handle.flush()
    return handle


def temp_files(directory: Path):
    """atomic_path's temp files under directory (by their TEMP_MARK), links left alone: a killed writer's."""
    return [p for p in Path(directory).rglob(f"*{TEMP_MARK}*") if p.is_file() and not p.is_symlink()]


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def update_json(path: str | Path, key: str, value) -> Path:
    """Set one key of a JSON record several processes write (uploads, pushed kernels): read, change and write
    under the record's lock, so two writers at once never lose each other's entry."""
    path = Path(path)
    with exclusive(layout.lock_of(path), f"{path} is being updated by {{holder}}; try again in a moment"):
        record = read_json(path) if path.is_file() else {}
        record[key] = value
        return write_json(path, record)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | Path, remedy: str = "run the stage that writes it again",
              error: type[Exception] = DamagedArtifact):
    """A JSON file; one that does not parse is `error` naming it, what is wrong and the one remedy (never a bare
    JSONDecodeError)."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise error(f"{path} is damaged ({err}); {remedy}") from None


def is_current(marker: str | Path, stamp, *outputs: str | Path) -> bool:
    """The one is-current check: an artifact is current when its marker (a JSON file written last) records
    exactly this stamp (a digest of everything it was made from), every output beside it exists, and each output
    the marker lists (write_marker) still holds what was written with it."""
    marker = Path(marker)
    if not (marker.is_file() and all(Path(o).is_file() for o in outputs)):
        return False
    try:
        record = read_json(marker)
        made = record.get("outputs")
    except (DamagedArtifact, AttributeError):  # a damaged marker: not current, made again
        return False
    if record.get("stamp") != stamp:
        return False
    return made is None or (all(str(o) in made for o in outputs) and outputs_intact(made))


def write_marker(marker: str | Path, stamp: str, outputs, **record) -> Path:
    """An artifact's marker, written last: its stamp, and the sha256 of every output made with it, so it stops
    being current the moment any of them is replaced (by another writer, or a kill halfway through a rewrite)."""
    return write_json(marker, {**record, "stamp": stamp, "outputs": {str(p): sha256_file(p) for p in outputs}})


def outputs_intact(made: dict) -> bool:
    """Whether every file a marker lists (path -> sha256) is there and still the one written."""
    return all(Path(p).is_file() and sha256_file(p) == h for p, h in made.items())


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
