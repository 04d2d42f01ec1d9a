"""Where every artifact lives. Stages talk through these files; no other module spells their names.

output/                            (cfg.output.dir)
  folds.csv folds.json cache/ submission.csv
  runs/<run>/                      RunPaths (run.rundir.Run): one training run
    config.toml run.json model.json tokenizer/ oof.csv summary.json postprocess.json
    fold<k>/                       Fold: model.weights.h5 targets.json oof.csv test.csv history.csv metrics.json
                                   finished.json
    probes/fold<k>.json            step-limited throughput probes (never a finished fold)
    report/                        report.json report.md *.png
    predictions/<csv stem>.csv     `predict` outputs (+ .json stamps)
  ensembles/<name>/                Ensemble: config.toml weights.json oof.csv test.csv postprocess.json summary.json
  reports/compare.md
  pseudo/<name>/                   Pseudo: rows.csv fold<k>.csv pseudo.json (per-fold soft labels, leak-free)
  pretrained/<name>/               Pretrained: a model directory (keras-hub preset + tokenizer) + pretrain.json
  pretrained/<name>.checkpoint/    its resumable state while pre-training (state.json, step-<step>.npz)
  kaggle-train/<slug>/ pushed.json collected/<owner__slug>/   training kernels (Kernel), their downloaded output
A Kaggle bundle (Bundle) holds bundle.json, folds/, wheels/, postprocess.json and runs/<run>/ laid out as above.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UsageError

MANIFEST_NAME = "bundle.json"
TEMP_MARK = ".quest-tmp-"  # in the name of every temp file and staging folder, and only there: what may be swept
SUBMISSION_NAME = "submission.csv"  # what Kaggle scores, in a kernel's working directory
PRETRAIN_MANIFEST = "pretrain.json"
_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
INFERENCE_NOTEBOOK, TRAIN_NOTEBOOK = _NOTEBOOKS / "kaggle_inference.ipynb", _NOTEBOOKS / "kaggle_train.ipynb"


FOLD_NAME = re.compile(r"fold(0|[1-9][0-9]*)")  # fold0, fold1 ...: a fold's folder, nothing else
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")  # a folder name that stays where it is put


def plain(name: str, where: str) -> str:
    """A name that becomes a folder (a run, an ensemble, a kernel): letters, digits, '-', '_', '.', not hidden,
    no separator, so it never reaches outside the folder it is put in, whoever wrote it (config, CLI, a file)."""
    if not isinstance(name, str) or not PLAIN_NAME.match(name):
        raise UsageError(f"{where} {name!r}: expected a plain name (letters, digits, '-', '_', '.'; no path "
                         "separators, not starting with '.'), since it names a folder")
    return name


@dataclass(frozen=True)
class Fold:
    root: Path

    weights = property(lambda self: self.root / "model.weights.h5")
    oof = property(lambda self: self.root / "oof.csv")
    test = property(lambda self: self.root / "test.csv")
    history = property(lambda self: self.root / "history.csv")
    metrics = property(lambda self: self.root / "metrics.json")
    coding = property(lambda self: self.root / "targets.json")  # target coding fitted on the fold's training rows
    # Every epoch's out-of-fold predictions (qa_id, preds: epochs x rows x targets): scores at the last epoch and at
    # an epoch chosen on the other folds, beside the kept one (oof.csv)
    epoch_oof = property(lambda self: self.root / "oof_epochs.npz")
    # Written last, holding the hashes later stages check (weights, test file): the fold is finished.
    finished = property(lambda self: self.root / "finished.json")


@dataclass(frozen=True)
class RunPaths:
    """Where a run's files are; run.rundir.Run adds what a run knows and checks."""
    root: Path

    def __post_init__(self):  # a path, or another run's paths
        object.__setattr__(self, "root", Path(self.root.root if isinstance(self.root, RunPaths) else self.root))

    name = property(lambda self: self.root.name)
    config = property(lambda self: self.root / "config.toml")
    info = property(lambda self: self.root / "run.json")
    model = property(lambda self: self.root / "model.json")  # QuestModel description: backbone + head settings
    tokenizer = property(lambda self: self.root / "tokenizer")
    oof = property(lambda self: self.root / "oof.csv")
    summary = property(lambda self: self.root / "summary.json")
    postprocess = property(lambda self: self.root / "postprocess.json")
    report_dir = property(lambda self: self.root / "report")
    report_json = property(lambda self: self.report_dir / "report.json")
    report_md = property(lambda self: self.report_dir / "report.md")
    predictions_dir = property(lambda self: self.root / "predictions")
    lock_file = property(lambda self: self.root / ".lock")  # names the process training the run
    cache = property(lambda self: self.root / "cache")  # encodings of `predict` when no cache folder is given

    def fold(self, k: int) -> Fold:
        return Fold(self.root / f"fold{k}")

    def probe(self, k: int) -> Path:
        return self.root / "probes" / f"fold{k}.json"

    def prediction(self, csv_path: Path, out_dir: Path | None = None) -> Path:
        """`predict`'s output for an input CSV."""
        return Path(out_dir or self.predictions_dir) / f"{Path(csv_path).stem}.csv"

    def prediction_stamp(self, csv_path: Path, out_dir: Path | None = None) -> Path:
        """Written after the prediction: what it was made from (files.is_current)."""
        return self.prediction(csv_path, out_dir).with_suffix(".json")

    def plot(self, name: str) -> Path:
        return self.report_dir / f"{name}.png"

    def finished_folds(self) -> list[int]:
        """k of every fold<k>/ holding finished.json (a user's fold0.bak/ or notes are no fold)."""
        names = (FOLD_NAME.fullmatch(p.parent.name) for p in self.root.glob("fold*/finished.json"))
        return sorted(int(m[1]) for m in names if m)


@dataclass(frozen=True)
class Ensemble:
    root: Path

    config = property(lambda self: self.root / "config.toml")
    weights = property(lambda self: self.root / "weights.json")
    oof = property(lambda self: self.root / "oof.csv")
    test = property(lambda self: self.root / "test.csv")
    postprocess = property(lambda self: self.root / "postprocess.json")
    submission = property(lambda self: self.root / SUBMISSION_NAME)  # its own; output.submission is a copy
    summary = property(lambda self: self.root / "summary.json")  # written last: its stamp and outputs' sha256


def submission_record(submission: Path) -> Path:
    """Beside output.submission: which ensemble wrote it (several ensembles share the one file)."""
    return Path(submission).with_suffix(".json")


@dataclass(frozen=True)
class Pretrained:
    """A masked-LM pre-trained model directory; `model.path` can point at root. Written whole under staging and
    renamed; the checkpoint folder beside it holds the resumable state until then."""
    root: Path

    manifest = property(lambda self: self.root / PRETRAIN_MANIFEST)  # also what a run records of its backbone
    staging = property(lambda self: staging(self.root))
    checkpoint_dir = property(lambda self: self.root.with_name(self.root.name + ".checkpoint"))
    state = property(lambda self: self.checkpoint_dir / "state.json")  # written last: names the complete step
    lock_file = property(lambda self: self.checkpoint_dir / ".lock")  # one pre-training process at a time

    def checkpoint(self, step: int) -> Path:
        """Every variable of the masked-LM model (random-generator states included) and of its optimizer."""
        return self.checkpoint_dir / f"step-{step}.npz"


@dataclass(frozen=True)
class Pseudo:
    """Pseudo-labels: unlabeled rows and, per fold k, labels from the teachers' fold-k models only."""
    root: Path

    rows = property(lambda self: self.root / "rows.csv")
    manifest = property(lambda self: self.root / "pseudo.json")  # written last; its stamp marks the set current

    def fold(self, k: int) -> Path:
        return self.root / f"fold{k}.csv"


@dataclass(frozen=True)
class Bundle:
    root: Path

    manifest = property(lambda self: self.root / MANIFEST_NAME)  # also how a kernel finds the bundle
    folds = property(lambda self: self.root / "folds" / "folds.csv")  # the split training kernels train on
    postprocess = property(lambda self: self.root / "postprocess.json")
    wheels = property(lambda self: self.root / "wheels")
    metadata = property(lambda self: self.root / "dataset-metadata.json")

    def run(self, name: str) -> RunPaths:
        return RunPaths(self.root / "runs" / plain(name, f"run name in {self.manifest}"))



@dataclass(frozen=True)
class Kernel:
    """A kernel folder for `kaggle kernels push`: a notebook and its metadata (inference, or with train a
    training kernel)."""
    root: Path
    train: bool = False

    source = property(lambda self: TRAIN_NOTEBOOK if self.train else INFERENCE_NOTEBOOK)  # in notebooks/
    notebook = property(lambda self: self.root / self.source.name)
    metadata = property(lambda self: self.root / "kernel-metadata.json")
    mark = property(lambda self: self.root / ".quest-kernel.json")  # `kernel` wrote this folder (never pushed)


@dataclass(frozen=True)
class KernelWork:
    """A kernel's working directory (its output): the submission and per-run predictions of an inference
    kernel; the output folder of a training kernel, whose runs/<run>/ `collect` merges."""
    root: Path

    submission = property(lambda self: self.root / SUBMISSION_NAME)
    output_dir = property(lambda self: self.root / "quest")  # a training kernel's output.dir

    def predictions(self, run_name: str) -> Path:
        return self.root / "predictions" / plain(run_name, "run name")

    def run(self, run_name: str) -> RunPaths:
        return RunPaths(self.output_dir / "runs" / plain(run_name, "run name"))


def training_kernels(cfg) -> Path:
    """output/kaggle-train/: one folder per pushed training kernel, pushed.json, collected/ downloads."""
    return cfg.under_output("kaggle-train")


def pushed_kernels(cfg) -> Path:
    return training_kernels(cfg) / "pushed.json"


def uploaded_datasets(cfg) -> Path:
    """output/kaggle-uploads.json: the dataset version each `package --upload` made, for `kernel --push` to wait
    for that version (not an older ready one)."""
    return cfg.under_output("kaggle-uploads.json")


def collected(cfg, handle: str) -> Path:
    owner, _, slug = handle.partition("/")
    return training_kernels(cfg) / "collected" / f"{plain(owner, 'kernel owner')}__{plain(slug, 'kernel slug')}"


def folds_meta(folds_file: Path) -> Path:
    """Beside folds.csv: the settings and seed it was made with."""
    return Path(folds_file).with_suffix(".json")


def cache_file(cache_dir: Path, split: str, mode: str, max_len: int, key: str) -> Path:
    """Encoded arrays of one split under one key (data + tokenizer + settings)."""
    return Path(cache_dir) / f"{split}-{mode}-{max_len}-{key}.npz"


def staging(path: Path) -> Path:
    """Where a folder is written whole before it is renamed into place (files.staged_dir): a hidden name with
    TEMP_MARK, so a user's own `<name>.partial` is never taken for it."""
    return Path(path).with_name(f".{Path(path).name}{TEMP_MARK}partial")


def aside(path: Path) -> Path:
    """Where files.swap puts the old folder for the moment between its two renames."""
    return Path(path).with_name(f".{Path(path).name}{TEMP_MARK}old")


def lock_of(path: Path) -> Path:
    """The lock of a folder written whole (files.staged_dir), beside it: it names the writer holding it."""
    return Path(path).with_name(f".{Path(path).name}.quest-lock")


def bundle_dir(cfg, code_only: bool = False) -> Path:
    """`package`'s default --out: the inference bundle, or the code-only dataset of training kernels."""
    return cfg.under_output("kaggle-code" if code_only else "kaggle-bundle")


def kernel_dir(cfg) -> Path:
    """`kernel`'s default --out: the inference notebook and its kernel-metadata.json."""
    return cfg.under_output("kaggle-kernel")


def runs_root(cfg) -> Path:
    return cfg.under_output("runs")


def ensemble(cfg, name: str | None = None) -> Ensemble:
    return Ensemble(cfg.under_output("ensembles") / (name or cfg.ensemble.name))


def pretrained(cfg, name: str) -> Pretrained:
    return Pretrained(cfg.under_output("pretrained") / name)


def pseudo(cfg, name: str) -> Pseudo:
    return Pseudo(cfg.under_output("pseudo") / name)


def compare_report(cfg) -> Path:
    return cfg.under_output("reports") / "compare.md"
