import os
import subprocess
import sys

from conftest import ROOT


def run_cli(*args, env_extra=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, env=env,
                          cwd="/", timeout=600)


def test_help_lists_every_stage():
    out = run_cli("--help")
    assert out.returncode == 0
    for stage in ("download", "folds", "encode", "train", "predict", "validate", "ensemble", "all", "demo"):
        assert stage in out.stdout
    sub = run_cli("train", "--help")
    assert "--folds" in sub.stdout and "--seed" in sub.stdout and "--set" in sub.stdout


def test_folds_and_encode_from_the_command_line(tmp_path, synth_dir, tiny_model_dir):
    sets = ["--set", f"data.dir={synth_dir}", "--set", f"folds.file={tmp_path}/folds.csv",
            "--set", f"encode.cache_dir={tmp_path}/cache", "--set", f"model.path={tiny_model_dir}",
            "--set", "encode.max_len=128"]
    out = run_cli("folds", "--n-folds", "3", *sets)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "folds.csv").is_file()
    out = run_cli("encode", *sets)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_bad_key_and_bad_csv_give_one_clear_line(tmp_path, synth_dir):
    out = run_cli("folds", "--set", "folds.nfolds=3")
    assert out.returncode == 2 and "unknown key 'folds.nfolds'; valid keys: n_folds" in out.stderr
    assert "Traceback" not in out.stderr
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "train.csv").write_text("qa_id,question_title\n1,hi\n")
    out = run_cli("folds", "--set", f"data.dir={bad}", "--set", f"folds.file={tmp_path}/f.csv")
    assert out.returncode == 2 and "train.csv: missing column(s)" in out.stderr and "Traceback" not in out.stderr
