import os
import subprocess
import sys

import pytest

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


@pytest.mark.slow
def test_demo_runs_offline_and_reruns_as_a_no_op(tmp_path):
    sets = {"data.dir": tmp_path / "data", "folds.file": tmp_path / "folds.csv", "output.dir": tmp_path / "out",
            "encode.cache_dir": tmp_path / "cache", "model.path": tmp_path / "tiny-bert",
            "output.submission": tmp_path / "submission.csv", "train.epochs": 1, "encode.max_len": 128}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    offline = {"HF_HUB_OFFLINE": "1", "NO_PROXY": "", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = run_cli("demo", *args, env_extra=offline)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "== demo summary ==" in out.stdout and "pooled OOF Spearman" in out.stdout
    sub = (tmp_path / "submission.csv").read_text().splitlines()
    sample = (tmp_path / "data" / "sample_submission.csv").read_text().splitlines()
    assert sub[0] == sample[0] and len(sub) == len(sample)
    again = run_cli("demo", *args, env_extra=offline)
    assert again.returncode == 0 and "already finished" in again.stderr  # progress goes to the log (stderr)


def test_the_stage_table_drives_help_and_readme():
    from pipeline import cli

    names = [s.name for s in cli.STAGES]
    readme = (ROOT / "README.md").read_text().split("| stage | what it does | writes |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1].strip().strip("`") for line in readme.strip().splitlines()[1:]]
    assert rows == names  # README's stage table lists exactly the CLI's stages, in order


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import logging

    import run
    from pipeline import cli, errors

    logger = logging.getLogger("pipeline")  # run.main configures it for a process; restore it for later tests
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(cli, "run_stage", lambda args: (_ for _ in ()).throw(errors.UsageError("set x.y")))
    assert run.main(["folds"]) == 2 and capsys.readouterr().err.strip() == "error: set x.y"
    monkeypatch.setattr(cli, "run_stage", lambda args: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        run.main(["folds"])
