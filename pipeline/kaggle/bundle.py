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
from pathlib import Path

from pipeline.core import config as config_lib, files, layout, manifest, provenance
from pipeline.core.errors import MissingArtifact, UsageError
from pipeline.kaggle import api, wheels
from pipeline.run.rundir import Run

log = logging.getLogger(__name__)
# What inference needs of a run and of each finished fold (layout.RunPaths / layout.Fold attributes).
RUN_FILES = ("config", "info", "model", "postprocess")
FOLD_FILES = ("weights", "coding", "metrics", "finished")
# Kaggle slugs: 6-50 of a-z 0-9 and single hyphens inside (the title <-> slug round trip loses a double hyphen).
_SLUG = re.compile(r"^[A-Za-z0-9_-]+/(?=[a-z0-9-]{6,50}$)[a-z0-9]+(-[a-z0-9]+)*$")
# The packages a kernel (and run.py on Kaggle) imports; pipeline/dev (generated data, tiny test models, the
# exploration notebook's plots) stays home.
SHIPPED_PACKAGES = ("core", "data", "text", "modeling", "run", "train", "evaluate", "kernel", "kaggle", "cli")
PLACEHOLDER_OWNER = "your-kaggle-username"


def dataset_metadata(handle: str, title: str) -> dict:
    return {"title": title, "id": handle, "licenses": [{"name": "CC0-1.0"}]}


def validate_dataset_metadata(meta: dict):
    if not _SLUG.match(meta.get("id", "")):
        raise UsageError(f"dataset id {meta.get('id')!r}: expected 'owner/slug' (slug: 6-50 of a-z 0-9, words joined by single hyphens)")
    if not 6 <= len(meta.get("title", "")) <= 50:
        raise UsageError(f"dataset title {meta.get('title')!r}: Kaggle wants 6-50 characters")
    if not meta.get("licenses"):
        raise UsageError("dataset metadata needs a licenses list")


def trained_versions(members: list[Run]) -> dict[str, str]:
    """keras / keras-hub versions the runs were trained with (run.json), which the kernel must run."""
    found: dict[str, set] = {d: set() for d in wheels.TRAINED_WITH}
    for run in members:
        for recorded in fold_versions(run):
            for dist in wheels.TRAINED_WITH:
                found[dist].add(recorded[dist])
    mixed = {d: sorted(v) for d, v in found.items() if len(v) > 1}
    if mixed:
        raise UsageError(f"the runs were trained with different library versions {mixed}; bundle them separately")
    return {d: v.pop() for d, v in found.items()}


BUNDLE_FORMAT = manifest.FORMAT  # in every bundle.json `package` writes


def is_bundle(folder: Path) -> bool:
    """Whether folder holds a bundle `package` wrote: its bundle.json carries the pipeline's mark (a file named
    bundle.json alone is anybody's)."""
    manifest = layout.Bundle(folder).manifest
    try:
        return manifest.is_file() and not manifest.is_symlink() and \
            files.read_json(manifest).get("format") == BUNDLE_FORMAT["format"]
    except (ValueError, AttributeError):
        return False


def fold_versions(run: Run) -> list[dict]:
    """The library versions each finished fold was trained with (its metrics.json; run.json's for folds from
    before folds recorded them, since a command that trained no fold may have rewritten it)."""
    fallback = run.read_info().versions or provenance.library_versions()
    return [files.read_json(run.fold(k).metrics).get("provenance", {}).get("versions") or fallback
            for k in run.finished_folds()]


def _replaceable(out_dir: Path):
    """package writes only where nothing or an earlier bundle is: never over a folder it did not create."""
    files.refuse_link(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not is_bundle(out_dir):
        raise UsageError(f"--out {out_dir} exists and is not a bundle written by `package` (no {layout.MANIFEST_NAME} "
                         f"with format {BUNDLE_FORMAT['format']!r}); choose an empty or new folder")


def _stage_code(cfg, staging: Path, versions: dict[str, str]):
    """The code, configs, the split and the wheels: what every kernel of the pipeline runs."""
    root = config_lib.ROOT
    code = [root / "pipeline" / "__init__.py"]
    code += [f for pkg in SHIPPED_PACKAGES for f in sorted((root / "pipeline" / pkg).glob("*.py"))]
    for src in code + [root / "run.py", root / "requirements.txt"]:
        files.copy_file(src, staging / src.relative_to(root))
    for src in sorted((root / "configs").glob("*.toml")):
        files.copy_file(src, staging / "configs" / src.name)
    if not cfg.folds_file.is_file():
        raise MissingArtifact(f"{cfg.folds_file} not found; run `python run.py folds` first (kernels train on this split)")
    target = layout.Bundle(staging)
    for src, dst in ((cfg.folds_file, target.folds), (layout.folds_meta(cfg.folds_file), layout.folds_meta(target.folds))):
        files.copy_file(src, dst)
    wheels.collect(dict(versions), cfg.kaggle.wheels, wheels.read_image(cfg.path(cfg.kaggle.image)),
                   cfg.path(cfg.kaggle.wheel_dir), target.wheels)


def _metadata(staging: Path, handle: str):
    handle = handle or f"{PLACEHOLDER_OWNER}/quest-bundle"
    meta = dataset_metadata(handle, dataset_title(handle))
    validate_dataset_metadata(meta)
    files.write_json(layout.Bundle(staging).metadata, meta)


def _publish(cfg, out_dir: Path, handle: str, upload: bool, client) -> Path:
    """The finished folder, uploaded when asked; the version made is recorded for `kernel --push` to wait for."""
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    log.info("bundle %s: %.1f MiB", out_dir, size / 2**20)
    if upload:
        if not handle:
            raise UsageError("set kaggle.dataset (or kaggle.code_dataset for --code-only) = 'owner/slug' to upload")
        action, version = api.upload_dataset(out_dir, client=client)
        files.update_json(layout.uploaded_datasets(cfg), handle, {"version": version, "folder": str(out_dir)})
        log.info("dataset %s: %s, version %d (Kaggle processes it for a few minutes; `kernel --push` waits for it)",
                 handle, action, version)
    return out_dir


def uploaded_version(cfg, handle: str) -> int:
    """The version of `handle` the last `package --upload` from here made (0: none recorded)."""
    record = layout.uploaded_datasets(cfg)
    return int((files.read_json(record) if record.is_file() else {}).get(handle, {}).get("version", 0))


def dataset_title(handle: str) -> str:
    """The dataset's title, derived from its slug: Kaggle refuses a title already in use by another of your
    datasets, and turns the title back into the slug (so the two must agree)."""
    return handle.split("/")[-1].replace("-", " ").title()


def _out_dir(cfg, out: str | None, code_only: bool) -> Path:
    out_dir = cfg.path(out) if out else layout.bundle_dir(cfg, code_only)
    _replaceable(out_dir)
    return out_dir


def _staged(out_dir: Path):
    """The bundle is written whole under a staging name, then renamed into place."""
    return files.staged_dir(out_dir)


def package(cfg, run_names: list[str], out: str | None = None, upload: bool = False, client=None) -> list[Path]:
    members = [Run.resolve(n, cfg) for n in (run_names or [str(cfg.run_dir)])]
    for run in members:
        if not run.finished_folds():
            raise MissingArtifact(f"{run.root}: no finished fold to bundle; run `python run.py train` first")
    out_dir = _out_dir(cfg, out, code_only=False)
    versions = trained_versions(members)
    with _staged(out_dir) as staging:
        _stage_code(cfg, staging, versions)
        target = layout.Bundle(staging)
        for run in members:
            dst = target.run(run.name)
            for attr in RUN_FILES:
                if getattr(run, attr).is_file() or getattr(run, attr).is_symlink():
                    files.copy_file(getattr(run, attr), getattr(dst, attr), within=run.root)
            files.refuse_link(run.tokenizer, within=run.root)
            files.copy_tree(run.tokenizer, dst.tokenizer)
            for k in run.finished_folds():
                run.verify_weights(k)
                converted = run.weights_without_optimizer(k, dst.fold(k).weights)
                for attr in FOLD_FILES:
                    if not (converted and attr in ("weights", "finished")):
                        files.copy_file(getattr(run.fold(k), attr), getattr(dst.fold(k), attr), within=run.root)
                if converted:
                    files.write_json(dst.fold(k).finished, converted)
                    log.info("%s fold %d: weights saved with the optimizer's state (an older fold); bundled "
                             "without it", run.name, k)
        blend, pp = _blend_for(cfg, members)
        files.write_json(target.manifest, {**BUNDLE_FORMAT, "kind": "inference", "competition": cfg.kaggle.competition, "runs": [r.name for r in members], **blend,
                                           "git_commit": provenance.git_commit(), "versions": versions,
                                           "time_budget": cfg.kaggle.time_budget})
        files.write_json(target.postprocess, pp)
        _metadata(staging, cfg.kaggle.dataset)
    return [_publish(cfg, out_dir, cfg.kaggle.dataset, upload, client)]


def package_code(cfg, out: str | None = None, upload: bool = False, client=None) -> list[Path]:
    """`package --code-only`: the code, the split and the wheels (keras / keras-hub as installed here), for
    training kernels; no runs."""
    out_dir = _out_dir(cfg, out, code_only=True)
    versions = {d: v for d, v in provenance.library_versions().items() if d in wheels.TRAINED_WITH}
    with _staged(out_dir) as staging:
        _stage_code(cfg, staging, versions)
        files.write_json(layout.Bundle(staging).manifest, {**BUNDLE_FORMAT, "kind": "code", "competition": cfg.kaggle.competition, "runs": [],
                                                           "git_commit": provenance.git_commit(), "versions": versions})
        _metadata(staging, code_dataset(cfg))
    return [_publish(cfg, out_dir, code_dataset(cfg), upload, client)]


def code_dataset(cfg) -> str:
    """The dataset training kernels take their code from: kaggle.code_dataset, else the inference bundle's."""
    return cfg.kaggle.code_dataset or cfg.kaggle.dataset


def _blend_for(cfg, members: list[Run]) -> tuple[dict, dict]:
    """The fitted ensemble over exactly these runs if there is one, else an equal mean without post-processing.
    An ensemble whose files are not all the ones its summary recorded (a kill mid-write, another writer), or that
    was fitted on other folds than the runs now have, is refused: run `ensemble` again."""
    ens = layout.ensemble(cfg)
    if ens.weights.is_file():
        w = files.read_json(ens.weights)
        if w["runs"] == [r.name for r in members]:
            summary = files.read_json(ens.summary) if ens.summary.is_file() else {}
            again = f"run `python run.py ensemble --runs {' '.join(r.name for r in members)}` again, then package"
            made = summary.get("outputs") or {}
            if str(ens.weights) not in made or not files.outputs_intact(made):
                raise UsageError(f"the ensemble in {ens.root} is incomplete or was changed after it was written (its "
                                 f"files differ from those {ens.summary.name} recorded); {again}")
            now = {r.name: r.finished_folds() for r in members}
            if summary.get("folds") != now:
                raise UsageError(f"the ensemble in {ens.root} was fitted on folds {summary.get('folds')}, the runs now "
                                 f"have {now}: its weights and post-processing are stale; {again}")
            return manifest.blend([r.name for r in members], w["method"], w["weights"]), files.read_json(ens.postprocess)
    log.warning("no ensemble fitted over %s: the bundle blends them with equal weights and no post-processing",
                [r.name for r in members])
    return manifest.blend([r.name for r in members], "mean", [1.0 / len(members)] * len(members)), {}
