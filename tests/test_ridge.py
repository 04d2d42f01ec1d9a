"""The frozen-feature run kind (train.kind = "ridge"): the ridge's math, and a ridge run as an ordinary run."""
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_train_config
from pipeline.cli import stages
from pipeline.core import config, files
from pipeline.core.columns import TARGETS
from pipeline.modeling import targets
from pipeline.run.rundir import Run
from pipeline.train import ridge

pytestmark = pytest.mark.backend  # run under JAX too (make jax-check)


def _planted(n=360, d=12, seed=0):
    """Features, labels and groups: the first 10 targets a clean linear signal, the rest pure noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d)  # features on very different scales
    signal = x @ (rng.normal(size=(d, 10)) / x.std(0)[:, None])
    y = rng.uniform(size=(n, len(TARGETS)))
    y[:, :10] = 1 / (1 + np.exp(-signal / 2))
    return x, np.round(y, 3), np.repeat(np.arange(n // 3), 3)


def test_ridge_matches_sklearn_at_each_penalty_in_the_features_own_units():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _ = _planted()
    alphas = [0.5, 50.0]
    kernels, biases = ridge._coefficients(x, y, alphas)
    for a, kernel, bias in zip(alphas, kernels, biases):
        expected = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x, y).predict(x[:20])
        np.testing.assert_allclose(x[:20] @ kernel + bias, expected, atol=1e-8)
    paths = ridge._paths(x[:300], y[:300], x[300:], alphas)
    for a, p in zip(alphas, paths):
        np.testing.assert_allclose(p, make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x[:300], y[:300])
                                   .predict(x[300:]), atol=1e-8)


def test_inner_cv_chooses_each_targets_penalty_on_the_training_rows():
    x, y, groups = _planted()
    alphas = [0.01, 1.0, 100.0, 1e5]
    r = ridge.fit(x, y, targets.fit("raw", y), groups, alphas, 3)
    chosen = np.array(r.alphas)
    assert (chosen[:10] <= 1.0).all(), r.alphas  # a clean signal wants little shrinkage
    for a in alphas:  # per column the best of the grid: never below any one penalty for every column
        assert r.inner_spearman >= ridge.fit(x, y, targets.fit("raw", y), groups, [a], 3).inner_spearman - 1e-12
    assert r.kernel.shape == (x.shape[1], len(TARGETS)) and r.bias.shape == (len(TARGETS),)
    assert r.inner_spearman > 0.25  # 10 of 30 columns near 1, the rest near 0
    # per column the kernel is that column's ridge at its own penalty
    kernels, biases = ridge._coefficients(x, y, alphas)
    for c in (0, 15):
        i = alphas.index(r.alphas[c])
        np.testing.assert_allclose(r.kernel[:, c], kernels[i][:, c], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.bias[c], biases[i][c], rtol=1e-5, atol=1e-6)


def test_ridge_settings_that_cannot_apply_are_refused(tmp_path, synth_dir, tiny_model_dir):
    for sets, named in (({"model__head": "per_target"}, "model.head"), ({"train__pos_weight": "[2.0]"}, "pos_weight"),
                        ({"train__targets": "ordinal"}, "ordinal")):
        with pytest.raises(config.ConfigError, match=named):
            tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__kind="ridge", **sets)


def test_a_ridge_run_is_an_ordinary_run(tmp_path, synth_dir, tiny_model_dir):
    """Folds written like fine-tuned ones; the saved model (frozen backbone + the ridge as its head) reproduces the
    fold's predictions; every fold holds the same backbone; a re-fitted fold repeats exactly; predict averages."""
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__kind="ridge", model__pooling="weighted",
                            model__pool_layers=2, train__ridge_alphas="[1.0, 100.0]", train__targets="rank")
    stages.folds(cfg)
    run = Run(stages.train(cfg)[0])
    assert run.finished_folds() == [0, 1]
    models = [run.load_fold(k) for k in (0, 1)]
    assert models[0].settings["output"] == "linear"
    for k, m in enumerate(models):
        metrics = files.read_json(run.fold(k).metrics)
        assert metrics["kind"] == "ridge" and len(metrics["ridge_alphas"]) == len(TARGETS)
        assert set(metrics["ridge_alphas"]) <= {1.0, 100.0}
    backbone = [np.concatenate([w.ravel() for w in m.backbone.get_weights()]) for m in models]
    np.testing.assert_array_equal(backbone[0], backbone[1])
    heads = [m.get_layer("head").get_weights()[0] for m in models]
    assert np.abs(heads[0] - heads[1]).max() > 1e-4  # each fold its own ridge

    predicted = pd.read_csv(stages.predict(cfg, input_csv=None)[0])
    per_fold = [pd.read_csv(run.fold(k).test) for k in (0, 1)]
    np.testing.assert_allclose(predicted[list(TARGETS)], (per_fold[0][list(TARGETS)] + per_fold[1][list(TARGETS)]) / 2,
                               atol=2e-5)  # the rebuilt models reproduce what the ridge predicted

    before = per_fold[1]
    shutil.rmtree(run.fold(1).root)
    stages.train(cfg)
    np.testing.assert_allclose(pd.read_csv(run.fold(1).test)[list(TARGETS)], before[list(TARGETS)], atol=1e-6)
    assert stages.validate(cfg)  # the report reads it like any run
