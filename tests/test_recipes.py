"""Every leaderboard recipe in configs/recipes/ runs end to end (folds -> train -> validate -> predict ->
ensemble) on generated data with a tiny backbone, its own settings otherwise intact, so none rots."""
import json

import pandas as pd
import pytest

from conftest import ROOT, make_config
from pipeline.cli import stages
from pipeline.core import config, files, layout
from pipeline.core.columns import TARGETS

RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.toml"))
# Only size is shrunk: folds (2, one of them trained: each fold costs a model build and a trace), sequence
# lengths, epochs (a head-only stage to 1 epoch), batch; every modelling choice stays the recipe's.
SMALL = {"folds.n_folds": 2, "train.folds": "[0]", "encode.max_len": 64, "encode.answer_max_len": 48, "train.epochs": 1,
         "train.batch_size": 16, "train.verbose": 0, "model.random_init": "true", "model.head_hidden": 16}


def test_the_recipes_are_all_there_and_documented():
    names = {p.stem for p in RECIPES}
    assert {"public-baseline", "first-place-bert", "second-place-dual", "sixth-place-siamese",
            "tenth-place"} <= names
    table = (ROOT / "RECIPES.md").read_text()
    for name in names:
        assert f"configs/recipes/{name}.toml" in table, f"{name} missing from RECIPES.md"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_end_to_end(tmp_path, synth_dir, tiny_model_dir, recipe):
    full = config.load(recipe)
    base = make_config(tmp_path, synth_dir, tiny_model_dir)
    overrides = [f"{k}={v}" for k, v in {
        "data.dir": synth_dir, "folds.file": base.folds.file, "encode.cache_dir": base.encode.cache_dir,
        "output.dir": base.output.dir, "output.submission": base.output.submission, "model.path": tiny_model_dir,
        "model.pool_layers": 2,  # the tiny backbone has 2 layers (weighted pooling refuses more)
        **SMALL, **({"train.head_only_epochs": 1} if full.train.head_only_epochs else {})}.items()]
    cfg = config.load(recipe, overrides)
    stages.run_all(cfg)
    run = layout.RunPaths(cfg.run_dir)
    assert run.name == f"{recipe.stem}-s{full.train.seed}" and run.finished_folds() == [0]
    recorded = config.from_toml_text(run.config.read_text())
    for section in ("model", "train", "encode"):  # the recipe's choices, not the defaults, were trained
        for key in ("inputs", "towers", "pooling", "head", "targets", "schedule", "head_only_stage", "head_only_lr",
                    "lr_layer_decay", "pos_weight", "category", "host_dim", "head_share", "layer_dropout",
                    "weight_decay", "clipnorm", "dropout"):
            if hasattr(getattr(full, section), key):
                assert getattr(getattr(recorded, section), key) == getattr(getattr(full, section), key), key
    description = json.loads(run.model.read_text())["config"]
    assert description["inputs"] == full.encode.inputs and description["pooling"] == full.model.pooling
    sub = pd.read_csv(cfg.submission_file)
    assert sub[list(TARGETS)].notna().all().all() and sub[list(TARGETS)].to_numpy().min() >= 0
    ens = files.read_json(layout.ensemble(cfg).summary)
    assert (ens["postprocess"] is not None) == full.postprocess.blend


def test_recipes_md_lists_every_setting_each_recipe_inherits():
    """A new default, or a recipe that stops setting something, changes the table: RECIPES.md must follow."""
    from pipeline.dev import recipes

    assert recipes.table() in (ROOT / "RECIPES.md").read_text()
    inherited = recipes.inherited(ROOT / "configs" / "recipes" / "public-baseline.toml")
    assert inherited["train.weight_decay"] == 0.01 and "train.lr_head" not in inherited
