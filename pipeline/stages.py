"""Stage functions: each takes the config and returns the paths it wrote (or found current)."""
from __future__ import annotations

import logging
from pathlib import Path

from . import data, encode as encode_lib, folds as folds_lib, kaggle
from .schema import TEXT_COLUMNS

log = logging.getLogger(__name__)


def download(cfg, client=None, force: bool = False) -> list[Path]:
    paths = kaggle.download_competition(cfg, client=client, force=force)
    if cfg.kaggle.model:
        paths += kaggle.download_model(cfg, client=client, force=force)
    return paths


def folds(cfg, force: bool = False) -> list[Path]:
    return folds_lib.make(cfg, data.load(cfg, "train"), force=force)


def encode(cfg) -> list[Path]:
    tok, info = encode_lib.for_model(cfg)
    return [encode_lib.encode_cached(cfg.encode, cfg.cache_dir, data.load(cfg, split), split, tok,
                                     info.uses_segments)[1] for split in ("train", "test")]


def demo_inputs(cfg, n_train: int = 800, n_test: int = 120) -> list[Path]:
    """Generated competition files and a tiny random BERT directory, where the demo config points."""
    from . import synth, tinymodel  # development-only modules: not in the Kaggle bundle

    paths = []
    if not kaggle.competition_files_valid(cfg):
        paths += list(synth.write(cfg.path(cfg.data.dir), n_train=n_train, n_test=n_test, seed=0).values())
    train = data.load(cfg, "train")
    texts = [t for col in TEXT_COLUMNS for t in train[col].tolist()]
    paths.append(tinymodel.make(cfg.path(cfg.model.path), texts, max_positions=max(512, cfg.encode.max_len)))
    return paths


def pretrain(cfg) -> list[Path]:
    from . import pretrain as pretrain_lib

    return pretrain_lib.pretrain(cfg)


def train(cfg) -> list[Path]:
    from . import train as train_lib

    return train_lib.train(cfg)


def pseudo(cfg, teachers: list[str] | None = None, input_csv: str | None = None) -> list[Path]:
    from . import pseudo as pseudo_lib

    return pseudo_lib.make(cfg, teachers or [], input_csv)


def predict(cfg, input_csv: str | None = None) -> list[Path]:
    from . import predict as predict_lib

    return predict_lib.predict(cfg, input_csv)


def validate(cfg, compare: list[str] | None = None) -> list[Path]:
    from . import validate as validate_lib

    return validate_lib.validate(cfg, compare)


def ensemble(cfg, runs: list[str] | None = None) -> list[Path]:
    """`predict` for each member whose test predictions are missing or stale, then the blend."""
    from . import ensemble as ensemble_lib, predict as predict_lib, runs as runs_lib

    for name in runs or cfg.ensemble.runs or [str(cfg.run_dir)]:
        predict_lib.predict_run(runs_lib.resolve(name, cfg), cfg.data_file("test_file"), cache_dir=cfg.cache_dir)
    return ensemble_lib.ensemble(cfg, runs)


def run_all(cfg) -> list[Path]:
    """Every stage in order; each one returns at once when its outputs are current."""
    paths = []
    for step in (folds, encode, train, validate, predict, ensemble):
        log.info("== %s", step.__name__)
        paths += step(cfg)
    return paths


def demo(cfg) -> list[Path]:
    """Generated data + tiny BERT, then `all`, then a summary a newcomer can read."""
    from . import files

    paths = demo_inputs(cfg) + run_all(cfg)
    from . import layout

    summary = files.read_json(layout.Run(cfg.run_dir).summary)
    ens = files.read_json(layout.ensemble(cfg).summary)
    print("\n== demo summary ==")
    for k, v in summary["per_fold"].items():
        print(f"fold {k}: OOF Spearman {v:.4f}")
    print(f"mean of folds {summary['mean_fold_spearman']:.4f}; pooled OOF Spearman {summary['oof_spearman']:.4f}; "
          f"post-processed (nested) {ens['postprocess']['after_nested']:.4f}, "
          f"with the keep decision nested too {ens['postprocess']['after_honest']:.4f}")
    print(f"submission: {cfg.submission_file}")
    print(f"report: {layout.Run(cfg.run_dir).report_md}")
    return paths


def package(cfg, runs: list[str] | None = None, out: str | None = None, upload: bool = False, client=None,
            code_only: bool = False) -> list[Path]:
    from . import bundle

    if code_only:
        return bundle.package_code(cfg, out=out, upload=upload, client=client)
    return bundle.package(cfg, runs or [], out=out, upload=upload, client=client)


def kernel(cfg, out: str | None = None, push: bool = False, client=None, wait: float = 900,
           train: bool = False) -> list[Path]:
    from . import kernels

    make = kernels.train_kernel if train else kernels.kernel
    return make(cfg, out=out, push=push, client=client, wait=wait)


def collect(cfg, kernels: list[str] | None = None, wait: float = 0, client=None) -> list[Path]:
    from . import collect as collect_lib

    return collect_lib.collect(cfg, kernels, wait=wait, client=client)


def submit(cfg, version: int, message: str = "", client=None) -> list[Path]:
    from . import kernels

    return kernels.submit(cfg, version, message, client=client)
