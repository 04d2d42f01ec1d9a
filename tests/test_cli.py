import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def run_cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
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
            "output.submission": tmp_path / "submission.csv", "train.epochs": 1, "encode.max_len": 128,
            "folds.n_folds": 2}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    offline = {"HF_HUB_OFFLINE": "1", "NO_PROXY": "", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = run_cli("demo", *args, env_extra=offline)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "== demo summary ==" in out.stdout and "OOF Spearman (all rows)" in out.stdout
    assert re.search(r"untouched [0-9.]+ -> post-processed, nested [0-9.]+; keep decision nested too", out.stdout)
    # A quiet terminal: no TensorFlow start-up lines, each data warning once, one display per epoch (2 folds x 1)
    assert not re.search(r"^[IWE]\d{4} |oneDNN|absl::InitializeLog|PyTorch was not found", out.stderr, re.M), \
        out.stderr[:2000]
    assert out.stdout.rstrip().splitlines()[-1].startswith("report: ")  # the summary is the last thing seen
    warnings = [line for line in out.stderr.splitlines() if "empty value(s)" in line]
    assert warnings and len(warnings) == len(set(warnings))
    assert "Epoch 1/" not in out.stdout + out.stderr and out.stderr.count("  epoch 1: loss") == 2
    sub = (tmp_path / "submission.csv").read_text().splitlines()
    sample = (tmp_path / "data" / "sample_submission.csv").read_text().splitlines()
    assert sub[0] == sample[0] and len(sub) == len(sample)
    again = run_cli("demo", *args, env_extra=offline)
    assert again.returncode == 0 and "already finished" in again.stderr  # progress goes to the log (stderr)


def test_the_stage_table_drives_help_and_readme():
    from pipeline.cli import table

    names = [s.name for s in table.STAGES]
    readme = (ROOT / "README.md").read_text().split("| stage | what it does | writes |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1].strip().strip("`") for line in readme.strip().splitlines()[1:]]
    assert rows == names  # README's stage table lists exactly the CLI's stages, in order


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import logging

    import run
    from pipeline.cli import table
    from pipeline.core import errors

    logger = logging.getLogger("pipeline")  # run.main configures it for a process; restore it for later tests
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(table, "run_stage", lambda args: (_ for _ in ()).throw(errors.UsageError("set x.y")))
    assert run.main(["folds"]) == 2 and capsys.readouterr().err.strip() == "error: set x.y"
    monkeypatch.setattr(table, "run_stage", lambda args: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        run.main(["folds"])


# TensorFlow 2.20's own start-up lines on a CPU machine, as they come (fd 2, before Python logging exists)
NATIVE = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
          b"I0000 00:00:1796237851.923293    3633 port.cc:153] oneDNN custom operations are on. You may see slightly "
          b"different numerical results due to floating-point round-off errors.\n"
          b"E0000 00:00:1796238494.444892    7357 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")


def test_native_lines_are_dropped_and_every_other_byte_passes():
    from pipeline.cli import terminal

    ours = b"error: ours\n\rfold 0 epoch 1:  40%"
    assert terminal.keep(NATIVE + ours, b"") == (ours, b"")
    now, held = terminal.keep(NATIVE[:20], b"")  # a line that may still become a native one waits for its end
    assert (now, held) == (b"", NATIVE[:20]) and terminal.keep(NATIVE[20:] + b"ok\n", held) == (b"ok\n", b"")
    assert terminal.keep(b"Encoding", b"") == (b"Encoding", b"")  # anything else passes at once, bars included


def test_the_filter_sits_on_file_descriptor_2_and_hands_it_back_at_exit():
    code = ("import os, sys\nfrom pipeline.cli import terminal\nterminal.quiet_native_logs()\n"
            f"os.write(2, {NATIVE!r})\nprint('a warning of ours', file=sys.stderr)\nos.write(2, b'\\rbar 50%')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert out.returncode == 0 and out.stderr == b"a warning of ours\n\rbar 50%"


def test_stage_help_lists_the_settings_it_reads():
    from pipeline.cli import table

    text = table.BY_NAME["train"].settings_help()
    assert "train.lr_backbone = 3e-05\n      peak learning rate of the pretrained backbone" in text
    assert "model.pooling = \"mean\"" in text and "[mean | cls | weighted | cls_all_layers | cls_all_states]" in text
    assert "ensemble." not in text and table.BY_NAME["demo"].settings_help() == ""
    out = run_cli("validate", "--help")
    assert "postprocess.round_grids = [2, 3, 4, 5, 6, 8, 10]" in out.stdout and "train.epochs = " not in out.stdout


def test_what_the_file_system_says_is_one_line_naming_the_path(monkeypatch, capsys):
    import errno
    import logging

    import run
    from pipeline.cli import table

    logger = logging.getLogger("pipeline")
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    for code, text in ((errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")):
        err = OSError(code, text, "/mnt/out/runs/x/run.json")
        monkeypatch.setattr(table, "run_stage", lambda args, err=err: (_ for _ in ()).throw(err))
        assert run.main(["folds"]) == 2
        assert capsys.readouterr().err.strip() == f"error: /mnt/out/runs/x/run.json: {text}"
    monkeypatch.setattr(table, "run_stage", lambda args: (_ for _ in ()).throw(OSError(errno.EBADF, "Bad fd")))
    with pytest.raises(OSError, match="Bad fd"):  # not a path the user chose: a bug, with its traceback
        run.main(["folds"])


def test_readme_and_report_state_the_score_meanings_from_one_place():
    from pipeline.evaluate import scores

    assert scores.markdown() in (ROOT / "README.md").read_text()
