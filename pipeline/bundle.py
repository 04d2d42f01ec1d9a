"""A Kaggle dataset folder for offline inference, and the kernel metadata beside the notebook.

Bundle layout (everything inference needs, nothing it does not):
  pipeline/ run.py configs/ requirements.txt    the code
  runs/<run>/  config.toml run.json model.json tokenizer/ postprocess.json fold<k>/{weights, metrics, finished}
  bundle.json                                   runs, blend method and weights, post-processing of the blend
  postprocess.json                              the blend's fitted post-processing ({} when none)
  wheels/                                       pure-Python wheels the Kaggle image lacks (see wheels.py)
  dataset-metadata.json                         for `kaggle datasets create/version`
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


def kernel_metadata(cfg, code_file: str) -> dict:
    handle = cfg.kaggle.kernel or f"{PLACEHOLDER_OWNER}/quest-inference"
    return {"id": handle, "title": handle.split("/")[-1].replace("-", " ").title(), "code_file": code_file,
            "language": "python", "kernel_type": "notebook", "is_private": True,
            "enable_gpu": cfg.kaggle.accelerator == "gpu", "enable_tpu": cfg.kaggle.accelerator == "tpu",
            "enable_internet": False, "dataset_sources": [cfg.kaggle.dataset or f"{PLACEHOLDER_OWNER}/quest-bundle"],
            "competition_sources": [cfg.kaggle.competition], "kernel_sources": [], "model_sources": []}


def validate_kernel_metadata(meta: dict):
    if not _SLUG.match(meta.get("id", "")):
        raise UsageError(f"kernel id {meta.get('id')!r}: expected 'owner/slug' (slug 6-50 of a-z 0-9 -)")
    if meta.get("enable_internet") is not False:
        raise UsageError("kernel must run with enable_internet = false (code competitions score offline)")
    if meta.get("kernel_type") != "notebook" or not meta.get("code_file", "").endswith(".ipynb"):
        raise UsageError("kernel must be a notebook (.ipynb code_file)")
    if not meta.get("competition_sources") or not meta.get("dataset_sources"):
        raise UsageError("kernel needs competition_sources and dataset_sources (the bundle)")
    if meta.get("enable_tpu"):
        raise UsageError("enable_tpu: QUEST is scored from CPU or GPU notebooks only")


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


def package(cfg, run_names: list[str], out: str | None = None, upload: bool = False, client=None) -> list[Path]:
    run_dirs = [runs.resolve(n, cfg) for n in (run_names or [str(cfg.run_dir)])]
    for d in run_dirs:
        if not runs.finished_folds(d):
            raise MissingArtifact(f"{d}: no finished fold to bundle; run `python run.py train` first")
    out_dir = cfg.path(out or str(Path(cfg.output.dir) / "kaggle-bundle"))
    _replaceable(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    root = config_lib.ROOT
    code = [f for f in sorted((root / "pipeline").glob("*.py")) if f.stem not in DEV_MODULES]
    for src in code + [root / "run.py", root / "requirements.txt"]:
        _copy(src, staging / src.relative_to(root))
    for src in sorted((root / "configs").glob("*.toml")):
        _copy(src, staging / "configs" / src.name)
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
    files.write_json(target.manifest, {"runs": [d.name for d in run_dirs], **blend})
    files.write_json(target.postprocess, pp)
    wheels.collect(trained_versions(run_dirs), cfg.kaggle.wheels, wheels.read_image(cfg.path(cfg.kaggle.image)),
                   cfg.path(cfg.kaggle.wheel_dir), target.wheels)
    meta = dataset_metadata(cfg.kaggle.dataset or f"{PLACEHOLDER_OWNER}/quest-bundle", "QUEST pipeline bundle")
    validate_dataset_metadata(meta)
    files.write_json(target.metadata, meta)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    log.info("bundle %s: %d run(s), %.1f MiB", out_dir, len(run_dirs), size / 2**20)
    if upload:
        if not cfg.kaggle.dataset:
            raise UsageError("set kaggle.dataset = 'owner/slug' to upload the bundle")
        log.info("dataset %s: %s", cfg.kaggle.dataset, kaggle.upload_dataset(out_dir, client=client))
    return [out_dir]


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


def kernel(cfg, out: str | None = None, push: bool = False, client=None, wait: float = 900) -> list[Path]:
    """The notebook + kernel-metadata.json; with push, wait (bounded) for the bundle dataset, then push."""
    out_dir = cfg.path(out or str(Path(cfg.output.dir) / "kaggle-kernel"))
    target = layout.Kernel(out_dir)
    _copy(layout.Kernel.SOURCE, target.notebook)
    meta = kernel_metadata(cfg, target.notebook.name)
    validate_kernel_metadata(meta)
    paths = [target.notebook, files.write_json(target.metadata, meta)]
    if push:
        if not cfg.kaggle.kernel or not cfg.kaggle.dataset:
            raise UsageError("set kaggle.kernel and kaggle.dataset ('owner/slug') to push the kernel")
        kaggle.wait_dataset_ready(cfg.kaggle.dataset, client=client, timeout=wait)
        pushed = kaggle.push_kernel(out_dir, client=client)
        log.info("kernel %s version %s pushed: %s; when it has run, submit it with "
                 "`python run.py submit --version %s`", cfg.kaggle.kernel, pushed["version"], pushed["url"],
                 pushed["version"])
    return paths


def submit(cfg, version: int, message: str = "", client=None) -> list[Path]:
    """Submit version `version` of kaggle.kernel (its submission.csv) to the competition."""
    if not cfg.kaggle.kernel:
        raise UsageError("set kaggle.kernel = 'owner/slug' (the pushed inference kernel) to submit")
    if version < 1:
        raise UsageError(f"--version {version}: expected the kernel version number `kernel --push` printed (>= 1)")
    answer = kaggle.submit_kernel(cfg.kaggle.competition, cfg.kaggle.kernel, version,
                                  message or f"{cfg.kaggle.kernel} v{version}", client=client)
    log.info("%s version %d -> %s: %s", cfg.kaggle.kernel, version, cfg.kaggle.competition, answer)
    return []
