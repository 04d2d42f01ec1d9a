"""Kaggle dataset folders: the inference bundle, and the code-only bundle that training kernels run.

Bundle layout (everything a kernel needs, nothing it does not):
  pipeline/ run.py configs/ requirements.txt    the code
  folds/folds.csv folds/folds.json              the split (a training kernel trains on exactly this one)
  wheels/                                       pure-Python wheels the Kaggle image lacks (see wheels.py)
  bundle.json                                   kind ("inference" or "code"), code commit, library versions;
                                                inference: runs, blend method and weights
  runs/<run>/  config.toml run.json model.json tokenizer/ postprocess.json fold<k>/{weights, metrics, finished}
  postprocess.json                              the blend's fitted post-processing ({} when none)
  dataset-metadata.json                         for `kaggle datasets create/version`
`package --code-only` writes the first four; `package` all of them (so one bundle can also serve training).
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from . import config as config_lib
from . import files, kaggle, layout, provenance, runs, wheels
from .errors import MissingArtifact, UsageError

log = logging.getLogger(__name__)
# What inference needs of a run and of each finished fold (layout.Run / layout.Fold attributes).
RUN_FILES = ("config", "info", "model", "postprocess")
FOLD_FILES = ("weights", "coding", "metrics", "finished")
_SLUG = re.compile(r"^[A-Za-z0-9_-]+/[a-z0-9][a-z0-9-]{5,49}$")  # Kaggle slugs: 6-50 characters
DEV_MODULES = ("synth", "tinymodel", "explore")  # generated data, tiny test models, notebooks' plots: not shipped
PLACEHOLDER_OWNER = "your-kaggle-username"


def dataset_metadata(handle: str, title: str) -> dict:
    return {"title": title, "id": handle, "licenses": [{"name": "CC0-1.0"}]}


def validate_dataset_metadata(meta: dict):
    if not _SLUG.match(meta.get("id", "")):
        raise UsageError(f"dataset id {meta.get('id')!r}: expected 'owner/slug' (slug 6-50 of a-z 0-9 -)")
    if not 6 <= len(meta.get("title", "")) <= 50:
        raise UsageError(f"dataset title {meta.get('title')!r}: Kaggle wants 6-50 characters")
    if not meta.get("licenses"):
        raise UsageError("dataset metadata needs a licenses list")


def _copy(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def trained_versions(run_dirs: list[Path]) -> dict[str, str]:
    """keras / keras-hub versions the runs were trained with (run.json), which the kernel must run."""
    found: dict[str, set] = {d: set() for d in wheels.TRAINED_WITH}
    for d in run_dirs:
        recorded = files.read_json(layout.Run(d).info).get("versions") or provenance.library_versions()
        for dist in wheels.TRAINED_WITH:
            found[dist].add(recorded[dist])
    mixed = {d: sorted(v) for d, v in found.items() if len(v) > 1}
    if mixed:
        raise UsageError(f"the runs were trained with different library versions {mixed}; bundle them separately")
    return {d: v.pop() for d, v in found.items()}


def _replaceable(out_dir: Path):
    """package writes only where nothing or an earlier bundle is: never over a folder it did not create."""
    if out_dir.exists() and any(out_dir.iterdir()) and not layout.Bundle(out_dir).manifest.is_file():
        raise UsageError(f"--out {out_dir} exists and is not a bundle (no {layout.MANIFEST_NAME}); "
                         "choose an empty or new folder")


def _stage_code(cfg, staging: Path, versions: dict[str, str]):
    """The code, configs, the split and the wheels: what every kernel of the pipeline runs."""
    root = config_lib.ROOT
    code = [f for f in sorted((root / "pipeline").glob("*.py")) if f.stem not in DEV_MODULES]
    for src in code + [root / "run.py", root / "requirements.txt"]:
        _copy(src, staging / src.relative_to(root))
    for src in sorted((root / "configs").glob("*.toml")):
        _copy(src, staging / "configs" / src.name)
    if not cfg.folds_file.is_file():
        raise MissingArtifact(f"{cfg.folds_file} not found; run `python run.py folds` first (kernels train on this split)")
    target = layout.Bundle(staging)
    for src, dst in ((cfg.folds_file, target.folds), (layout.folds_meta(cfg.folds_file), layout.folds_meta(target.folds))):
        _copy(src, dst)
    wheels.collect(dict(versions), cfg.kaggle.wheels, wheels.read_image(cfg.path(cfg.kaggle.image)),
                   cfg.path(cfg.kaggle.wheel_dir), target.wheels)


def _publish(cfg, staging: Path, out_dir: Path, handle: str, title: str, upload: bool, client) -> Path:
    """dataset-metadata.json, then the folder renamed into place (and uploaded when asked)."""
    meta = dataset_metadata(handle or f"{PLACEHOLDER_OWNER}/quest-bundle", title)
    validate_dataset_metadata(meta)
    files.write_json(layout.Bundle(staging).metadata, meta)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    log.info("bundle %s: %.1f MiB", out_dir, size / 2**20)
    if upload:
        if not handle:
            raise UsageError("set kaggle.dataset (or kaggle.code_dataset for --code-only) = 'owner/slug' to upload")
        log.info("dataset %s: %s", handle, kaggle.upload_dataset(out_dir, client=client))
    return out_dir


def _staging(cfg, out: str | None, default: str) -> tuple[Path, Path]:
    out_dir = cfg.path(out or str(Path(cfg.output.dir) / default))
    _replaceable(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    return out_dir, staging


def package(cfg, run_names: list[str], out: str | None = None, upload: bool = False, client=None) -> list[Path]:
    run_dirs = [runs.resolve(n, cfg) for n in (run_names or [str(cfg.run_dir)])]
    for d in run_dirs:
        if not runs.finished_folds(d):
            raise MissingArtifact(f"{d}: no finished fold to bundle; run `python run.py train` first")
    out_dir, staging = _staging(cfg, out, "kaggle-bundle")
    versions = trained_versions(run_dirs)
    _stage_code(cfg, staging, versions)
    target = layout.Bundle(staging)
    for d in run_dirs:
        src, dst = layout.Run(d), target.run(d.name)
        for attr in RUN_FILES:
            if getattr(src, attr).is_file():
                _copy(getattr(src, attr), getattr(dst, attr))
        for f in src.tokenizer.rglob("*"):
            if f.is_file():
                _copy(f, dst.tokenizer / f.relative_to(src.tokenizer))
        for k in src.finished_folds():
            runs.verify_weights(d, k)
            for attr in FOLD_FILES:
                _copy(getattr(src.fold(k), attr), getattr(dst.fold(k), attr))
    blend, pp = _blend_for(cfg, run_dirs)
    files.write_json(target.manifest, {"kind": "inference", "runs": [d.name for d in run_dirs], **blend,
                                       "git_commit": provenance.git_commit(), "versions": versions})
    files.write_json(target.postprocess, pp)
    return [_publish(cfg, staging, out_dir, cfg.kaggle.dataset, "QUEST pipeline bundle", upload, client)]


def package_code(cfg, out: str | None = None, upload: bool = False, client=None) -> list[Path]:
    """`package --code-only`: the code, the split and the wheels (keras / keras-hub as installed here), for
    training kernels; no runs."""
    out_dir, staging = _staging(cfg, out, "kaggle-code")
    versions = {d: v for d, v in provenance.library_versions().items() if d in wheels.TRAINED_WITH}
    _stage_code(cfg, staging, versions)
    files.write_json(layout.Bundle(staging).manifest, {"kind": "code", "runs": [], "git_commit": provenance.git_commit(),
                                                       "versions": versions})
    return [_publish(cfg, staging, out_dir, code_dataset(cfg), "QUEST pipeline code", upload, client)]


def code_dataset(cfg) -> str:
    """The dataset training kernels take their code from: kaggle.code_dataset, else the inference bundle's."""
    return cfg.kaggle.code_dataset or cfg.kaggle.dataset


def _blend_for(cfg, run_dirs: list[Path]) -> tuple[dict, dict]:
    """The fitted ensemble over exactly these runs if there is one, else an equal mean without post-processing."""
    ens = layout.ensemble(cfg)
    if ens.weights.is_file():
        w = files.read_json(ens.weights)
        if w["runs"] == [d.name for d in run_dirs]:
            return {"method": w["method"], "weights": w["weights"]}, files.read_json(ens.postprocess)
    log.warning("no ensemble fitted over %s: the bundle blends them with equal weights and no post-processing",
                [d.name for d in run_dirs])
    return {"method": "mean", "weights": [1.0 / len(run_dirs)] * len(run_dirs)}, {}
