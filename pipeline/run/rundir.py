"""The Run object: one training run's directory (paths in core.layout.RunPaths) with what it knows.

Opening a run for training records its provenance (resolved config, command line, seed, git commit, library
versions, tokenizer copy); the checks keep it consistent (settings, folds fingerprint, weights hashes, current
predictions, one trainer at a time); it rebuilds a fold's model and sums up its out-of-fold predictions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import config as config_lib, files, layout, provenance
from pipeline.core.columns import ID
from pipeline.core.errors import MissingArtifact, PipelineError
from pipeline.data import metrics
from pipeline.text import modeldir


class RunError(PipelineError, ValueError):
    """A run directory whose artifacts do not match what was recorded, or that another process holds."""


def read_record(path: Path):
    """A JSON artifact of a run; a damaged one is named, with what to do."""
    return files.read_json(path, "train the run again into a new train.run_name", RunError)


@dataclass(frozen=True)
class RunInfo:
    """run.json: how the run is trained. Written when training opens the run, read by every later stage."""
    model_path: str  # the backbone it was trained from
    family: str  # backbone family (bert, roberta, ...): which tokenizer and converter
    uses_segments: bool  # whether the backbone reads segment ids (encoding depends on it)
    max_positions: int  # the backbone's position table
    tokenizer_fingerprint: str  # the tokenizer/ copy must reload as this
    backbone_sha256: str | None = None  # pretrained weights it started from (None: random init)
    folds_fingerprint: str | None = None  # folds.csv it was trained on
    data_fingerprint: dict | None = None  # the train file's labels and inputs it was trained on (tables.fingerprint)
    precision: str | None = None  # the mixed-precision policy training resolved to
    seed: int | None = None
    command: list = field(default_factory=list)
    git_commit: str | None = None
    updated: str = ""
    versions: dict = field(default_factory=dict)  # library versions it was trained with (the kernel needs them)
    pretrained: dict | None = None  # what a `pretrain`ed backbone was pre-trained on
    pseudo: dict | None = None  # the pseudo-label set it trained with
    collected: list = field(default_factory=list)  # folds merged from training kernels (`collect`)

    @classmethod
    def read(cls, path: Path) -> "RunInfo":
        if not Path(path).is_file():
            raise MissingArtifact(f"{path} not found: {Path(path).parent} is not a trained run")
        data = read_record(path)
        names = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in data] if isinstance(data, dict) else required
        if missing:
            raise RunError(f"{path}: expected a run record with {', '.join(missing or sorted(names))}; "
                           "it was not written by `train` (train the run again into a new train.run_name)")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _resumable() -> set[tuple[str, str]]:
    return {(s, k) for s, k, facts in config_lib.field_facts() if facts.resumable or facts.location}


_TRAINING_SECTIONS = ("data", "folds", "encode", "model", "train")


def training_settings(cfg) -> dict:
    """The settings every fold of a run shares: anything here differing means another recipe."""
    d, loose = config_lib.to_dict(cfg), _resumable()
    return {(s, k): v for s in _TRAINING_SECTIONS for k, v in d[s].items() if (s, k) not in loose}


@dataclass(frozen=True)
class Run(layout.RunPaths):
    """A run directory; `Run.of(cfg)` for the config's own run, `Run.resolve(name, cfg)` for any other."""

    @classmethod
    def of(cls, cfg) -> "Run":
        return cls(cfg.run_dir)

    @classmethod
    def resolve(cls, name_or_dir: str | Path, cfg) -> "Run":
        """A run given by name (under output/runs/) or by directory."""
        p = Path(name_or_dir)
        for candidate in (p, cfg.path(str(p)), layout.runs_root(cfg) / str(p)):
            if layout.RunPaths(candidate).config.is_file():
                return cls(candidate.resolve())
        raise MissingArtifact(f"no run {name_or_dir!r} (looked for {layout.RunPaths(p).config.name} in {p} and "
                              f"{layout.runs_root(cfg) / str(p)})")

    def refuse_links(self) -> "Run":
        """A run folder, and every entry in it (fold folders, report/, predictions/, tokenizer/ ...), must not be a
        link: the pipeline reads and writes a run through none (UnsafePath naming the first)."""
        files.refuse_link(self.root)
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            files.refuse_link(entry)
        return self

    def finished_folds(self) -> list[int]:
        """The finished folds, which must be folds of this run: fold0 .. fold{n-1} of its folds.n_folds (a copied
        `fold7` in a 3-fold run would count another fold twice)."""
        found = super().finished_folds()
        if found and self.config.is_file():
            n = self.load_config().folds.n_folds
            if extra := [f"fold{k}" for k in found if k >= n]:
                raise RunError(f"{self.root}: {', '.join(extra)} are not folds of this {n}-fold run (fold0 .. "
                               f"fold{n - 1}); move them out of the run directory")
        return found

    # ---- what it records ----
    def load_config(self):
        """The run's resolved config (config.toml)."""
        try:
            return config_lib.from_toml_text(self.config.read_text())
        except FileNotFoundError:
            raise MissingArtifact(f"{self.config} not found: {self.root} is not a trained run") from None
        except config_lib.ConfigError as err:
            raise RunError(f"{self.config}: {err}") from None

    def read_info(self) -> RunInfo:
        return RunInfo.read(self.info)

    def record(self, cfg, model_info, tok, write: bool = True, **extra) -> "Run":
        """Create or re-open the run for training with cfg: check it fits, then (write: the command will finish a
        fold) record how it is trained. A command that makes no fold (a probe, every fold done) checks only, and
        leaves the run's records as they are."""
        self.check_compatible(cfg)
        self.check_data(extra.get("data_fingerprint"))
        info = RunInfo(
            model_path=str(model_info.path), family=model_info.family, uses_segments=model_info.uses_segments,
            max_positions=model_info.max_positions, tokenizer_fingerprint=tok.fingerprint,
            backbone_sha256=None if cfg.model.random_init else modeldir.weights_sha256(model_info),
            seed=cfg.train.seed, command=sys.argv, git_commit=provenance.git_commit(),
            updated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            versions=provenance.library_versions(), pretrained=_pretrained(model_info.path), **extra)
        self._check_backbone(info)
        if not write:
            return self
        files.write_text(self.config, config_lib.to_toml(cfg))
        files.write_json(self.info, info.to_dict())
        self.save_tokenizer(tok)
        return self

    def _check_backbone(self, new: RunInfo):
        """model.path is a location: it may move, but the backbone and tokenizer behind it may not change once a
        fold is finished (the run's folds would come from different models)."""
        if not (self.finished_folds() and self.info.is_file()):
            return
        old = self.read_info()
        changed = {key: (getattr(old, key), getattr(new, key)) for key in
                   ("family", "max_positions", "uses_segments", "tokenizer_fingerprint", "backbone_sha256")
                   if getattr(old, key) != getattr(new, key)}
        if changed:
            raise RunError(f"{self.root} was trained from another backbone or tokenizer than {new.model_path} holds "
                           f"{changed} (old, new); point model.path at the one it was trained from, or train a new "
                           "train.run_name")
        if (old.pseudo or {}).get("stamp") != (new.pseudo or {}).get("stamp"):
            raise RunError(f"{self.root}'s folds were trained with another pseudo-label set (stamp "
                           f"{(old.pseudo or {}).get('stamp')} vs {(new.pseudo or {}).get('stamp')} now): the pseudo set "
                           "was made again since; restore it, or train a new train.run_name")

    def architecture(self) -> dict:
        """model.json without what may differ between its folds (see architecture())."""
        return architecture(read_record(self.model))

    def save_tokenizer(self, tok):
        """The run's own copy of its tokenizer, written whole or not at all, and checked to reload identically."""
        from pipeline.text import tokenizer as tokenizer_lib

        dest = self.tokenizer
        if dest.is_dir() and tokenizer_lib.load(dest).fingerprint == tok.fingerprint:
            return
        with files.staged_dir(dest) as staging:
            tok.save(staging)
            if tokenizer_lib.load(staging).fingerprint != tok.fingerprint:
                raise tokenizer_lib.TokenizerError(f"the tokenizer saved to {staging} does not reload as the same "
                                                   "tokenizer")

    def load_tokenizer(self):
        """The run's tokenizer copy, checked against the fingerprint it was trained with."""
        from pipeline.text import tokenizer as tokenizer_lib

        tok = tokenizer_lib.load(self.tokenizer)
        if tok.fingerprint != self.read_info().tokenizer_fingerprint:
            raise RunError(f"{self.tokenizer} differs from the tokenizer the run was trained with")
        return tok

    def encoder(self, cache_dir: Path, rcfg=None):
        """The run's tokenizer copy with its encode settings (rcfg: its config, if the caller has it)."""
        from pipeline.text import encode

        rcfg = rcfg or self.load_config()
        return encode.Encoder(rcfg.encode, self.load_tokenizer(), self.read_info().uses_segments, Path(cache_dir))

    # ---- checks ----
    def check_folds(self, cfg):
        """The run's folds.csv must be the one it was trained on (fingerprint in run.json), else its OOF is wrong."""
        from pipeline.data import folds as folds_lib

        recorded = self.read_info().folds_fingerprint if self.info.is_file() else None
        if not recorded or not self.finished_folds():
            return
        current = folds_lib.fingerprint(cfg)
        if current != recorded:
            raise RunError(f"{cfg.folds_file} changed since {self.name} was trained on it (fingerprint "
                           f"{current} vs {recorded} in {self.info}): its out-of-fold rows no longer match. "
                           "Restore that folds file (same folds.seed / n_folds / group_key) or train a new run")

    def check_data(self, now: dict | None):
        """The train file's labels and inputs must be those the run's finished folds were trained and scored on
        (tables.fingerprint): another file's labels would rescore every fold's out-of-fold rows, other text would
        mix folds trained on different inputs."""
        if not (now and self.info.is_file() and self.finished_folds()):
            return
        then = self.read_info().data_fingerprint or {}
        if changed := [k for k in ("labels", "inputs") if then.get(k) and then[k] != now.get(k)]:
            raise RunError(f"the train file's {' and '.join(changed)} changed since {self.name}'s folds "
                           f"{self.finished_folds()} were trained ({changed[0]} fingerprint {now[changed[0]]} vs "
                           f"{then[changed[0]]} in {self.info}): the run would mix data. Restore that train file, or "
                           "train a new train.run_name")

    def check_compatible(self, cfg):
        """A run is resumed or extended only with the settings (and the folds) it was trained with."""
        self.check_folds(cfg)
        if self.config.is_file():
            before = training_settings(self.load_config())
            changed = {f"{s}.{k}": (before.get((s, k)), v) for (s, k), v in training_settings(cfg).items()
                       if before.get((s, k)) != v}
            if changed:
                raise RunError(f"{self.root} was trained with other settings {changed} (old, new); "
                               "pick a new train.run_name or delete the run")

    def check_global_batch(self, batch: int, replicas: int, where: str = "this machine"):
        """A run's folds share one effective batch (rows per optimizer step: train.batch_size x the replicas the
        strategy found x train.grad_accum), so a fold trained on two GPUs does not join folds trained on one at
        the same settings; train.grad_accum = 2 on one GPU matches two GPUs."""
        if found := self._fold_recording_other("global_batch", batch):
            k, m = found
            raise RunError(f"fold {k} of {self.name} was trained with a global batch of {m['global_batch']} "
                           f"({m.get('replicas', 1)} replica(s) x train.batch_size x train.grad_accum); {where} "
                           f"gives {batch} ({replicas} replica(s)). Its folds would not be one recipe: use the "
                           "same kind of machine, --set train.strategy=default (one device) everywhere, or a "
                           "train.grad_accum that makes the products equal")

    def check_precision(self, policy: str, where: str = "this machine"):
        """A run's folds share one numeric precision, the one actually used (train.mixed_precision "auto" is
        float16 on a P100/T4, bfloat16 on newer GPUs and on CPUs with bfloat16 units, else float32 on a CPU)."""
        if found := self._fold_recording_other("precision", policy):
            k, m = found
            raise RunError(f"fold {k} of {self.name} was trained in {m['precision']}; {where} trains in {policy}. "
                           "Its folds would not be one recipe: set train.mixed_precision to one value (none, "
                           "float16, bfloat16) everywhere, or train the folds on the same kind of device")

    def _fold_recording_other(self, key: str, value):
        """The first finished fold whose metrics record another `key` than value (folds from before the key
        existed agree): (k, its metrics), or None."""
        for k in self.finished_folds():
            m = files.read_json(self.fold(k).metrics)
            if m.get(key, value) != value:
                return k, m
        return None

    def model_sha256(self) -> str:
        """What a fold records of the run's model description (model.json, fold-specific parts left out)."""
        return files.sha256_text(json.dumps(self.architecture(), sort_keys=True))

    def verify_weights(self, k: int) -> Path:
        """The fold's weights file, checked against the sha256 recorded when the fold finished, and the model
        description they load into against the one the fold was trained as."""
        fold = self.fold(k)
        finished = read_record(fold.finished)
        recorded = finished.get("weights_sha256")
        if finished.get("model_sha256") and finished["model_sha256"] != self.model_sha256():
            raise RunError(f"{self.model} changed since fold {k} was trained (its model_sha256 in "
                           f"{fold.finished.name} differs): the weights would load into another model. Restore "
                           "model.json, or train the run again into a new train.run_name")
        if finished.get("coding_sha256") and (not fold.coding.is_file()
                                              or files.sha256_file(fold.coding) != finished["coding_sha256"]):
            raise RunError(f"{fold.coding} is missing or changed since fold {k} was trained (its sha256 differs from "
                           f"the one in {fold.finished.name}); delete {fold.root} and run `python run.py train --folds "
                           f"{k}` again")
        if not fold.weights.is_file():
            raise RunError(f"{fold.weights} is missing; delete {fold.root} and run `python run.py train --folds {k}` "
                           "again")
        if recorded and files.sha256_file(fold.weights) != recorded:
            raise RunError(f"{fold.weights} is damaged or was replaced (its sha256 differs from the one recorded in "
                           f"{fold.finished.name}); delete {fold.root} and run `python run.py train --folds {k}` again")
        return fold.weights

    def load_fold(self, k: int):
        """A trained fold, rebuilt from the run's one model description with its weights (checked by hash)."""
        from pipeline.modeling import model as model_lib

        description = read_record(self.model)
        if self.fold(k).coding.is_file():  # fitted on the fold's training rows: part of the fold's model
            description["config"]["coding"] = files.read_json(self.fold(k).coding)
        path = self.verify_weights(k)
        m = model_lib.model_from_json(json.dumps(description))
        try:
            m.load_weights(path)
        except (OSError, ValueError) as err:
            raise RunError(f"{path} cannot be loaded ({err}); delete {path.parent} and train fold {k} again") from None
        return m

    def weights_without_optimizer(self, k: int, dest: Path) -> dict | None:
        """Fold k's weights for a bundle: None when its file holds the model's weights only (copied as they are);
        else (a fold saved before the optimizer's state was left out: 3-4x the size) the weights re-saved alone
        into dest, and its finished.json record with their sha256 (and the one it replaces)."""
        from pipeline.modeling import model as model_lib

        if not model_lib.holds_optimizer_state(self.verify_weights(k)):
            return None
        with files.atomic_path(dest, suffix=".weights.h5") as tmp:
            model_lib.save_weights(self.load_fold(k), tmp)
            sha = files.sha256_file(tmp)
        finished = read_record(self.fold(k).finished)
        return {**finished, "weights_sha256": sha, "converted_from_sha256": finished.get("weights_sha256")}

    @contextlib.contextmanager
    def lock(self):
        """One writing process per run directory (train, collect, predict, ensemble); stale temp files of a killed
        one are removed once we hold it. A run folder holding a link is refused, never written through."""
        self.refuse_links()
        with files.exclusive(self.lock_file, f"{self.root} is being written by {{holder}}; wait for it to finish, "
                             "or use another train.run_name", RunError, sweep=lambda: files.temp_files(self.root)):
            yield self

    # ---- predictions ----
    def prediction_inputs(self, csv_path: Path, precision: str | None = None) -> dict:
        """What a prediction of csv_path by this run depends on: the input's content, the finished folds,
        precision."""
        weights = {k: read_record(self.fold(k).finished).get("weights_sha256") for k in self.finished_folds()}
        return {"input": str(csv_path), "input_sha256": files.sha256_file(csv_path), "folds": list(weights),
                "weights": list(weights.values()), "precision": precision or "run"}

    def current_prediction(self, csv_path: Path, out_dir: Path | None = None, precision: str | None = None,
                           stamp: dict | None = None) -> Path | None:
        """`predict`'s output for csv_path if it is there and current, else None (stamp: prediction_inputs', if
        the caller already has it)."""
        stamp = stamp or self.prediction_inputs(csv_path, precision)
        out = self.prediction(csv_path, out_dir)
        return out if files.is_current(self.prediction_stamp(csv_path, out_dir), stamp, out) else None

    # ---- out-of-fold ----
    def load_oof(self) -> pd.DataFrame:
        done = self.finished_folds()
        if not done:
            raise MissingArtifact(f"{self.root}: no finished fold; run `python run.py train` first")
        oof = pd.concat([pd.read_csv(self.fold(k).oof) for k in done], ignore_index=True)
        if oof[ID].duplicated().any():
            twice = int(oof[ID][oof[ID].duplicated()].iloc[0])
            raise RunError(f"{self.root}: the out-of-fold rows of folds {done} overlap ({ID} {twice} in two of "
                           "them): a fold folder holds another fold's predictions; delete it and train it again")
        return oof

    def summarize(self, train: pd.DataFrame) -> Path:
        """oof.csv and summary.json over the folds finished so far."""
        oof = self.load_oof()
        truth = train[train[ID].isin(oof[ID])]
        score = metrics.score_frames(truth, oof)
        per_fold = {k: files.read_json(self.fold(k).metrics)["val_spearman"] for k in self.finished_folds()}
        files.write_csv(self.oof, oof.set_index(ID).loc[truth[ID]].reset_index())
        return files.write_json(self.summary, {
            "folds_done": list(per_fold), "per_fold": per_fold,
            "mean_fold_spearman": float(np.mean(list(per_fold.values()))), "oof_spearman": score.mean,
            "n_rows": len(truth), "n_constant": score.n_constant, "constant_columns": score.constant_columns})


def _pretrained(model_path) -> dict | None:
    """What a backbone pre-trained by `pretrain` was pre-trained on (its pretrain.json), for the run's record."""
    manifest = layout.Pretrained(Path(model_path)).manifest
    if not manifest.is_file():
        return None
    m = files.read_json(manifest)
    return {k: m.get(k) for k in ("base_model", "sources", "labels_read", "steps", "tokens_seen", "seed", "masking",
                                  "git_commit")}


def architecture(description: dict) -> dict:
    """A model description (model.json) without what may differ between folds of one model: the target coding
    (fitted on each fold's rows) and layer names (Keras numbers them per process: "bert_backbone_3")."""
    def strip(value, top=False):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "name" and not (top and k == "coding")}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return {**description, "config": strip(description["config"], top=True)}


def describe_differences(old, new, where: str = "", limit: int = 5) -> str:
    """The first few places two JSON-like values differ, as "key.path: old -> new" (empty when equal)."""
    found = []

    def walk(a, b, path):
        if len(found) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            found.append(f"{path}: {str(a)[:40]} -> {str(b)[:40]}")

    walk(old, new, where)
    return "; ".join(found)
