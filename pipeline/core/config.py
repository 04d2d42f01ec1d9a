"""One typed config tree: TOML files in configs/ plus `--set section.key=value` overrides.

Every field is declared once with its facts (settings.py: help, choices, range, location, resumable); unknown
sections/keys and wrong types are errors that list what is valid. Each section checks what spans its fields.
Relative paths are resolved against the project root (never the working directory).
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core import layout, settings
from pipeline.core.columns import TARGETS
from pipeline.core.settings import ConfigError, at_least, between, setting

ROOT = Path(__file__).resolve().parents[2]
POSITIVE = (lambda v: v > 0, "a value > 0")
WEIGHT = (lambda v: v >= 0, "weights >= 0 with a positive sum")
SEED = between(0, 2**32 - 1)  # what numpy's and TensorFlow's generators accept


@dataclass
class DataConfig:
    dir: str = setting("input/google-quest-challenge", "competition files live here (download writes here)",
                       location=True)
    train_file: str = setting("train.csv", "relative to `dir` unless absolute", location=True)
    test_file: str = setting("test.csv", "relative to `dir`; on Kaggle the hidden test replaces it", location=True)
    sample_submission_file: str = setting("sample_submission.csv", "defines submission rows and order", location=True)
    clean_text: bool = setting(True, "unescape HTML entities and fold whitespace runs (safe for any tokenizer)")


@dataclass
class FoldsConfig:
    n_folds: int = setting(5, "K of K-fold; every later stage reads this split from folds.csv", check=at_least(2))
    seed: int = setting(42, "shuffles question groups; recorded in folds.json", check=SEED)
    group_key: str = setting("question_body", "answers to one question share a fold",
                             choices=("question_body", "question_title"))
    stratify: bool = setting(False, "balance folds by a target-profile bin of each question group")
    file: str = setting("folds.csv", "under output.dir unless absolute; written once by `folds`, read by every later "
                        "stage (its content is checked by fingerprint)", location=True)


@dataclass
class EncodeConfig:
    inputs: str = setting("joint", "joint: one sequence per row; dual: a question and an answer sequence (2nd/6th "
                          "place)", choices=("joint", "dual"))
    mode: str = setting("triple", "joint layout: triple = [CLS] title [SEP] body [SEP] answer [SEP]; pair = question, "
                        "answer", choices=("triple", "pair"))
    max_len: int = setting(512, "joint: the row's tokens; dual: the question sequence's (batches may be cut shorter)",
                           check=at_least(16))
    answer_max_len: int = setting(512, "dual only: the answer sequence's tokens ([CLS] title [SEP] answer [SEP])",
                                  check=at_least(16))
    # Field weights: rescaled to token budgets that share max_len minus the special tokens; a field shorter than its
    # budget gives the rest to the longer fields; a longer one keeps its head and tail.
    title_weight: int = setting(30, "weight of the title in the token budget", check=WEIGHT)
    question_weight: int = setting(239, "weight of the question body in the token budget", check=WEIGHT)
    answer_weight: int = setting(239, "weight of the answer in the token budget", check=WEIGHT)
    title_floor: int = setting(0, "tokens the title keeps (up to its length, at most half the sequence) before the "
                               "other fields share the rest by weight, at any max_len: the weights alone leave a "
                               "median 11-token title 3 tokens at 64+64 (shipped configs: 26, 1st place's title "
                               "budget); 0: weights only (runs trained before it existed)", check=at_least(0))
    head_share: float = setting(0.5, "share of a truncated field kept from its start (rest from its end)",
                                check=between(0, 1))
    cache_dir: str = setting("cache", "under output.dir unless absolute; encoded arrays keyed by data + tokenizer + "
                             "settings", location=True)

    def check(self, cfg):
        budgets = {"title_weight": self.title_weight, "question_weight": self.question_weight,
                   "answer_weight": self.answer_weight}
        if not sum(budgets.values()):
            raise ConfigError(f"encode field weights {budgets}: expected weights >= 0 with a positive sum")
        sequences = [("max_len", self.max_len, budgets)]
        if self.inputs == "dual":
            sequences = [("max_len", self.max_len, {k: budgets[k] for k in ("title_weight", "question_weight")}),
                         ("answer_max_len", self.answer_max_len, {k: budgets[k] for k in ("title_weight", "answer_weight")})]
        for key, max_len, weights in sequences:
            if not sum(weights.values()):
                raise ConfigError(f"encode field weights {weights}: the sequence of encode.{key} needs a positive one")
            room = max_len - 5  # at most 5 special tokens per row
            starved = [k for k, v in weights.items() if v and int(v * room / sum(weights.values())) < 1]
            if starved:
                raise ConfigError(f"encode.{key} = {max_len} leaves {starved} no token at these field weights "
                                  f"{weights}; raise {key} or that weight, or set it to 0 to leave the field out")


@dataclass
class ModelConfig:
    path: str = setting("input/models/bert-base-uncased", "HF dir (config.json + safetensors) or keras-hub preset dir; "
                        "its weights are checked by hash", location=True)
    random_init: bool = setting(False, "build the backbone from its config only (tests, demo, benchmarks)")
    towers: str = setting("shared", "dual: shared (siamese, one backbone for both sequences) or separate (two)",
                          choices=("shared", "separate"))
    pooling: str = setting("mean", "mean (masked), cls, weighted (learned sum of the last pool_layers layers, "
                           "mean-pooled), cls_all_layers (softmax-weighted sum of every transformer layer's first "
                           "token, equal weights to start) or cls_all_states (1st place: the embeddings' output too, "
                           "13 states in BERT-base, weights starting at -3 with the top layer's at 0)",
                           choices=("mean", "cls", "weighted", "cls_all_layers", "cls_all_states"))
    pool_layers: int = setting(4, "layers summed by weighted pooling", check=at_least(1))
    head: str = setting("linear", "linear (one layer for all targets) or per_target (a small two-layer head each: 2nd)",
                        choices=("linear", "per_target"))
    head_hidden: int = setting(256, "hidden units of each per-target head", check=at_least(1))
    split_heads: bool = setting(False, "dual: question targets from the question side only, answer targets from both")
    dropout: float = setting(0.1, "dropout before the output layer", check=between(0, 1, high_open=True))
    layer_dropout: float = setting(0.0, "cls_all_layers / cls_all_states: dropout on each state's [CLS] before the "
                                   "weighted sum (1st place: 0.2)", check=between(0, 1, high_open=True))
    backbone_dropout: float = setting(-1.0, "<0 keeps the backbone's own rate (BERT: 0.1); >=0 sets it (0: exact "
                                      "replays)", check=(lambda v: v < 1, "-1 (the backbone's own) or a value in [0, 1)"))
    dropout_samples: int = setting(1, ">1 turns on multi-sample dropout (averaged logits)", check=at_least(1))
    category: bool = setting(False, "one-hot of the `category` column concatenated before the head (6th/10th place)")
    host_dim: int = setting(0, ">0: a host embedding of this size before the head (unseen hosts share one bucket)",
                            check=at_least(0))

    def check(self, cfg):
        joint = cfg.encode.inputs != "dual"
        if joint and self.split_heads:
            raise ConfigError("model.split_heads = true needs encode.inputs = 'dual' (a question side to read)")
        if self.layer_dropout and self.pooling not in ("cls_all_layers", "cls_all_states"):
            raise ConfigError(f"model.layer_dropout = {self.layer_dropout} drops each layer's [CLS] before their "
                              f"weighted sum: it needs model.pooling = 'cls_all_layers' or 'cls_all_states', not "
                              f"{self.pooling!r}")
        if joint and self.towers == "separate":
            raise ConfigError("model.towers = 'separate' needs encode.inputs = 'dual' (two sequences, one tower each); "
                              "joint inputs have one sequence and one backbone")


@dataclass(frozen=True)
class Batching:
    """How rows become batches (train.bucketing, train.dynamic_padding, train.pad_multiple), as one value."""
    bucketing: bool = True
    dynamic_padding: bool = True
    pad_multiple: int = 32

    def unbucketed(self) -> "Batching":
        return dataclasses.replace(self, bucketing=False)


@dataclass
class TrainConfig:
    run_name: str = setting("", "output/runs/<run_name>; empty means <config name>-s<seed>", plain_name=True)
    seed: int = setting(42, "run seed; per-fold seeds derive from it so a resumed fold repeats exactly",
                        check=between(0, 2**32 // 1000 - 1))  # fold k's seed is seed * 1000 + k
    folds: list[int] = setting([], "folds to train; empty means all", resumable=True)
    kind: str = setting("finetune", "finetune: train backbone and head by gradient descent; ridge: the backbone "
                        "frozen (its features pooled by model.pooling / model.pool_layers at their starting weights: "
                        "weighted = the mean of the last pool_layers layers) and one ridge per target, its penalty "
                        "chosen by inner CV on the training folds (minutes on a CPU: the floor a fine-tuned recipe "
                        "must clear, and a blend member)", choices=("finetune", "ridge"))
    ridge_alphas: list[float] = setting([1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0],
                                        "kind = ridge: the penalties tried per target (features standardised on the "
                                        "training rows)", check=POSITIVE)
    ridge_inner_folds: int = setting(3, "kind = ridge: question-grouped inner folds of the training rows that choose "
                                     "each target's penalty", check=at_least(2))
    epochs: int = setting(3, "passes over the training folds", check=at_least(0))
    batch_size: int = setting(8, "rows per micro-batch (per replica under a distribution strategy)", check=at_least(1))
    grad_accum: int = setting(1, "micro-batches per optimizer step (accumulated in one step: works on several GPUs "
                              "too)", check=at_least(1))
    lr_backbone: float = setting(3e-5, "peak learning rate of the pretrained backbone", check=at_least(0))
    lr_head: float = setting(1e-3, "peak learning rate of the freshly initialised head", check=at_least(0))
    weight_decay: float = setting(0.01, "AdamW decoupled decay (not on biases and norms), at each group's own "
                                  "learning rate (as PyTorch's AdamW with parameter groups)", check=at_least(0))
    schedule: str = setting("linear", "learning-rate shape after warm-up (see train/optim.py): linear or cosine to 0, "
                            "one_cycle (peak/25 -> peak -> peak/25: 6th place), constant (public baseline)",
                            choices=("linear", "cosine", "one_cycle", "constant"))
    warmup: float = setting(0.1, "share of each stage's optimizer steps spent warming up", check=between(0, 1))
    warmup_steps: int = setting(0, ">0: warm-up in optimizer steps instead of a share (1st place: 200)",
                                check=at_least(0))
    head_only_epochs: int = setting(0, "extra epochs with the backbone frozen (only the head learns, at lr_head)",
                                    check=at_least(0))
    head_only_stage: str = setting("first", "when those run: first (10th place) or last (6th place)",
                                   choices=("first", "last"))
    head_only_lr: float = setting(0.0, ">0: the head-only stage's learning rate, constant (6th place: 1e-5 for 10 "
                                  "epochs); 0: lr_head on train.schedule", check=at_least(0))
    lr_layer_decay: float = setting(1.0, "layer-wise LR decay: each lower backbone layer's rate times this (1 = off)",
                                    check=between(0, 1, low_open=True))
    ema: float = setting(0.0, ">0: momentum of an exponential moving average of the weights, evaluated and saved "
                         "instead", check=between(0, 1, high_open=True))
    targets: str = setting("raw", "what the model learns: raw labels, rank (min-max ranks) or ordinal (see "
                           "modeling/targets.py)", choices=("raw", "rank", "ordinal"))
    pos_weight: list[float] = setting([], "BCE weight of positives: one value, or one per target", check=POSITIVE)
    clipnorm: float = setting(1.0, "global gradient-norm clip; 0 disables", check=at_least(0))
    keep: str = setting("last", "the epoch whose weights a fold keeps: last (honest; measured no worse on the real rows, "
                        "README 'Honest validation'), best by the held fold's Spearman (optimistic: chosen on the rows "
                        "that score it), or inner (best on inner_share of the training questions, held out of "
                        "training: the held fold never chooses)", choices=("last", "best", "inner"))
    inner_share: float = setting(0.1, "keep = inner: share of each fold's training questions held out to choose the "
                                 "epoch (whole questions, seeded by the fold's seed)", check=between(0, 0.5, low_open=True))
    patience: int = setting(0, "early stopping after this many epochs without improvement; 0 disables",
                            check=at_least(0))
    bucketing: bool = setting(True, "group rows of similar length into batches")
    dynamic_padding: bool = setting(True, "cut each batch to its longest row (rounded up to pad_multiple)")
    pad_multiple: int = setting(32, "bounds the number of distinct shapes (retracing, XLA compiles)", check=at_least(1))
    eval_batch_size: int = setting(0, "inference batch (rows sorted by length); 0 = auto: 64 on accelerators, 16 on a "
                                   "CPU (same speed per token there, less padding: benchmarks/)", check=at_least(0),
                                   resumable=True)
    mixed_precision: str = setting("auto", "auto (bf16/fp16 on accelerators; on a CPU bf16 where it has AMX or AVX-512 "
                                   "BF16 units (TensorFlow), else fp32), none, bfloat16, float16",
                                   choices=("auto", "none", "bfloat16", "float16"), resumable=True)
    predict_precision: str = setting("auto", "auto: what the predicting device supports (fp16 on P100/T4, bf16 on a "
                                     "CPU as train.mixed_precision), whatever trained",
                                     choices=("auto", "none", "bfloat16", "float16"), resumable=True)
    xla: bool = setting(False, "jit-compile the train/predict steps (accelerators; TensorFlow: JAX always compiles; "
                        "not on a CPU, where XLA trains ~9x slower: benchmarks/README.md)",
                        resumable=True)
    strategy: str = setting("auto", "tf.distribute (JAX: DataParallel): auto (TPU, else Mirrored on 2+ GPUs, else one "
                            "device), default (one device), mirrored (every GPU; batch_size rows each), tpu (README)",
                            choices=("auto", "default", "mirrored", "tpu"), resumable=True)
    verbose: int = setting(1, "progress within an epoch: 1 a bar on a terminal, else a log line every ~10% of an "
                           "epoch; 0 or 2 none (each epoch's result line is logged either way)", resumable=True)
    max_steps: int = setting(0, ">0: a throughput probe of this many steps per fold; writes probes/, never a finished "
                             "fold", check=at_least(0), resumable=True)
    pseudo: str = setting("", "a `pseudo` output (name under output/pseudo/ or a dir): fold k adds its fold<k> labels' "
                          "rows")
    pseudo_weight: float = setting(1.0, "loss weight of each pseudo-labelled row (a labelled row weighs 1)",
                                   check=POSITIVE)

    @property
    def batching(self) -> Batching:
        return Batching(self.bucketing, self.dynamic_padding, self.pad_multiple)

    def check(self, cfg):
        if len(self.pos_weight) not in (0, 1, len(TARGETS)):
            raise ConfigError(f"train.pos_weight = {self.pos_weight}: expected positive values, one for every target "
                              f"or {len(TARGETS)} (one per target, in sample_submission order), or none")
        bad = [f for f in self.folds if not 0 <= f < cfg.folds.n_folds]
        if bad:
            raise ConfigError(f"train.folds = {self.folds}: folds {bad} outside 0..{cfg.folds.n_folds - 1}")
        if self.kind == "ridge":
            clash = {f"{where}.{k}": v for where, k, v, plain in (
                ("model", "head", cfg.model.head, "linear"), ("model", "split_heads", cfg.model.split_heads, False),
                ("train", "pseudo", self.pseudo, ""), ("train", "pos_weight", self.pos_weight, []),
                ("train", "max_steps", self.max_steps, 0)) if v != plain}
            if clash:
                raise ConfigError(f"train.kind = 'ridge' fits one linear map per target on frozen features: it "
                                  f"cannot take {clash}; leave them at their defaults (model.head = 'linear', "
                                  "split_heads false, no pseudo, pos_weight or max_steps)")
            if self.targets == "ordinal":
                raise ConfigError("train.kind = 'ridge' with train.targets = 'ordinal': the ridge's head has one unit "
                                  "per target; use targets = 'raw' or 'rank'")
            if not self.ridge_alphas:
                raise ConfigError("train.ridge_alphas is empty: expected at least one penalty > 0")
        if self.epochs + self.head_only_epochs < 1:
            raise ConfigError(f"train.epochs = {self.epochs}, train.head_only_epochs = {self.head_only_epochs}: "
                              "expected at least one epoch in all")


@dataclass
class PretrainConfig:
    """Masked-LM pre-training of model.path on text alone (`pretrain`, see train/pretrain.py); writes a model directory."""
    name: str = setting("", "output/pretrained/<name>/; empty means <model dir name>-mlm-s<seed>", plain_name=True)
    use_train: bool = setting(True, "the train file's titles, bodies and answers (text only: targets are never read)")
    use_test: bool = setting(True, "the test file's text")
    extra_csv: list[str] = setting([], "more text: CSVs with any of question_title/question_body/answer",
                                   location=True)
    max_len: int = setting(256, "tokens per window, specials included; longer documents are cut into several windows",
                           check=at_least(8))
    mask_rate: float = setting(0.15, "share of each window's tokens the model predicts (80% masked, 10% random, 10% "
                               "kept)", check=between(0, 1, True, True))
    whole_word: bool = setting(True, "mask all pieces of a word together (where the tokenizer marks word pieces)")
    epochs: float = setting(1.0, "passes over the windows (ignored when steps > 0)", check=at_least(0))
    steps: int = setting(0, ">0: optimizer steps instead of epochs", check=at_least(0))
    batch_size: int = setting(16, "windows per step (per replica)", check=at_least(1))
    lr: float = setting(5e-5, "peak learning rate: linear warm-up, then linear decay to 0 (AdamW)", check=POSITIVE)
    warmup: float = setting(0.06, "share of the steps spent warming up", check=between(0, 1))
    weight_decay: float = setting(0.01, "AdamW decoupled decay (not on biases and norms)", check=at_least(0))
    checkpoint_every: int = setting(200, "steps between resumable checkpoints (and progress lines off a terminal)",
                                    check=at_least(1))
    seed: int = setting(42, "window order and masks, both drawn per step from it; recorded in pretrain.json",
                        check=SEED)
    verbose: int = setting(1, "0 silent; 1 a bar on a terminal, else a line per checkpoint; 2 a line per checkpoint")

    def check(self, cfg):
        if not (self.epochs > 0 or self.steps > 0):
            raise ConfigError(f"pretrain.epochs = {self.epochs}; expected a value > 0 (or steps > 0)")


@dataclass
class PseudoConfig:
    """Leak-free pseudo-labels (`pseudo`, see train/pseudo.py): teacher fold k labels the rows for student fold k only."""
    teachers: list[str] = setting([], "finished runs (names or dirs); `--runs` sets them")
    input: str = setting("", "CSV of unlabeled rows (qa_id + title/body/answer, + category/host); empty: "
                         "data.test_file", location=True)
    name: str = setting("", "output/pseudo/<name>/; empty means <first teacher>-on-<input stem>", plain_name=True)


@dataclass
class PostprocessConfig:
    """Per-column rank post-processing: chosen on other folds, scored on the held fold (see evaluate/postprocess.py)."""
    methods: list[str] = setting(["snap", "round", "clip"], "candidates per column: snap to training levels, round to "
                                 "a grid, clip the tails, lohi (low/high clipping), kmeans (k levels)",
                                 choices=("snap", "round", "clip", "lohi", "kmeans"))
    round_grids: list[int] = setting([2, 3, 4, 5, 6, 8, 10], "k in round(p*k)/k", check=at_least(1))
    kmeans_levels: list[int] = setting([3, 4, 5, 6, 8], "k of the kmeans candidates", check=at_least(2))
    blend: bool = setting(True, "fit it on the ensemble's OOF and apply it to the test blend (the submission)")
    keep_margin: float = setting(0.0, "a column keeps its transform when the nested gain clears this many of its own "
                                 "standard errors (0: any gain); benchmarks/postprocess_transfer.py measures both",
                                 check=at_least(0))
    eval_rows: int = setting(476, "rows of each scored subset when estimating a transform's gain and deciding to "
                             "keep it: a transform's gain depends on the size of the set it meets, and 476 is "
                             "the competition's test.csv (the leaderboard's visible test); 0: all held rows",
                             check=(lambda v: v == 0 or v >= 20, "0 (all held rows) or at least 20 (on fewer rows "
                                    "a Spearman is mostly ties: with 1 row every score is 0)"))


@dataclass
class EnsembleConfig:
    runs: list[str] = setting([], "run names or dirs; empty means this config's run")
    method: str = setting("mean", "mean, rank (average of ranks) or optimize (OOF weights by coordinate ascent, "
                          "nested)", choices=("mean", "rank", "optimize"))
    per_column: bool = setting(False, "optimize: one weight per run and target (6th place) instead of one per run")
    grid: list[float] = setting([0.0, 1.0, 2.0, 4.0], "optimize: the weights each run may take", check=at_least(0))
    name: str = setting("ensemble", "output/ensembles/<name>/", plain_name=True)

    def check(self, cfg):
        if not any(g > 0 for g in self.grid):
            raise ConfigError(f"ensemble.grid = {self.grid}: expected weights >= 0, at least one positive")


@dataclass
class OutputConfig:
    dir: str = setting("output", "runs/, ensembles/, folds.csv, cache/ and submission.csv go here", location=True)
    submission: str = setting("submission.csv", "the file Kaggle scores; under output.dir unless absolute",
                              location=True)


@dataclass
class KaggleConfig:
    competition: str = setting("google-quest-challenge", "competition slug for download and kernel sources")
    model: str = setting("", "model to download: owner/model/framework/variation (Kaggle Models) or owner/dataset")
    model_name: str = setting("", "folder under models_dir for the downloaded model (default: the whole handle, "
                              "'/' as '__', so two models at one version number never share a folder); set it "
                              "to the folder model.path names")
    models_dir: str = setting("input/models", "where downloaded models go", location=True)
    dataset: str = setting("", "owner/slug of the bundle dataset for package --upload and the kernel")
    kernel: str = setting("", "owner/slug of the inference kernel")
    code_dataset: str = setting("", "owner/slug of the code + wheels dataset (`package --code-only`); empty: "
                                "kaggle.dataset")
    train_kernel: str = setting("", "owner/slug prefix of training kernels; `kernel --train --folds 0,1` pushes "
                                "<prefix>-f0-1")
    accelerator: str = setting("gpu", "kernel accelerator: QUEST is a code competition scored from CPU or GPU "
                               "notebooks only (P100/T4: gpu)", choices=("none", "gpu"))
    machine_shape: str = setting("", "GPU kernels' machine (kernel-metadata machine_shape): empty is Kaggle's "
                                 "default, a P100", choices=("", "NvidiaTeslaP100", "NvidiaTeslaT4"))
    time_budget: float = setting(0.75, "share of Kaggle's run-time limit (2 h GPU, 9 h CPU) the inference kernel's "
                                 "projected 10,000-row re-run may use; over it the commit run fails (0: no check)",
                                 check=between(0.0, 1.0))
    wheels: list[str] = setting([], "extra pure-Python wheels (name==version); keras/keras-hub as trained are "
                                "automatic", check=(lambda s: not s.strip().startswith("-"),
                                                          "'name==version' entries, not a pip option"))
    image: str = setting("configs/kaggle-image-constraints.txt", "the Kaggle image's versions: decides which wheels "
                         "to bundle", location=True)
    wheel_dir: str = setting("input/wheels", "wheels are taken from here first; `pip download`ed ones are kept here",
                             location=True)


@dataclass
class Config:
    name: str = setting("default", "config name (TOML file stem); used in default run names", plain_name=True)
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

    # ---- locations (absolute; relative config paths hang off the project root) ----
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
        return layout.runs_root(self) / self.run_name


def field_facts(cfg: Config | None = None):
    """(section, key, Facts) of every field: what --help, resume checks and collect read."""
    cfg = cfg or Config()
    return [(name, key, facts) for name, section in settings.sections(cfg).items()
            for key, facts in settings.facts_of(section).items()]


def choices(section: str, key: str) -> tuple:
    return settings.facts_of(getattr(Config(), section))[key].choices


def validate(cfg: Config) -> Config:
    """Each field's facts, then each section's own checks (those spanning its fields or other sections)."""
    settings.check_fields("", cfg)
    for name, section in settings.sections(cfg).items():
        settings.check_fields(f"{name}.", section)
    for section in settings.sections(cfg).values():
        if hasattr(section, "check"):
            section.check(cfg)
    return cfg


def override(cfg: Config, assignment: str):
    settings.override(cfg, assignment)


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
            settings.apply(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    for assignment in overrides:
        override(cfg, assignment)
    return validate(cfg)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    return settings.to_toml(to_dict(cfg))


def from_toml_text(text: str, overrides: list[str] = ()) -> Config:
    """A config written by to_toml (a run's config.toml, a training kernel's parameters), then overrides."""
    cfg = Config()
    try:
        settings.apply(cfg, tomllib.loads(text))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}") from None
    for assignment in overrides:
        override(cfg, assignment)
    return validate(cfg)
