"""tf.distribute exercised on this machine (issue 15): the CPU split into two logical devices, MirroredStrategy
through the pipeline's own training against one device at the same global batch. Each run is its own process
(devices are split before TensorFlow starts). Without dropout (model.backbone_dropout = 0: each replica would draw
its own masks) the two agree step by step."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from pipeline.core import files, layout
from pipeline.core.columns import ID, TARGETS
from pipeline.data import tables
from pipeline.modeling import model
from pipeline.run import predict
from pipeline.run.rundir import Run

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow_only]  # MirroredStrategy over logical CPUs


def _train(tmp_path, synth_dir, model_dir, name: str, replicas: int, **sets) -> dict:
    base = {"data.dir": synth_dir, "output.dir": tmp_path / name, "folds.file": tmp_path / "folds.csv",
            "encode.cache_dir": tmp_path / "cache", "model.path": model_dir, "model.random_init": "true",
            "model.dropout": 0.0, "model.backbone_dropout": 0.0, "folds.n_folds": 2, "train.folds": "[0]", "encode.max_len": 64,
            "encode.title_weight": 8, "encode.question_weight": 24, "encode.answer_weight": 28, "train.epochs": 2,
            "train.lr_backbone": 2e-3, "train.lr_head": 3e-3, "train.verbose": 0, "train.eval_batch_size": 32,
            # the last epoch's weights, so runs are compared after the same steps (the best epoch by validation
            # Spearman is a near tie on tiny models: float16's rounding could keep epoch 1 where float32 keeps 2)
            "train.keep": "last", "train.mixed_precision": "none", "train.predict_precision": "none",  # as conftest
            "train.strategy": "mirrored" if replicas > 1 else "default", **sets}
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps({"replicas": replicas, "out": str(tmp_path / f"{name}-result.json"),
                                "sets": [f"{k}={v}" for k, v in base.items()]}))
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "distribute_worker.py"), str(spec)],
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp_path / f"{name}-result.json").read_text())


def _oof(result) -> np.ndarray:
    return pd.read_csv(layout.RunPaths(result["run_dir"]).fold(0).oof).sort_values(ID)[list(TARGETS)].to_numpy()


CLIP = {"train.clipnorm": 0.05}
TWO_REPLICAS = {"train.batch_size": 4, "train.grad_accum": 2, **CLIP}  # a global batch of 16


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, synth_dir, tiny_model_dir):
    """The float32 one-device run at a global batch of 16 the two-replica runs are held against."""
    tmp = tmp_path_factory.mktemp("one-device")
    return tmp, _train(tmp, synth_dir, tiny_model_dir, "one", 1, **{"train.batch_size": 16, **CLIP})


def test_mirrored_two_replicas_train_as_one_device_at_the_same_global_batch(one_device, synth_dir, tiny_model_dir):
    """Two replicas of 4 rows x 2 accumulated micro-batches (a global batch of 16 split between them, each
    replica's loss scaled by 1/2 so the summed gradients are the global mean) against one device with batch 16:
    the same losses, weights and predictions, with the backbone's and the head's learning rates and gradient
    clipping that bites (clipnorm 0.05: the whole step's gradient is clipped, not each replica's share)."""
    tmp_path, one = one_device
    two = _train(tmp_path, synth_dir, tiny_model_dir, "two", 2, **TWO_REPLICAS)
    assert two["logical_cpus"] == 2 and two["replicas"] == {"0": 2} and one["replicas"] == {"0": 1}
    assert np.allclose(one["loss"]["0"], two["loss"]["0"], rtol=1e-4), (one["loss"], two["loss"])
    assert np.allclose(_oof(one), _oof(two), atol=1e-4)
    assert files.read_json(layout.RunPaths(two["run_dir"]).fold(0).metrics)["global_batch"] == 16
    a, b = (Run(r["run_dir"]).load_fold(0) for r in (one, two))
    assert max(np.abs(x - y).max() for x, y in zip(a.get_weights(), b.get_weights())) < 1e-4


def test_float16_on_two_replicas_stays_near_the_float32_run(one_device, synth_dir, tiny_model_dir):
    """Mixed float16 (dynamic loss scaling; the clip measured on the unscaled gradient) on two replicas with
    accumulation: finite losses that fall as float32's do, and weights within a tenth of how far float32 moved
    them (L2 over every weight)."""
    tmp_path, one = one_device
    half = _train(tmp_path, synth_dir, tiny_model_dir, "two-fp16", 2, **{**TWO_REPLICAS,
                                                                          "train.mixed_precision": "float16"})
    assert files.read_json(layout.RunPaths(half["run_dir"]).fold(0).metrics)["precision"] == "mixed_float16"
    assert np.isfinite(half["loss"]["0"]).all() and np.allclose(half["loss"]["0"], one["loss"]["0"], rtol=2e-2)
    import keras

    keras.utils.set_random_seed(42 * 1000 + 0)  # the seed train_fold builds fold 0 with
    start = model.QuestModel(model.load_backbone(tiny_model_dir, random_init=True, dropout=0.0), dropout=0.0)
    a, b = (Run(r["run_dir"]).load_fold(0).get_weights() for r in (one, half))
    distance = lambda u, v: np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(u, v)))  # noqa: E731
    assert distance(a, b) < 0.1 * distance(a, start.get_weights())


def test_mirrored_weights_predict_the_same_on_one_device_and_a_frozen_group_stays_frozen(tmp_path, synth_dir,
                                                                                        tiny_model_dir):
    import keras

    two = _train(tmp_path, synth_dir, tiny_model_dir, "two", 2, **{"train.batch_size": 8, "train.lr_backbone": 0.0})
    run_dir = layout.RunPaths(two["run_dir"])
    test_csv = synth_dir / "test.csv"
    here = pd.read_csv(predict.predict_run(run_dir.root, test_csv, out_dir=tmp_path / "here", reuse=False))
    there = pd.read_csv(run_dir.fold(0).test)  # predicted under MirroredStrategy right after training
    assert np.allclose(here[list(TARGETS)], there.set_index(ID).loc[here[ID], list(TARGETS)], atol=1e-5)
    keras.utils.set_random_seed(42 * 1000 + 0)  # the seed train_fold builds fold 0 with
    start = model.load_backbone(tiny_model_dir, random_init=True, dropout=0.0)
    trained = Run(run_dir.root).load_fold(0)
    assert all(np.array_equal(x, y) for x, y in zip(start.get_weights(), trained.backbone.get_weights()))
    assert two["loss"]["0"][1] < two["loss"]["0"][0]  # while the head learned
    assert len(tables.read_csv(test_csv, "test")) == len(here)
