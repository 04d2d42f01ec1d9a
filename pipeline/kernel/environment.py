"""What every Kaggle kernel of this pipeline does first (inference and training alike): find its inputs by
their contents under /kaggle/input and install the bundled wheels the Kaggle way.

Imports nothing heavy, so a notebook can install the bundled wheels before TensorFlow or Keras is imported.
Both mount layouts work because inputs are found by what they hold, not where they are:
  current: /kaggle/input/competitions/<slug>/, /kaggle/input/datasets/<owner>/<slug>/, /kaggle/input/models/...
  older:   /kaggle/input/<slug>/
QUEST_BUNDLE, QUEST_DATA, QUEST_MODEL and QUEST_WORK override what is found.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline.core import layout  # paths only
from pipeline.core.errors import InstallError, PipelineError

KAGGLE_INPUT = Path("/kaggle/input")
WORK = Path("/kaggle/working")  # a kernel's output
# Installed wheels and encoded inputs go under /tmp: the working directory is the kernel's output.
SITE = Path(os.environ.get("QUEST_SITE", "/tmp/quest-site"))
CACHE = Path(os.environ.get("QUEST_CACHE", "/tmp/quest-cache"))
WEIGHT_FILES = ("model.safetensors", "model.weights.h5")  # a model directory holds one (HF, keras-hub preset)


class InputsNotFound(PipelineError, FileNotFoundError):
    pass


def tree(root: Path, depth: int = 4, limit: int = 60) -> str:
    """What is under root, for error messages."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        level = len(Path(dirpath).relative_to(root).parts)
        if level >= depth:
            dirnames[:] = []
        dirnames.sort()
        lines.append("  " * level + Path(dirpath).name + "/")
        lines += ["  " * (level + 1) + f for f in sorted(filenames)[:8]]
        if len(lines) > limit:
            return "\n".join(lines[:limit] + ["  ..."])
    return "\n".join(lines) or f"{root} (empty or missing)"


def search(root: Path, wanted: tuple[str, ...], depth: int = 6, any_of: tuple[str, ...] = ()) -> list[Path]:
    """Folders under root holding every file of `wanted` (and one of `any_of`), shallowest first."""
    hits = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if len(Path(dirpath).relative_to(root).parts) >= depth:
            dirnames[:] = []
        if all(w in filenames for w in wanted) and (not any_of or any(a in filenames for a in any_of)):
            hits.append(Path(dirpath))
    return sorted(hits, key=lambda p: (len(p.parts), str(p)))


def _override(var: str) -> Path | None:
    return Path(os.environ[var]) if os.environ.get(var) else None


def bundle_rank(folder: str | Path, kind: str | None = None) -> tuple:
    """The one rule that picks a bundle among several attached (the notebooks' first cell applies the same key
    to the same folders, and tests/test_bundle.py checks they agree): one of the wanted `kind` first (an
    inference bundle for the inference kernel, beside a code dataset), then the shallowest, then by path."""
    folder = str(folder)
    return (bool(kind) and _manifest(folder, "kind") != kind, folder.rstrip(os.sep).count(os.sep), folder)


def _manifest(folder: str | Path, key: str):
    """One entry of a bundle's bundle.json (None when it cannot be read: manifest.read checks it in full later)."""
    try:
        with open(os.path.join(folder, layout.MANIFEST_NAME)) as f:
            return json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def find_bundle(root: Path, kind: str | None = None) -> Path | None:
    """The pipeline's dataset (a bundle or a code-only bundle): the folder holding bundle.json, by bundle_rank;
    QUEST_BUNDLE (which the notebooks' first cell sets to its choice) wins."""
    found = sorted(search(root, (layout.MANIFEST_NAME,)), key=lambda p: bundle_rank(p, kind))
    return _override("QUEST_BUNDLE") or next(iter(found), None)


def find_competition(root: Path, files: tuple[str, ...], slug: str = "google-quest-challenge") -> Path | None:
    """The competition folder: the one holding `files`, preferring a path that names the competition (its slug:
    kaggle.competition, recorded in the bundle)."""
    if _override("QUEST_DATA"):
        return _override("QUEST_DATA")
    found = search(root, files)
    return next((p for p in found if slug in p.parts), found[0] if found else None)


def find_model(root: Path, hint: str = "", weights: bool = True) -> Path | None:
    """A backbone directory (config.json + weights, unless weights=False: a random-init architecture) outside the
    pipeline's bundle; `hint` (the model folder's name where the run was configured) picks one of several."""
    if _override("QUEST_MODEL"):
        return _override("QUEST_MODEL")
    found = [p for p in search(root, ("config.json",), depth=8, any_of=WEIGHT_FILES if weights else ())
             if not any((q / layout.MANIFEST_NAME).is_file() for q in (p, *p.parents))]
    named = [p for p in found if hint and hint in p.parts]
    return (named or found or [None])[0]


def require(root: Path, found: list[tuple[str, Path | None, str]]):
    """found: (what, folder or None, a file it must hold); raise InputsNotFound naming what is missing."""
    missing = [what for what, folder, needed in found if folder is None or not (folder / needed).is_file()]
    if missing:
        raise InputsNotFound("not found under " + str(root) + ": " + "; ".join(missing) +
                             "\n(set QUEST_BUNDLE / QUEST_DATA / QUEST_MODEL to override). What is there:\n" + tree(root))


def find_bundle_and_data(root: Path, data_files: tuple[str, ...], written_by: str, kind: str | None = None,
                         competition: str | None = None) -> tuple[Path, Path]:
    """(the pipeline's bundle, the competition folder holding data_files) under root, or InputsNotFound naming
    what is missing; written_by: the command that makes the bundle, for the message; competition: the slug (else
    the one the bundle records, kaggle.competition when it was packaged)."""
    bundle = find_bundle(root, kind)
    if competition is None and bundle is not None:
        competition = _manifest(bundle, "competition")
    data = find_competition(root, data_files, competition or "google-quest-challenge")
    require(root, [(f"bundle (a folder with bundle.json; attach the dataset written by `{written_by}`)", bundle,
                    layout.MANIFEST_NAME),
                   (f"competition data ({' + '.join(data_files)}; add the competition as an input)", data,
                    data_files[0])])
    return bundle, data


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def install_wheels(bundle: str | Path, target: str | Path = SITE) -> list[str]:
    """Install the bundle's wheels the Kaggle way: resolve offline against the image (`--no-index
    --find-links`), so an unmet requirement fails here with pip's message; install what the resolver
    picked under `target` and put it first on sys.path. Returns the installed 'name-version's."""
    wheel_dir = layout.Bundle(Path(bundle)).wheels
    wanted = ["==".join(w.name.split("-")[:2]) for w in sorted(wheel_dir.glob("*.whl"))]
    if not wanted:
        return []
    report = Path(target).with_name(Path(target).name + "-resolution.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    res = _pip("install", "--no-index", "--find-links", str(wheel_dir), "--dry-run", "--quiet", "--report",
               str(report), *wanted)
    if res.returncode or not report.is_file():
        raise InstallError(f"the bundled wheels do not install on this image ({' '.join(wanted)}):\n"
                           f"{(res.stderr or res.stdout).strip()}\n"
                           "Package again with the missing wheel in kaggle.wheel_dir.")
    picked = json.loads(report.read_text())["install"]
    urls = [unquote(urlparse(item["download_info"]["url"]).path) for item in picked]  # file:// URLs -> paths
    if urls:
        res = _pip("install", "--no-index", "--no-deps", "--upgrade", "--quiet", "--target", str(target), *urls)
        if res.returncode:
            raise InstallError(f"installing {' '.join(urls)} under {target} failed:\n{res.stderr.strip()}")
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    return [f"{i['metadata']['name']}-{i['metadata']['version']}" for i in picked]


def work_dir(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("QUEST_WORK") or WORK)
