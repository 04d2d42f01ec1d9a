"""TensorFlow and JAX run the same pipeline: the same math step for step, and folds trained on one predict on the
other. Each backend runs in its own process (tests/backend_worker.py): Keras fixes the backend at import. These
tests need both backends in one environment (`make test`'s .venv); `make jax-check`'s has no TensorFlow and
skips them."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, tiny_train_config

pytestmark = [pytest.mark.backend, pytest.mark.skipif(
    not (importlib.util.find_spec("tensorflow") and importlib.util.find_spec("jax")),
    reason="needs TensorFlow and JAX installed together")]


def worker(tmp_path, backend: str, spec: dict) -> dict:
    out = tmp_path / f"{spec['task']}-{backend}-{len(list(tmp_path.glob('*.json')))}.json"
    path = tmp_path / f"spec-{out.name}"
    path.write_text(json.dumps({**spec, "out": str(out)}))
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "backend_worker.py"), str(path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backend"] == backend
    return result


def sets(cfg) -> str:
    """The whole config, as the worker reads it."""
    from pipeline.core import config

    return config.to_toml(cfg)


def test_twenty_steps_with_accumulation_and_clipping_are_the_same_math_on_both_backends(tmp_path, synth_dir,
                                                                                          tiny_model_dir):
    """Same starting weights, no dropout, 20 optimizer steps of 2 micro-batches each with the gradient clipped on
    its global norm (tight enough to bite): the probe loss after every step, the learning rate and the final
    weights agree across TensorFlow and JAX."""
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, model__dropout=0.0, model__backbone_dropout=0.0,
                            train__grad_accum=2, train__batch_size=8, train__clipnorm=0.05, train__lr_backbone=1e-3,
                            train__lr_head=1e-3)
    spec = {"task": "steps", "sets": sets(cfg), "init": str(tmp_path / "init.weights.h5"), "steps": 20}
    tf_run = worker(tmp_path, "tensorflow", spec)
    jax_run = worker(tmp_path, "jax", spec)
    assert len(tf_run["losses"]) == 20 and tf_run["losses"][-1] < tf_run["losses"][0]  # it learnt
    assert np.allclose(tf_run["learning_rates"], jax_run["learning_rates"], rtol=1e-6)
    assert np.allclose(tf_run["losses"], jax_run["losses"], atol=1e-5), np.subtract(tf_run["losses"], jax_run["losses"])
    assert np.allclose(tf_run["weights_head"], jax_run["weights_head"], atol=1e-5)
    assert tf_run["weights_norm"] == pytest.approx(jax_run["weights_norm"], rel=1e-5)


def test_folds_trained_on_one_backend_predict_the_same_on_the_other(tmp_path, synth_dir, tiny_model_dir):
    """A fold trained under TensorFlow predicts under JAX what it predicts under TensorFlow (1e-5), and the
    reverse; each fold records the backend it was trained on."""
    from pipeline.core import files

    for trained_on in ("tensorflow", "jax"):
        cfg = tiny_train_config(tmp_path / trained_on, synth_dir, tiny_model_dir, train__folds="0",
                                train__run_name=f"on-{trained_on}")
        run_dir = worker(tmp_path, trained_on, {"task": "train", "sets": sets(cfg)})["run_dir"]
        assert files.read_json(os.path.join(run_dir, "fold0", "metrics.json"))["backend"] == trained_on
        spec = {"task": "predict", "sets": sets(cfg), "run_dir": run_dir, "fold": 0}
        tf_preds, jax_preds = (np.array(worker(tmp_path, b, spec)["preds"]) for b in ("tensorflow", "jax"))
        assert tf_preds.shape == (90, 30) and np.abs(tf_preds - jax_preds).max() < 1e-5, trained_on
