"""Where every artifact lives. Stages talk through these files; no other module spells their names.

output/                            (cfg.output.dir)
  folds.csv folds.json cache/ submission.csv
  runs/<run>/                      Run: one training run
    config.toml run.json model.json tokenizer/ oof.csv summary.json postprocess.json
    fold<k>/                       Fold: model.weights.h5 oof.csv test.csv history.csv metrics.json finished.json
    probes/fold<k>.json            step-limited throughput probes (never a finished fold)
    report/                        report.json report.md *.png
    predictions/<csv stem>.csv     `predict` outputs (+ .json stamps)
  ensembles/<name>/                Ensemble: config.toml weights.json oof.csv test.csv postprocess.json summary.json
  reports/compare.md
A Kaggle bundle (Bundle) holds bundle.json, postprocess.json, wheels/ and runs/<run>/ laid out as above.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "bundle.json"


@dataclass(frozen=True)
class Fold:
    root: Path

    weights = property(lambda self: self.root / "model.weights.h5")
    oof = property(lambda self: self.root / "oof.csv")
    test = property(lambda self: self.root / "test.csv")
    history = property(lambda self: self.root / "history.csv")
    metrics = property(lambda self: self.root / "metrics.json")
    # Written last, holding the hashes later stages check (weights, test file): the fold is finished.
    finished = property(lambda self: self.root / "finished.json")


@dataclass(frozen=True)
class Run:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

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
    lock = property(lambda self: self.root / ".lock")

    def fold(self, k: int) -> Fold:
        return Fold(self.root / f"fold{k}")

    def probe(self, k: int) -> Path:
        return self.root / "probes" / f"fold{k}.json"

    def prediction(self, csv_path: Path, out_dir: Path | None = None) -> Path:
        """`predict`'s output for an input CSV (its stamp is the same path with .json)."""
        return Path(out_dir or self.predictions_dir) / f"{Path(csv_path).stem}.csv"

    def plot(self, name: str) -> Path:
        return self.report_dir / f"{name}.png"

    def finished_folds(self) -> list[int]:
        return sorted(int(p.parent.name[4:]) for p in self.root.glob("fold*/finished.json"))


@dataclass(frozen=True)
class Ensemble:
    root: Path

    config = property(lambda self: self.root / "config.toml")
    weights = property(lambda self: self.root / "weights.json")
    oof = property(lambda self: self.root / "oof.csv")
    test = property(lambda self: self.root / "test.csv")
    postprocess = property(lambda self: self.root / "postprocess.json")
    summary = property(lambda self: self.root / "summary.json")  # written last; its stamp marks it current


@dataclass(frozen=True)
class Bundle:
    root: Path

    manifest = property(lambda self: self.root / MANIFEST_NAME)  # also how a kernel finds the bundle
    postprocess = property(lambda self: self.root / "postprocess.json")
    wheels = property(lambda self: self.root / "wheels")
    metadata = property(lambda self: self.root / "dataset-metadata.json")

    def run(self, name: str) -> Run:
        return Run(self.root / "runs" / name)



def runs_root(cfg) -> Path:
    return cfg.under_output("runs")


def ensemble(cfg, name: str | None = None) -> Ensemble:
    return Ensemble(cfg.under_output("ensembles") / (name or cfg.ensemble.name))


def compare_report(cfg) -> Path:
    return cfg.under_output("reports") / "compare.md"
