import pytest

from pipeline.core import config
from pipeline.evaluate import postprocess
from pipeline.run.rundir import training_settings


def test_every_config_file_loads_and_round_trips():
    for path in sorted((config.ROOT / "configs").glob("*.toml")):
        cfg = config.load(path)
        assert cfg.name == path.stem
        assert config.from_toml_text(config.to_toml(cfg)) == cfg


def test_overrides_are_typed():
    cfg = config.load(None, ["train.epochs=2", "train.lr_head=1e-4", "train.folds=0,2", "train.xla=true",
                             "train.run_name=2024", "postprocess.methods=snap,clip", "train.warmup=0"])
    assert (cfg.train.epochs, cfg.train.lr_head, cfg.train.folds, cfg.train.xla) == (2, 1e-4, [0, 2], True)
    assert cfg.train.run_name == "2024" and cfg.postprocess.methods == ["snap", "clip"]
    assert isinstance(cfg.train.warmup, float)


@pytest.mark.parametrize("override, message", [
    ("train.epochz=3", "valid keys: run_name, seed, folds, kind, ridge_alphas"),
    ("trian.epochs=3", "valid sections: data, folds"),
    ("train.epochs=three", "train.epochs: expected int"),
    ("train.xla=1", "train.xla: expected bool"),
    ("model.pooling=max", "expected one of mean, cls, weighted"),
    ("train.folds=7", "outside 0..4"),
    ("epochs", "expects section.key=value"),
    ("train.folds=a", "--set train.folds: expected int values, got 'a'"),
    ("folds.seed=-1", r"folds.seed = -1; expected a value in \[0, 4294967295\]"),
    ("train.seed=5000000", r"train.seed = 5000000; expected a value in \[0, 4294966\]"),
    ("name=../../../victim", "name = '../../../victim': expected a plain name"),
    ("train.pos_weight=x", "--set train.pos_weight: expected float values, got 'x'"),
    ("train.lr_head=inf", "train.lr_head = inf; expected finite numbers"),
    ("train.lr_backbone=nan", "train.lr_backbone = nan; expected finite numbers"),
    ("train.pos_weight=2,-1", r"train.pos_weight = \[2.0, -1.0\]; expected a value > 0"),
    ("model.towers=separate", "model.towers = 'separate' needs encode.inputs = 'dual'"),
    ("postprocess.methods=snap,median", r"postprocess.methods = \['snap', 'median'\]; expected values of snap, round"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, [override])


def test_bad_toml_file_names_file_and_key(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("[train]\nepochs = 2\nlearning_rate = 1e-3\n")
    with pytest.raises(config.ConfigError, match=r"x\.toml: unknown key 'train.learning_rate'.*lr_backbone"):
        config.load(f)
    f.write_text("[train\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(f)


def test_relative_paths_hang_off_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None)
    assert cfg.folds_file == config.ROOT / "output" / "folds.csv"
    assert cfg.data_file("train_file") == config.ROOT / "input" / "google-quest-challenge" / "train.csv"
    assert str(cfg.path("/abs/x")) == "/abs/x"


def test_each_field_carries_its_facts_and_the_rules_derive_from_them():
    facts = {(s, k): f for s, k, f in config.field_facts()}
    assert all(f.help for f in facts.values()) and len(facts) > 100
    locations = {key for key, f in facts.items() if f.location}
    assert {("model", "path"), ("folds", "file"), ("encode", "cache_dir"), ("data", "dir")} <= locations
    assert postprocess.METHODS == facts[("postprocess", "methods")].choices
    settings = training_settings(config.load(None))  # what every fold of a run must share
    assert ("train", "epochs") in settings and ("model", "pooling") in settings
    assert not {("train", "verbose"), ("train", "folds"), ("model", "path"), ("folds", "file")} & set(settings)
