import json
import sys

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
