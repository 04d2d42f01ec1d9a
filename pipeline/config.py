"""One typed config tree: TOML files in configs/ plus `--set section.key=value` overrides.

Unknown sections/keys and wrong types are errors that list what is valid. Relative paths
are resolved against the project root (never the working directory).
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PipelineError
from .schema import TARGETS

ROOT = Path(__file__).resolve().parents[1]


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


class ConfigError(PipelineError, ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class DataConfig:
    dir: str = "input/google-quest-challenge"  # competition files live here (download writes here)
    train_file: str = "train.csv"  # relative to `dir` unless absolute
    test_file: str = "test.csv"  # relative to `dir`; on Kaggle the hidden test replaces it
    sample_submission_file: str = "sample_submission.csv"  # defines submission rows and order
    clean_text: bool = True  # unescape HTML entities and fold whitespace runs (safe for any tokenizer)


@dataclass
class FoldsConfig:
    n_folds: int = 5  # K of K-fold; every later stage reads this split from folds.csv
    seed: int = 42  # shuffles question groups; recorded in folds.json
    group_key: str = "question_body"  # answers to one question share a fold (or "question_title")
    stratify: bool = False  # balance folds by a target-profile bin of each question group
    file: str = "folds.csv"  # under output.dir unless absolute; written once by `folds`, read by every later stage


@dataclass
class EncodeConfig:
    inputs: str = "joint"  # "joint": one sequence per row; "dual": a question and an answer sequence (2nd/6th place)
    mode: str = "triple"  # joint layout: "triple": [CLS] title [SEP] body [SEP] answer [SEP]; "pair": question, answer
    max_len: int = 512  # joint: the row's tokens; dual: the question sequence's (batches may be cut shorter)
    answer_max_len: int = 512  # dual only: the answer sequence's tokens ([CLS] title [SEP] answer [SEP])
    # Field weights: rescaled to token budgets that share max_len minus the special tokens; a field shorter
    # than its budget gives the rest to the longer fields; a longer one keeps its head and tail.
    title_weight: int = 30  # weight of the title
    question_weight: int = 239  # weight of the question body
    answer_weight: int = 239  # weight of the answer
    head_share: float = 0.5  # share of a truncated field kept from its start (rest from its end)
    cache_dir: str = "cache"  # under output.dir unless absolute; encoded arrays keyed by data + tokenizer + settings


@dataclass
class ModelConfig:
    path: str = "input/models/bert-base-uncased"  # HF dir (config.json+safetensors) or keras-hub preset dir
    random_init: bool = False  # build the backbone from its config only (tests, demo, benchmarks)
    towers: str = "shared"  # dual: "shared" (siamese, one backbone for both sequences) or "separate" (two)
    pooling: str = "mean"  # "mean" (masked), "cls", "weighted" (learned sum of last k layers, mean-pooled) or
    #                        "cls_all_layers" (learned softmax-weighted sum of every layer's first token: 1st place)
    pool_layers: int = 4  # k for weighted pooling
    head: str = "linear"  # "linear" (one layer for all targets) or "per_target" (a small two-layer head each: 2nd)
    head_hidden: int = 256  # hidden units of each per-target head
    split_heads: bool = False  # dual: question targets from the question side only, answer targets from both
    dropout: float = 0.1  # dropout before the output layer
    backbone_dropout: float = -1.0  # <0 keeps the backbone's own rate (BERT: 0.1); >=0 sets it (0: exact replays)
    dropout_samples: int = 1  # >1 turns on multi-sample dropout (averaged logits)
    category: bool = False  # one-hot of the `category` column concatenated before the head (6th/10th place)
    host_dim: int = 0  # >0: a host embedding of this size before the head (unseen hosts share one bucket)


@dataclass
class TrainConfig:
    run_name: str = ""  # output/runs/<run_name>; empty means "<config name>-s<seed>"
    seed: int = 42  # run seed; per-fold seeds derive from it so a resumed fold repeats exactly
    folds: list[int] = field(default_factory=list)  # folds to train; empty means all
    epochs: int = 3  # passes over the training folds
    batch_size: int = 8  # rows per micro-batch (per replica under a distribution strategy)
    grad_accum: int = 1  # micro-batches per optimizer step (accumulated in one step: works on several GPUs too)
    lr_backbone: float = 3e-5  # peak learning rate of the pretrained backbone
    lr_head: float = 1e-3  # peak learning rate of the freshly initialised head
    weight_decay: float = 0.01  # AdamW decoupled decay (not on biases and norms)
    schedule: str = "linear"  # learning-rate shape after warm-up: "linear", "cosine" or "one_cycle" (see optim.py)
    warmup: float = 0.1  # share of each stage's optimizer steps spent warming up
    warmup_steps: int = 0  # >0: warm-up in optimizer steps instead of a share (1st place: 200)
    head_only_epochs: int = 0  # extra epochs with the backbone frozen (only the head learns, at lr_head)
    head_only_stage: str = "first"  # when those run: "first" (10th place) or "last" (6th place)
    lr_layer_decay: float = 1.0  # layer-wise LR decay: each lower backbone layer's rate times this (1 = off)
    ema: float = 0.0  # >0: momentum of an exponential moving average of the weights, evaluated and saved instead
    targets: str = "raw"  # what the model learns: "raw" labels, "rank" (min-max ranks) or "ordinal" (see targets.py)
    pos_weight: list[float] = field(default_factory=list)  # BCE weight of positives: one value, or one per target
    clipnorm: float = 1.0  # global gradient-norm clip; 0 disables
    keep: str = "best"  # "best" epoch by validation Spearman, or "last"
    patience: int = 0  # early stopping after this many epochs without improvement; 0 disables
    bucketing: bool = True  # group rows of similar length into batches
    dynamic_padding: bool = True  # cut each batch to its longest row (rounded up to pad_multiple)
    pad_multiple: int = 32  # bounds the number of distinct shapes (retracing, XLA compiles)
    eval_batch_size: int = 0  # inference batch (rows sorted by length); 0 = auto: 64 on accelerators, 16 on a CPU
    #                           (same speed per token there, less padding on a few hundred rows: benchmarks/)
    mixed_precision: str = "auto"  # "auto" (bf16/fp16 on accelerators, fp32 on CPU), "none", "bfloat16", "float16"
    predict_precision: str = "auto"  # "auto": what the predicting device supports (fp16 on P100/T4), whatever trained
    xla: bool = False  # jit-compile the train/predict steps (accelerators)
    strategy: str = "auto"  # tf.distribute: "auto" (TPU, else Mirrored on 2+ GPUs, else one device), "default"
    #                         (one device), "mirrored" (every GPU; batch_size rows each), "tpu" (see README)
    verbose: int = 1  # 0 silent; 1 a bar on a terminal, else a log line every ~10% of an epoch; 2 a line per epoch
    max_steps: int = 0  # >0: a throughput probe of this many steps per fold; writes probes/, never a finished fold
    pseudo: str = ""  # a `pseudo` output (name under output/pseudo/ or a dir): fold k adds its fold<k> labels' rows
    pseudo_weight: float = 1.0  # loss weight of each pseudo-labelled row (a labelled row weighs 1)


@dataclass
class PretrainConfig:
    """Masked-LM pre-training of model.path on text alone (`pretrain`, see pretrain.py); writes a model directory."""
    name: str = ""  # output/pretrained/<name>/; empty means "<model dir name>-mlm-s<seed>"
    use_train: bool = True  # the train file's titles, bodies and answers (text only: target columns are never read)
    use_test: bool = True  # the test file's text
    extra_csv: list[str] = field(default_factory=list)  # more text: CSVs with any of question_title/question_body/answer
    max_len: int = 256  # tokens per window, specials included; longer documents are cut into several windows
    mask_rate: float = 0.15  # share of each window's tokens the model predicts (80% masked, 10% random, 10% kept)
    whole_word: bool = True  # mask all pieces of a word together (where the tokenizer marks word pieces)
    epochs: float = 1.0  # passes over the windows (ignored when steps > 0)
    steps: int = 0  # >0: optimizer steps instead of epochs
    batch_size: int = 16  # windows per step (per replica)
    lr: float = 5e-5  # peak learning rate: linear warm-up, then linear decay to 0 (AdamW)
    warmup: float = 0.06  # share of the steps spent warming up
    weight_decay: float = 0.01  # AdamW decoupled decay (not on biases and norms)
    checkpoint_every: int = 200  # steps between resumable checkpoints (and progress lines off a terminal)
    seed: int = 42  # window order and masks, both drawn per step from it; recorded in pretrain.json
    verbose: int = 1  # 0 silent; 1 a bar on a terminal, else a line per checkpoint; 2 a line per checkpoint


@dataclass
class PseudoConfig:
    """Leak-free pseudo-labels (`pseudo`, see pseudo.py): teacher fold k labels the rows for student fold k only."""
    teachers: list[str] = field(default_factory=list)  # finished runs (names or dirs); `--runs` sets them
    input: str = ""  # CSV of unlabeled rows (qa_id + title/body/answer, + category/host); empty: data.test_file
    name: str = ""  # output/pseudo/<name>/; empty means "<first teacher>-on-<input stem>"


@dataclass
class PostprocessConfig:
    """Per-column rank post-processing: chosen on other folds, scored on the held fold (see postprocess.py)."""
    methods: list[str] = field(default_factory=lambda: ["snap", "round", "clip"])  # candidates per column; also
    #                                                       "lohi" (low/high clipping) and "kmeans" (k levels)
    round_grids: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6, 8, 10])  # k in round(p*k)/k
    kmeans_levels: list[int] = field(default_factory=lambda: [3, 4, 5, 6, 8])  # k of the "kmeans" candidates
    blend: bool = True  # fit it on the ensemble's OOF and apply it to the test blend (the submission)


@dataclass
class EnsembleConfig:
    runs: list[str] = field(default_factory=list)  # run names or dirs; empty means this config's run
    method: str = "mean"  # "mean", "rank" (average of ranks) or "optimize" (OOF weights by coordinate ascent, nested)
    per_column: bool = False  # optimize: one weight per run and target (6th place) instead of one per run
    grid: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0])  # optimize: the weights each run may take
    name: str = "ensemble"  # output/ensembles/<name>/


@dataclass
class OutputConfig:
    dir: str = "output"  # runs/, ensembles/, folds.csv, cache/ and submission.csv go here
    submission: str = "submission.csv"  # the file Kaggle scores; under output.dir unless absolute


@dataclass
class KaggleConfig:
    competition: str = "google-quest-challenge"  # competition slug for download and kernel sources
    model: str = ""  # model to download: "owner/model/framework/variation" (Kaggle Models) or "owner/dataset"
    model_name: str = ""  # folder under models_dir for the downloaded model (default: last part of the handle)
    models_dir: str = "input/models"  # where downloaded models go
    dataset: str = ""  # "owner/slug" of the bundle dataset for package --upload and the kernel
    kernel: str = ""  # "owner/slug" of the inference kernel
    code_dataset: str = ""  # "owner/slug" of the code + wheels dataset (`package --code-only`); empty: kaggle.dataset
    train_kernel: str = ""  # "owner/slug" prefix of training kernels; `kernel --train --folds 0,1` pushes <prefix>-f0-1
    accelerator: str = "gpu"  # kernel accelerator: "none" or "gpu" (QUEST accepts CPU/GPU notebooks only)
    wheels: list[str] = field(default_factory=list)  # extra pure-Python wheels; keras/keras-hub as trained are automatic
    image: str = "configs/kaggle-image-constraints.txt"  # the Kaggle image's versions: decides which wheels to bundle
    wheel_dir: str = "input/wheels"  # wheels are taken from here first; `pip download`ed ones are kept here


@dataclass
class Config:
    name: str = "default"  # config name (TOML file stem); used in default run names
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    kaggle: KaggleConfig = field(default_factory=KaggleConfig)

    # ---- derived paths (absolute; relative config paths hang off the project root) ----
    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else ROOT / p

    def under_output(self, value: str) -> Path:
        """Artifact locations follow output.dir (a relative value hangs off it), so --set output.dir=X moves
        every artifact of the run together and never overwrites another output folder's files."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.path(self.output.dir) / p

    @property
    def folds_file(self) -> Path:
        return self.under_output(self.folds.file)

    @property
    def cache_dir(self) -> Path:
        return self.under_output(self.encode.cache_dir)

    @property
    def submission_file(self) -> Path:
        return self.under_output(self.output.submission)

    def data_file(self, key: str) -> Path:
        base = self.path(self.data.dir)
        p = Path(getattr(self.data, key))
        return p if p.is_absolute() else base / p

    @property
    def run_name(self) -> str:
        return self.train.run_name or f"{self.name}-s{self.train.seed}"

    @property
    def run_dir(self) -> Path:
        return self.path(self.output.dir) / "runs" / self.run_name


# Choices checked after loading (a field not listed takes any value of its type).
CHOICES = {
    ("encode", "mode"): ("triple", "pair"),
    ("encode", "inputs"): ("joint", "dual"),
    ("model", "towers"): ("shared", "separate"),
    ("model", "pooling"): ("mean", "cls", "weighted", "cls_all_layers"),
    ("model", "head"): ("linear", "per_target"),
    ("train", "schedule"): ("linear", "cosine", "one_cycle"),
    ("train", "head_only_stage"): ("first", "last"),
    ("train", "targets"): ("raw", "rank", "ordinal"),
    ("train", "keep"): ("best", "last"),
    ("train", "mixed_precision"): ("auto", "none", "bfloat16", "float16"),
    ("train", "predict_precision"): ("auto", "none", "bfloat16", "float16"),
    ("train", "strategy"): ("auto", "default", "mirrored", "tpu"),
    ("folds", "group_key"): ("question_body", "question_title"),
    ("ensemble", "method"): ("mean", "rank", "optimize"),
    ("kaggle", "accelerator"): ("none", "gpu"),
}


def _fields(obj) -> dict[str, type]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _check_type(where: str, value, typ):
    origin = typing.get_origin(typ)
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {inner.__name__}, got {value!r}")
        return [_check_type(f"{where}[{i}]", v, inner) for i, v in enumerate(value)]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
    if not isinstance(value, typ):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def _apply(obj, data: dict, where: str):
    fields = _fields(obj)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{where}{key}'; valid keys: {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a [{key}] table, got {value!r}")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _check_type(f"{where}{key}", value, fields[key]))


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare strings need no quotes on the command line


def _override(cfg: Config, assignment: str):
    if "=" not in assignment:
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    dotted, text = assignment.split("=", 1)
    *sections, key = dotted.strip().split(".")
    value = _parse_value(text.strip())
    target = cfg
    for s in sections:
        if s not in _fields(target) or not dataclasses.is_dataclass(getattr(target, s)):
            raise ConfigError(f"--set {dotted}: unknown section {s!r}; valid sections: "
                              f"{', '.join(k for k, v in _fields(target).items() if dataclasses.is_dataclass(getattr(target, k)))}")
        target = getattr(target, s)
    typ = _fields(target).get(key)
    if typing.get_origin(typ) is list:
        inner = typing.get_args(typ)[0]
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = [inner(v) for v in str(value).split(",") if v.strip()]
    if typ is str and not isinstance(value, str):
        value = text.strip()  # e.g. --set train.run_name=2024 stays a string
    _apply(target, {key: value}, ".".join(sections) + "." if sections else "")


def validate(cfg: Config) -> Config:
    from .postprocess import METHODS

    unknown = [m for m in cfg.postprocess.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"postprocess.methods {unknown}: expected names among {', '.join(METHODS)}")
    if any(g < 0 for g in cfg.ensemble.grid) or not any(g > 0 for g in cfg.ensemble.grid):
        raise ConfigError(f"ensemble.grid = {cfg.ensemble.grid}: expected weights >= 0, at least one positive")
    if any(k < 2 for k in cfg.postprocess.kmeans_levels):
        raise ConfigError(f"postprocess.kmeans_levels = {cfg.postprocess.kmeans_levels}: expected k >= 2")
    if cfg.kaggle.accelerator == "tpu":
        raise ConfigError("kaggle.accelerator = 'tpu': QUEST is a code competition scored from CPU or GPU notebooks "
                          "only; use 'gpu' (P100/T4) or 'none'")
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key} = {value!r}; expected one of {', '.join(allowed)}")
    pt = cfg.pretrain
    for key, ok, want in (("max_len", pt.max_len >= 8, ">= 8"), ("mask_rate", 0 < pt.mask_rate < 1, "in (0, 1)"),
                          ("epochs", pt.epochs > 0 or pt.steps > 0, "> 0 (or steps > 0)"), ("steps", pt.steps >= 0, ">= 0"),
                          ("batch_size", pt.batch_size >= 1, ">= 1"), ("lr", pt.lr > 0, "> 0"),
                          ("warmup", 0 <= pt.warmup <= 1, "in [0, 1]"), ("weight_decay", pt.weight_decay >= 0, ">= 0"),
                          ("checkpoint_every", pt.checkpoint_every >= 1, ">= 1")):
        if not ok:
            raise ConfigError(f"pretrain.{key} = {getattr(pt, key)}; expected a value {want}")
    for where, name in (("train.run_name", cfg.train.run_name), ("ensemble.name", cfg.ensemble.name),
                        ("pretrain.name", cfg.pretrain.name), ("pseudo.name", cfg.pseudo.name)):
        if name and not _PLAIN_NAME.match(name):
            raise ConfigError(f"{where} = {name!r}: expected a plain name (letters, digits, '-', '_', '.'; "
                              "no path separators, not starting with '.'), since it names a folder under output.dir")
    for spec in cfg.kaggle.wheels:
        if spec.strip().startswith("-"):
            raise ConfigError(f"kaggle.wheels entry {spec!r}: expected 'name==version', not a pip option")
    t = cfg.train
    for key, ok, want in (("lr_backbone", t.lr_backbone >= 0, ">= 0"), ("lr_head", t.lr_head >= 0, ">= 0"),
                          ("weight_decay", t.weight_decay >= 0, ">= 0"), ("warmup", 0 <= t.warmup <= 1, "in [0, 1]"),
                          ("clipnorm", t.clipnorm >= 0, ">= 0"), ("patience", t.patience >= 0, ">= 0"),
                          ("max_steps", t.max_steps >= 0, ">= 0"), ("warmup_steps", t.warmup_steps >= 0, ">= 0"),
                          ("head_only_epochs", t.head_only_epochs >= 0, ">= 0"),
                          ("lr_layer_decay", 0 < t.lr_layer_decay <= 1, "in (0, 1]"), ("ema", 0 <= t.ema < 1, "in [0, 1)"),
                          ("pseudo_weight", t.pseudo_weight > 0, "> 0")):
        if not ok:
            raise ConfigError(f"train.{key} = {getattr(t, key)}; expected a value {want}")
    if len(t.pos_weight) not in (0, 1, len(TARGETS)) or any(w <= 0 for w in t.pos_weight):
        raise ConfigError(f"train.pos_weight = {t.pos_weight}: expected positive values, one for every target "
                          "or 30 (one per target, in sample_submission order), or none")
    m = cfg.model
    if m.split_heads and cfg.encode.inputs != "dual":
        raise ConfigError("model.split_heads = true needs encode.inputs = 'dual' (a question side to read)")
    for key, value in (("head_hidden", m.head_hidden), ("pool_layers", m.pool_layers),
                       ("dropout_samples", m.dropout_samples)):
        if value < 1:
            raise ConfigError(f"model.{key} = {value}; expected at least 1")
    if m.host_dim < 0:
        raise ConfigError(f"model.host_dim = {m.host_dim}; expected 0 (off) or an embedding size")
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout = {cfg.model.dropout}; expected a value in [0, 1)")
    if m.backbone_dropout >= 1:
        raise ConfigError(f"model.backbone_dropout = {m.backbone_dropout}; expected -1 (the backbone's own) or [0, 1)")
    e = cfg.encode
    budgets = {"title_weight": e.title_weight, "question_weight": e.question_weight, "answer_weight": e.answer_weight}
    negative = {k: v for k, v in budgets.items() if v < 0}
    if negative or not sum(budgets.values()):
        raise ConfigError(f"encode field weights {negative or budgets}: expected weights >= 0 with a positive sum")
    sequences = [("max_len", e.max_len, budgets)]
    if e.inputs == "dual":
        sequences = [("max_len", e.max_len, {k: budgets[k] for k in ("title_weight", "question_weight")}),
                     ("answer_max_len", e.answer_max_len, {k: budgets[k] for k in ("title_weight", "answer_weight")})]
    for key, max_len, weights in sequences:
        if max_len < 16:
            raise ConfigError(f"encode.{key} = {max_len}; expected at least 16")
        if not sum(weights.values()):
            raise ConfigError(f"encode field weights {weights}: the sequence of encode.{key} needs a positive one")
        room = max_len - 5  # at most 5 special tokens per row
        starved = [k for k, v in weights.items() if v and int(v * room / sum(weights.values())) < 1]
        if starved:
            raise ConfigError(f"encode.{key} = {max_len} leaves {starved} no token at these field weights "
                              f"{weights}; raise {key} or that weight, or set it to 0 to leave the field out")
    if not 0.0 <= e.head_share <= 1.0:
        raise ConfigError(f"encode.head_share = {e.head_share}; expected a value in [0, 1]")
    if cfg.folds.n_folds < 2:
        raise ConfigError(f"folds.n_folds = {cfg.folds.n_folds}; expected at least 2")
    bad = [f for f in cfg.train.folds if not 0 <= f < cfg.folds.n_folds]
    if bad:
        raise ConfigError(f"train.folds = {cfg.train.folds}: folds {bad} outside 0..{cfg.folds.n_folds - 1}")
    for key in ("batch_size", "grad_accum", "pad_multiple"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key} = {getattr(cfg.train, key)}; expected at least 1")
    if cfg.train.eval_batch_size < 0:
        raise ConfigError(f"train.eval_batch_size = {cfg.train.eval_batch_size}; expected 0 (auto) or a batch size")
    if t.epochs < 0 or t.epochs + t.head_only_epochs < 1:
        raise ConfigError(f"train.epochs = {t.epochs}, train.head_only_epochs = {t.head_only_epochs}: expected "
                          "epochs >= 0 and at least one epoch in all")
    return cfg


def load(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults <- TOML file <- overrides, then validated."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        cfg.name = path.stem
        try:
            _apply(cfg, data, "")
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    for assignment in overrides:
        _override(cfg, assignment)
    return validate(cfg)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: Config) -> str:
    d = to_dict(cfg)
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for section, values in d.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def from_toml_text(text: str, overrides: list[str] = ()) -> Config:
    """A config written by to_toml (a run's config.toml, a training kernel's parameters), then overrides."""
    cfg = Config()
    _apply(cfg, tomllib.loads(text), "")
    for assignment in overrides:
        _override(cfg, assignment)
    return validate(cfg)
