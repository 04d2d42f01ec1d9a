"""The accelerator paths proven on a CPU (issue 27): float16 mixed precision with dynamic loss scaling through
QuestModel's own train step (micro-batches, the clip scaled by the loss scale), a non-finite step skipped, and
XLA-compiled training and prediction. TensorFlow runs them here as on a GPU, only slower. Tiny models, a few
steps each. (bfloat16 training, saving and reloading: tests/test_train.py; two replicas: test_distribute.py.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from pipeline.core import config
from pipeline.modeling import feeding, model
from pipeline.text import batching
from pipeline.train import optim


@pytest.fixture
def policy():
    """Set a Keras dtype policy for one test; float32 again after it."""
    import keras

    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def _rows(n=24, length=16, seed=0):
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(5, 200, (n, length)).astype("int32"), "segment_ids": np.zeros((n, length), "int32"),
         "padding_mask": np.ones((n, length), "int32")}
    return x, rng.random((n, 30)).astype("float32")


def _trained(tiny_model_dir, x, y, steps=3, xla=False, clipnorm=0.5):
    """A tiny QuestModel (seeded, no dropout) after `steps` optimizer steps of 2 micro-batches each, clipped."""
    import keras

    keras.utils.set_random_seed(7)
    m = model.QuestModel(model.load_backbone(tiny_model_dir, random_init=True, dropout=0.0), dropout=0.0)
    start = [w.copy() for w in m.get_weights()]
    m.micro_batches = 2
    tcfg = config.TrainConfig(lr_backbone=1e-3, lr_head=1e-3, warmup=0.0, schedule="constant", clipnorm=clipnorm)
    m.compile(optimizer=optim.make(tcfg, steps, model.head_variables(m), reduced_by_step=True),
              loss=keras.losses.BinaryCrossentropy(), jit_compile=xla)
    history = m.fit(x, y, batch_size=len(y) // steps, epochs=1, shuffle=False, verbose=0)
    return m, start, history.history["loss"]


def _largest_change(a, b) -> float:
    return max(float(np.abs(np.asarray(u, np.float32) - np.asarray(v, np.float32)).max()) for u, v in zip(a, b))


def _distance(a, b) -> float:
    """L2 distance between two weight lists, over every weight."""
    return float(np.sqrt(sum(np.sum((np.asarray(u, np.float64) - np.asarray(v, np.float64)) ** 2) for u, v in zip(a, b))))


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The float32, non-XLA run the others are held against: (rows, labels, model, its start, losses)."""
    x, y = _rows()
    return (x, y, *_trained(tiny_model_dir, x, y))


def test_float16_trains_through_the_accumulating_step_close_to_float32(tiny_model_dir, reference, policy):
    x, y, reference, start, loss32 = reference
    policy("mixed_float16")
    m, start16, loss16 = _trained(tiny_model_dir, x, y)
    import keras

    assert isinstance(m.optimizer, keras.optimizers.LossScaleOptimizer)  # compile wrapped it: scaled losses
    assert m.backbone.compute_dtype == "float16"
    assert _largest_change(start16, start) == 0  # the same starting weights (float32 variables)
    moved = _distance(reference.get_weights(), start)
    assert np.isfinite(loss16).all() and _distance(m.get_weights(), start16) > 0.5 * moved
    # float16 activations, float32 weights and updates: within a tenth of how far the weights moved (L2 over all
    # weights; Adam moves a weight whose gradient is near 0 by a full step either way, so no per-weight bound)
    assert _distance(m.get_weights(), reference.get_weights()) < 0.1 * moved, (_distance(m.get_weights(), reference.get_weights()), moved)
    assert loss16[0] == pytest.approx(loss32[0], rel=1e-2)


def test_a_non_finite_step_is_skipped_and_the_loss_scale_drops(tiny_model_dir, policy):
    """A step whose gradients overflow (here: a NaN label) changes no weight and halves the dynamic loss scale;
    the next finite step trains again."""
    policy("mixed_float16")
    x, y = _rows(n=16)
    m, _, _ = _trained(tiny_model_dir, x, y, steps=1)
    scale, before = float(m.optimizer.dynamic_scale), [w.copy() for w in m.get_weights()]
    bad = y.copy()
    bad[3, 5] = np.nan
    m.fit(x, bad, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert _largest_change(m.get_weights(), before) == 0
    assert float(m.optimizer.dynamic_scale) == pytest.approx(scale / 2)
    history = m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and _largest_change(m.get_weights(), before) > 0


def test_xla_training_and_prediction_match_the_plain_run(tiny_model_dir, reference, monkeypatch):
    x, y, plain, start, loss = reference
    jitted, start_xla, loss_xla = _trained(tiny_model_dir, x, y, xla=True)
    assert _largest_change(start, start_xla) == 0 and loss_xla == pytest.approx(loss, rel=1e-4)
    assert _largest_change(jitted.get_weights(), plain.get_weights()) < 1e-4

    rng = np.random.default_rng(3)  # rows of many lengths: XLA compiles once per batch shape
    lengths = rng.integers(3, 64, 40)
    ids = rng.integers(5, 200, (40, 64)).astype("int32")
    mask = (np.arange(64)[None, :] < lengths[:, None]).astype("int32")
    feed = batching.Feed({"token_ids": ids * mask, "segment_ids": np.zeros_like(ids), "padding_mask": mask},
                         lengths[:, None])
    shapes = set()
    real_batch = batching.Feed.batch

    def recording(self, rows, dynamic, multiple):
        out = real_batch(self, rows, dynamic, multiple)
        shapes.add(out["token_ids"].shape)
        return out

    monkeypatch.setattr(batching.Feed, "batch", recording)
    eager = feeding.predict(plain, feed, 16)
    compiled = feeding.predict(plain, feed, 16, xla=True)
    assert np.abs(eager - compiled).max() < 1e-5
    assert len(set(lengths)) > 20 and len(shapes) <= 2 * (64 // 32)  # widths 32 and 64; a last short batch


@pytest.mark.slow
@pytest.mark.backend
def test_the_gpu_check_says_there_is_no_gpu_and_smokes_its_code_on_the_cpu(tmp_path, monkeypatch):
    """`make gpu-check` on a machine without a GPU: it says so, runs the same code on a tiny model, writes
    nothing, exits 0 (on a GPU it measures: benchmarks/gpu_check.py). Under JAX (make jax-check) the preflight
    before a GPU session: every arm, on this backend."""
    import keras

    backend = keras.config.backend()
    before = sorted((ROOT / "benchmarks" / "results").glob("gpu-*"))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--backend", backend,
                          *(["--all-arms"] if backend == "jax" else [])], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CPU smoke passed" in out.stdout and '"final_loss"' in out.stdout
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    assert backend == "tensorflow" or out.stdout.count('"backend": "jax"') == len(gpu_check.arms(2, "jax")) == 5
    assert sorted((ROOT / "benchmarks" / "results").glob("gpu-*")) == before


def test_a_cpu_with_bfloat16_matrix_units_is_recognised_by_its_flags(tmp_path):
    """train.mixed_precision = auto reads the CPU's flags: AMX tiles before AVX-512 BF16 dot products; a CPU with
    neither, a flags line missing, or no /proc/cpuinfo (macOS, Windows) mean float32."""
    from pipeline.modeling import device

    def unit(text):
        path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
        path.write_text(text)
        return device.cpu_bf16_unit(str(path))

    head = "processor\t: 0\nmodel name\t: Some CPU\n"
    assert unit(head + "flags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n") == "AMX"
    assert unit(head + "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n") == "AVX-512 BF16"
    assert unit(head + "flags\t\t: fpu sse avx2 avx512f avx512_vnni\n") == ""
    assert unit(head) == "" and unit("") == ""
    assert device.cpu_bf16_unit(str(tmp_path / "absent")) == ""


@pytest.mark.tensorflow_only
def test_auto_precision_on_a_cpu_follows_its_bfloat16_units_and_says_so(monkeypatch, policy, caplog):
    """On a CPU, auto is bfloat16 mixed precision where the CPU has bfloat16 matrix units (the log names them and
    how to keep float32), float32 where it has none; an explicit setting is taken as given either way."""
    import logging

    from pipeline.modeling import device

    for unit, expected in (("AMX", "mixed_bfloat16"), ("AVX-512 BF16", "mixed_bfloat16"), ("", "float32")):
        monkeypatch.setattr(device, "cpu_bf16_unit", lambda unit=unit: unit)
        device._say_cpu_precision.cache_clear()
        with caplog.at_level(logging.INFO, logger="pipeline.modeling.device"):
            caplog.clear()
            assert device.set_precision("auto", "cpu") == expected
        if unit:
            assert f"CPU with {unit}: bfloat16 mixed precision" in caplog.text and "none keeps float32" in caplog.text
            assert device.describe().endswith(f"{unit}), bfloat16 mixed precision")
        else:
            assert device.describe().endswith("float32")
        assert device.set_precision("none", "cpu") == "float32"
    monkeypatch.setattr(device, "cpu_bf16_unit", lambda: "AMX")
    assert device.set_precision("bfloat16", "cpu") == "mixed_bfloat16"
    device._say_cpu_precision.cache_clear()
