"""Training on a Kaggle kernel (GPU, internet off): what notebooks/kaggle_train.ipynb calls.

Inputs are found by their contents under /kaggle/input, as the inference kernel finds its own (environment.py):
the pipeline's code dataset (`package --code-only`, or an inference bundle: both carry the code, the wheels
and the split in folds/), the competition files and the backbone (its dataset or Kaggle Model). The kernel
installs the wheels, then runs `train` for the folds it was pushed with, with the config it was pushed with
(`kernel --train` writes both into the notebook), on the split the code dataset carries. The run directory
is left under /kaggle/working/quest/runs/<run>/ for `python run.py collect`.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.core import layout
from pipeline.kernel import environment
from pipeline.kernel.environment import CACHE, KAGGLE_INPUT, install_wheels

TRAIN_FILES = ("train.csv", "test.csv", "sample_submission.csv")


def main(config_text: str | None, folds: list[int], root: str | Path = KAGGLE_INPUT,
         work_dir: str | Path | None = None) -> Path:
    """The whole training kernel: find inputs, install wheels, train `folds`; returns the run directory."""
    if not config_text:
        raise environment.InputsNotFound("no CONFIG in the parameters cell: push this notebook with "
                                        "`python run.py kernel --train --folds ...`, which fills it in")
    root = Path(root)
    import tomllib

    competition = tomllib.loads(config_text).get("kaggle", {}).get("competition")
    code, data_dir = environment.find_bundle_and_data(root, TRAIN_FILES, "python run.py package --code-only",
                                                      competition=competition)
    environment.require(root, [("the split (folds/folds.csv in the code dataset; package it again after "
                               "`python run.py folds`)", layout.Bundle(code).folds.parent, layout.Bundle(code).folds.name)])
    print(f"code: {code}\ncompetition data: {data_dir}", flush=True)
    print("installed from the bundle:", install_wheels(code) or "nothing (the image has every version needed)")
    from pipeline.core import config, files  # after the wheels: these import the bundled versions
    from pipeline.modeling import device
    from pipeline.train import kfold

    pushed = config.from_toml_text(config_text)
    model_dir = environment.find_model(root, Path(pushed.model.path).name, weights=not pushed.model.random_init)
    environment.require(root, [("the backbone (a model folder: config.json + weights; attach its Kaggle Model or "
                               "dataset, kaggle.model)", model_dir, "config.json")])
    work = environment.work_dir(work_dir)
    cfg = config.from_toml_text(config_text, [
        f"data.dir={data_dir}", f"model.path={model_dir}", f"output.dir={layout.KernelWork(work).output_dir}",
        f"folds.file={layout.Bundle(code).folds}", f"encode.cache_dir={CACHE}", f"train.folds={list(folds)}"])
    print(f"backbone: {model_dir}\ndevice: {device.describe()}\ntraining folds {list(folds)} of run {cfg.run_name}",
          flush=True)
    kfold.train(cfg)
    for k in folds:
        m = files.read_json(layout.RunPaths(cfg.run_dir).fold(k).metrics)
        print(f"fold {k}: val Spearman {m['val_spearman']:.4f} (best epoch {m['best_epoch']}, {m['train_seconds']:.0f}s)")
    return cfg.run_dir
