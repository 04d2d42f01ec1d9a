"""Archives and downloads from outside (a Kaggle Model's tar, a dataset or competition zip, kernel output, a
bundle's folders uploaded as zips): every member is checked before a byte is written, and what a third party
wrote is checked before anything reads it.

A member may not be named outside its folder (absolute, `..`, a drive), nor be a link or a device, FIFO or other
special file. Standard library only, and no import from the package at load: the notebooks' first cell loads
this file straight out of the bundle's `pipeline.zip` to unpack the bundle, before the package is importable.
"""
from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

try:
    from pipeline.core.errors import UnsafePath as _Base
except ImportError:  # loaded on its own by a notebook's first cell
    _Base = ValueError


class UnsafeArchive(_Base):
    """An archive member or downloaded file that would land outside its folder, or is a link or special file."""


def name_problem(name: str) -> str | None:
    """Why a member name would land outside the folder it is unpacked into (None: it stays inside)."""
    if not name or "\0" in name:
        return "an empty or NUL name"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute name"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "a '..' in its name"
    return None


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "a special file"
    return None


def _tar_kind(member: tarfile.TarInfo) -> str | None:
    if member.issym() or member.islnk():
        return f"a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname})"
    if not (member.isfile() or member.isdir()):
        return "a device, FIFO or other special file"
    return None


def _members(archive: Path):
    """(name, what is wrong with it or None) for every member, and the opened archive."""
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        return zf, [(i.filename, name_problem(i.filename) or _zip_kind(i)) for i in zf.infolist()]
    if tarfile.is_tarfile(archive):
        tf = tarfile.open(archive)
        return tf, [(m.name, name_problem(m.name) or _tar_kind(m)) for m in tf.getmembers()]
    raise UnsafeArchive(f"{archive} is neither a zip nor a tar archive")


def extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Unpack archive into dest after checking every member (UnsafeArchive naming the archive and the first
    members at fault, before anything is written); returns the files written."""
    archive, dest = Path(archive), Path(dest)
    opened, members = _members(archive)
    with opened:
        bad = [f"{name!r} ({why})" for name, why in members if why]
        root = dest.resolve()
        bad += [f"{name!r} (lands outside {dest})" for name, why in members
                if not why and not (root / name).resolve().is_relative_to(root)]
        if bad:
            raise UnsafeArchive(f"{archive}: {len(bad)} member(s) would be written outside {dest} or are not plain "
                                f"files: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; nothing was unpacked")
        dest.mkdir(parents=True, exist_ok=True)
        if isinstance(opened, tarfile.TarFile) and hasattr(tarfile, "data_filter"):
            opened.extractall(dest, filter="data")  # the standard library's own check, on top of ours
        else:
            opened.extractall(dest)
    check_tree(dest)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def check_tree(root: str | Path) -> Path:
    """What a third party (the kaggle client, an unpacker) wrote under root: regular files and folders only, no
    link anywhere; UnsafeArchive naming the first offender."""
    root = Path(root)
    if root.is_symlink():
        raise UnsafeArchive(f"{root} is a symbolic link; expected a folder of plain files")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                raise UnsafeArchive(f"{p} is a symbolic link (to {os.readlink(p)}); downloads and archives may "
                                    "hold plain files only")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafeArchive(f"{p} is not a plain file or folder")
    return root
