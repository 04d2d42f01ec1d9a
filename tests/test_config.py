import pytest

from pipeline import config


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
    ("train.epochz=3", "valid keys: run_name, seed, folds, epochs"),
    ("trian.epochs=3", "valid sections: data, folds"),
    ("train.epochs=three", "train.epochs: expected int"),
    ("train.xla=1", "train.xla: expected bool"),
    ("model.pooling=max", "expected one of mean, cls, weighted"),
    ("train.folds=7", "outside 0..4"),
    ("epochs", "expects section.key=value"),
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
