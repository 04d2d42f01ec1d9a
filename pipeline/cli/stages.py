"""Stage functions: each takes the config and returns the paths it wrote (or found current)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from pipeline.core import files, layout
from pipeline.core.columns import TEXT_COLUMNS
from pipeline.data import folds as folds_lib, tables
from pipeline.evaluate import postprocess, scores
from pipeline.kaggle import api
from pipeline.text import encode as encode_lib

log = logging.getLogger(__name__)


def download(cfg, client=None, force: bool = False) -> list[Path]:
    paths = api.download_competition(cfg, client=client, force=force)
    if cfg.kaggle.model:
        paths += api.download_model(cfg, client=client, force=force)
    return paths


def folds(cfg, force: bool = False) -> list[Path]:
    return folds_lib.make(cfg, tables.load(cfg, "train"), force=force)


def encode(cfg) -> list[Path]:
    encoder = encode_lib.Encoder.for_model(cfg)
    return [encoder.cached(tables.load(cfg, split), split)[1] for split in ("train", "test")]


def demo_inputs(cfg, n_train: int = 800, n_test: int = 120) -> list[Path]:
    """Generated competition files and a tiny random BERT directory, where the demo config points."""
    from pipeline.dev import synth, tinymodel  # development-only modules: not in the Kaggle bundle

    paths = []
    if not api.competition_files_valid(cfg):
        paths += list(synth.write(cfg.path(cfg.data.dir), n_train=n_train, n_test=n_test, seed=0).values())
    train = tables.load(cfg, "train")
    texts = [t for col in TEXT_COLUMNS for t in train[col].tolist()]
    paths.append(tinymodel.make(cfg.path(cfg.model.path), texts, max_positions=max(512, cfg.encode.max_len)))
    return paths


def pretrain(cfg) -> list[Path]:
    from pipeline.train import pretrain as pretrain_lib

    return pretrain_lib.pretrain(cfg)


def train(cfg) -> list[Path]:
    from pipeline.train import kfold as train_lib

    return train_lib.train(cfg)


def pseudo(cfg, teachers: list[str] | None = None, input_csv: str | None = None) -> list[Path]:
    from pipeline.train import pseudo as pseudo_lib

    return pseudo_lib.make(cfg, teachers or [], input_csv)


def predict(cfg, input_csv: str | None = None) -> list[Path]:
    from pipeline.run import predict as predict_lib

    with _holding([str(cfg.run_dir)], cfg):
        return predict_lib.predict(cfg, input_csv)


def validate(cfg, compare: list[str] | None = None) -> list[Path]:
    from pipeline.evaluate import validate as validate_lib

    return validate_lib.validate(cfg, compare)


def ensemble(cfg, runs: list[str] | None = None) -> list[Path]:
    """`predict` for each member whose test predictions are missing or stale, then the blend."""
    from pipeline.evaluate import ensemble as ensemble_lib
    from pipeline.run import predict as predict_lib

    with _holding(runs or cfg.ensemble.runs or [str(cfg.run_dir)], cfg) as members:
        for run in members:
            predict_lib.predict_run(run, cfg.data_file("test_file"), cache_dir=cfg.cache_dir)
        return ensemble_lib.ensemble(cfg, runs)


@contextlib.contextmanager
def _holding(run_names: list[str], cfg):
    """The runs' locks, held while a stage writes predictions into them and reads their folds: a run that `train`
    or `collect` is writing is refused in one line, never read half made. Yields the runs, resolved once."""
    from pipeline.run.rundir import Run

    own = str(cfg.run_dir)
    runs = {run.root: run for run in (Run.of(cfg) if n == own else Run.resolve(n, cfg) for n in run_names)}
    with contextlib.ExitStack() as held:
        for run in runs.values():
            if run.root.is_dir():
                held.enter_context(run.lock())
        yield list(runs.values())


def run_all(cfg) -> list[Path]:
    """Every stage in order; each one returns at once when its outputs are current."""
    paths = []
    for step in (folds, encode, train, validate, predict, ensemble):
        log.info("== %s", step.__name__)
        paths += step(cfg)
    return paths


def demo(cfg) -> list[Path]:
    """Generated data + tiny BERT, then `all`, then a summary a newcomer can read."""
    paths = demo_inputs(cfg) + run_all(cfg)
    summary = files.read_json(layout.RunPaths(cfg.run_dir).summary)
    ens = files.read_json(layout.ensemble(cfg).summary)
    print("\n== demo summary ==")
    for k, v in summary["per_fold"].items():
        print(f"fold {k}: OOF Spearman {v:.4f}")
    pp = ens["postprocess"]
    print(f"mean of folds {summary['mean_fold_spearman']:.4f}; OOF Spearman (all rows) {summary['oof_spearman']:.4f}")
    epochs = files.read_json(layout.RunPaths(cfg.run_dir).report_json)["epochs"]
    last, honest = (f"{v:.4f}" if v is not None else "n/a" for v in (epochs["last"], epochs["other_folds"]))
    kept = scores.KEPT_EPOCH[cfg.train.keep][0]
    print(f"OOF at the kept epochs {summary['oof_spearman']:.4f} (train.keep = {cfg.train.keep}: {kept}), at the "
          f"last epochs {last}, at the epochs the other folds choose {honest} (honest)")
    print(f"on held sets of {cfg.postprocess.eval_rows or 'a fold'} rows: untouched {pp['before']:.4f} -> "
          f"post-processed, nested {pp['after_nested']:.4f}; keep decision nested too (honest) "
          f"{pp['after_honest']:.4f} ({postprocess.gain_text(pp, detail=False)})  (what each score means: README.md, "
          "'What each score means')")
    print(f"submission: {cfg.submission_file}")
    print(f"report: {layout.RunPaths(cfg.run_dir).report_md}")
    return paths


def package(cfg, runs: list[str] | None = None, out: str | None = None, upload: bool = False, client=None,
            code_only: bool = False) -> list[Path]:
    from pipeline.kaggle import bundle

    if code_only:
        return bundle.package_code(cfg, out=out, upload=upload, client=client)
    return bundle.package(cfg, runs or [], out=out, upload=upload, client=client)


def kernel(cfg, out: str | None = None, push: bool = False, client=None, wait: float = 900,
           train: bool = False) -> list[Path]:
    from pipeline.kaggle import kernels

    make = kernels.train_kernel if train else kernels.kernel
    return make(cfg, out=out, push=push, client=client, wait=wait)


def collect(cfg, kernels: list[str] | None = None, wait: float = 0, client=None) -> list[Path]:
    from pipeline.kaggle import collect as collect_lib

    return collect_lib.collect(cfg, kernels, wait=wait, client=client)


def submit(cfg, version: int, message: str = "", client=None) -> list[Path]:
    from pipeline.kaggle import kernels

    return kernels.submit(cfg, version, message, client=client)
