"""Which pure-Python wheels a Kaggle bundle must carry, and where they come from.

A Kaggle kernel runs with the internet off on Kaggle's image (configs/kaggle-image-constraints.txt pins
its versions). The runs were trained with some keras / keras-hub; the bundle carries those exact
versions, plus every requirement of theirs (followed recursively, evaluated for Linux and the kernel's
Python) that the image has at a version that does not satisfy it. Requirements the image manifest
does not list are taken to be present in the image. A needed wheel that is not pure Python, or cannot
be found in kaggle.wheel_dir nor fetched with `pip download`, is an error: the kernel would fail.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)
KERNEL_PYTHON = "3.12"
MARKER_ENV = {"python_version": KERNEL_PYTHON, "python_full_version": KERNEL_PYTHON + ".0", "sys_platform": "linux",
              "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
# Distributions whose training-time version the kernel must run (saved models depend on them).
TRAINED_WITH = ("keras", "keras-hub")


class WheelError(PipelineError, RuntimeError):
    """A wheel the bundle needs cannot be had."""


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_image(constraints: Path) -> dict[str, str]:
    """name -> version from a pip constraints file of `name==version` lines."""
    out = {}
    for line in Path(constraints).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins = [s.version for s in req.specifier if s.operator == "=="]
            if len(pins) != 1:
                raise WheelError(f"{constraints}: {line!r} is not a 'name==version' pin")
            out[norm(req.name)] = pins[0]
    return out


def _wheel_requirements(whl: Path) -> list[Requirement]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
            if line.startswith("Requires-Dist:")]


def _find(dist: str, version: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for whl in sorted(Path(folder).glob("*.whl")) if Path(folder).is_dir() else []:
            parts = whl.name.split("-")
            if norm(parts[0]) == dist and parts[1] == version:
                return whl
    return None


def _download(dist: str, version: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                          "--python-version", KERNEL_PYTHON, "-q", "-d", str(dest), "--", f"{dist}=={version}"],
                         capture_output=True, text=True)
    whl = _find(dist, version, [dest])
    if res.returncode or whl is None:
        why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "pip download found no wheel"
        raise WheelError(f"cannot get a wheel for {dist}=={version} ({why}); put one in kaggle.wheel_dir and "
                         "package again")
    return whl


def _obtain(dist: str, version: str, wheel_dir: Path) -> Path:
    whl = _find(dist, version, [wheel_dir]) or _download(dist, version, wheel_dir)
    if not whl.name.endswith("-none-any.whl"):
        raise WheelError(f"{whl.name} is not pure Python; a kernel cannot install it offline and the image has "
                         f"{dist} at another version (see configs/kaggle-image-constraints.txt)")
    return whl


def _newest_satisfying(req: Requirement, wheel_dir: Path) -> str:
    """The locally installed version if it satisfies req, else the newest one in wheel_dir that does."""
    import importlib.metadata

    try:
        local = importlib.metadata.version(req.name)
        if req.specifier.contains(local, prereleases=True):
            return local
    except importlib.metadata.PackageNotFoundError:
        pass
    found = [w.name.split("-")[1] for w in Path(wheel_dir).glob("*.whl") if norm(w.name.split("-")[0]) == norm(req.name)]
    ok = sorted((v for v in found if req.specifier.contains(v, prereleases=True)), key=Version)
    if not ok:
        raise WheelError(f"the Kaggle image lacks {req} and no wheel for it is installed here or in {wheel_dir}")
    return ok[-1]


def collect(pins: dict[str, str], extra: list[str], image: dict[str, str], wheel_dir: Path, dest: Path) -> list[Path]:
    """Copy into dest the wheels for `pins` (dist -> version) and for every requirement the image misses."""
    for spec in extra:
        if spec.startswith("-"):
            raise WheelError(f"kaggle.wheels entry {spec!r} looks like a pip option; expected 'name==version'")
        req = Requirement(spec)
        pins.setdefault(norm(req.name), _newest_satisfying(req, wheel_dir))
    todo = [(norm(d), v) for d, v in pins.items()]
    chosen: dict[str, Path] = {}
    while todo:
        dist, version = todo.pop()
        if dist in chosen:
            continue
        if image.get(dist) == version:
            continue
        chosen[dist] = _obtain(dist, version, wheel_dir)
        for req in _wheel_requirements(chosen[dist]):
            name = norm(req.name)
            if req.marker and not req.marker.evaluate(MARKER_ENV):
                continue
            if name in chosen or name not in image or req.specifier.contains(image[name], prereleases=True):
                continue
            todo.append((name, _newest_satisfying(req, wheel_dir)))
    dest.mkdir(parents=True, exist_ok=True)
    for whl in chosen.values():
        shutil.copy2(whl, dest / whl.name)
    log.info("bundled wheels: %s", ", ".join(sorted(w.name for w in chosen.values())) or "none needed")
    return sorted(dest / w.name for w in chosen.values())
