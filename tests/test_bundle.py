import base64
import hashlib
import json
import os
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from pipeline import bundle, files, stages
from pipeline.schema import ID, TARGETS

# Loaded into the notebook kernel through PYTHONPATH: any connection off this machine fails.
SOCKET_GUARD = '''
import socket
_connect = socket.socket.connect
def _guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("::1", "localhost") or host.startswith("/")):
        raise OSError(f"network disabled for this kernel: {address}")
    return _connect(self, address)
socket.socket.connect = _guarded
'''


def make_wheel(folder, name="questdummy", version="0.1"):
    """A minimal valid pure-Python wheel."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    entries = {f"{name}/__init__.py": "VALUE = 42\n",
               f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
               f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for n, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{n},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for n, text in entries.items():
            z.writestr(n, text)
        z.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


class FakeApi:
    def __init__(self, exists=False):
        self.exists, self.calls = exists, []

    def dataset_create_version(self, folder, version_notes, dir_mode, quiet):
        self.calls.append(("version", folder))
        if not self.exists:
            raise RuntimeError("404 Client Error: Not Found")

    def dataset_create_new(self, folder, public, dir_mode, quiet):
        self.calls.append(("create", folder))

    def kernels_push(self, folder):
        self.calls.append(("push", folder))
        meta = json.loads((folder_path := __import__("pathlib").Path(folder) / "kernel-metadata.json").read_text())
        bundle.validate_kernel_metadata(meta)
        assert (folder_path.parent / meta["code_file"]).is_file()


@pytest.fixture(scope="module")
def kaggle_layout(trained, tmp_path_factory):
    """A bundle of the two trained runs (with a fitted ensemble) laid out as on a Kaggle kernel."""
    cfg, run_dirs = trained
    cfg.ensemble.name = "bundled"
    stages.ensemble(cfg, runs=[str(d) for d in run_dirs])
    expected = pd.read_csv(cfg.path(cfg.output.submission))
    tmp = tmp_path_factory.mktemp("kaggle")
    cfg.kaggle.wheels, cfg.kaggle.wheel_dir = [], str(tmp / "wheels-src")
    make_wheel(tmp / "wheels-src")
    out = stages.package(cfg, runs=[str(d) for d in run_dirs], out=str(tmp / "kaggle" / "input" / "quest-bundle"))[0]
    cfg.ensemble.name = "ensemble"
    shutil.copytree(cfg.path(cfg.data.dir), tmp / "kaggle" / "input" / "google-quest-challenge")
    (tmp / "kaggle" / "working").mkdir()
    return cfg, run_dirs, out, tmp / "kaggle", expected


def test_bundle_holds_what_inference_needs_and_no_more(kaggle_layout):
    cfg, run_dirs, out, _, _ = kaggle_layout
    manifest = files.read_json(out / "bundle.json")
    assert manifest["runs"] == [d.name for d in run_dirs] and len(manifest["weights"]) == 2
    for d in run_dirs:
        r = out / "runs" / d.name
        for name in ("config.toml", "run.json", "backbone.json", "tokenizer/tokenizer.json",
                     "fold0/model.weights.h5", "fold1/metrics.json"):
            assert (r / name).is_file(), name
        assert not list(r.rglob("oof.csv")) and not (r / "cache").exists()
    assert (out / "pipeline" / "predict.py").is_file() and (out / "run.py").is_file()
    assert [w.name for w in (out / "wheels").glob("*.whl")] == ["questdummy-0.1-py3-none-any.whl"]
    bundle.validate_dataset_metadata(files.read_json(out / "dataset-metadata.json"))


def test_inference_notebook_runs_offline_and_matches_predict_plus_ensemble(kaggle_layout, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    cfg, run_dirs, out, kaggle_root, expected = kaggle_layout
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    env = {"QUEST_BUNDLE": str(out), "QUEST_DATA": str(kaggle_root / "input" / "google-quest-challenge"),
           "QUEST_WORK": str(kaggle_root / "working"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PIP_NO_INDEX": "1", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "PYTHONPATH": str(guard), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(ROOT / "notebooks" / "kaggle_inference.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(kaggle_root / "working")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "questdummy-0.1-py3-none-any.whl" in outputs  # the bundled wheel was installed with --no-index
    sub = pd.read_csv(kaggle_root / "working" / "submission.csv")
    sample = pd.read_csv(kaggle_root / "input" / "google-quest-challenge" / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and (sub[ID] == sample[ID]).all()
    for d in run_dirs:  # the kernel's per-run predictions equal `run.py predict` on the same runs
        mine = pd.read_csv(kaggle_root / "working" / "predictions" / d.name / "test.csv")
        ref = pd.read_csv(d / "predictions" / "test.csv")
        assert np.allclose(mine[list(TARGETS)], ref[list(TARGETS)], atol=1e-5)
    close = np.isclose(sub[list(TARGETS)], expected[list(TARGETS)], atol=1e-5)
    assert close.mean() > 0.995, f"{(~close).sum()} cells differ"  # post-processing ties may flip a near-tie


def test_network_guard_really_blocks(tmp_path):
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(SOCKET_GUARD)
    code = "import socket\ntry:\n    socket.create_connection(('8.8.8.8', 53), timeout=2)\nexcept OSError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True)
    assert "network disabled" in out.stdout


def test_upload_creates_then_versions(kaggle_layout):
    cfg, run_dirs, out, _, _ = kaggle_layout
    cfg.kaggle.dataset = "someone/quest-bundle"
    api = FakeApi(exists=False)
    stages.package(cfg, runs=[str(run_dirs[0])], out=str(out.parent / "b2"), upload=True, client=api)
    assert [c[0] for c in api.calls] == ["version", "create"]
    api = FakeApi(exists=True)
    stages.package(cfg, runs=[str(run_dirs[0])], out=str(out.parent / "b2"), upload=True, client=api)
    assert [c[0] for c in api.calls] == ["version"]
    cfg.kaggle.dataset = ""


def test_kernel_metadata_is_offline_and_pushable(tmp_path, trained):
    cfg, _ = trained
    cfg.kaggle.kernel, cfg.kaggle.dataset = "someone/quest-inference", "someone/quest-bundle"
    nb_path, meta_path = stages.kernel(cfg, out=str(tmp_path / "k"))
    meta = files.read_json(meta_path)
    assert meta["enable_internet"] is False and meta["competition_sources"] == ["google-quest-challenge"]
    assert meta["dataset_sources"] == ["someone/quest-bundle"] and meta["enable_gpu"] is True
    api = FakeApi()
    stages.kernel(cfg, out=str(tmp_path / "k"), push=True, client=api)
    assert api.calls == [("push", str(tmp_path / "k"))]
    cfg.kaggle.kernel = cfg.kaggle.dataset = ""
    with pytest.raises(ValueError, match="set kaggle.kernel and kaggle.dataset"):
        stages.kernel(cfg, out=str(tmp_path / "k"), push=True, client=api)


@pytest.mark.parametrize("change, message", [({"enable_internet": True}, "enable_internet = false"),
                                             ({"id": "no-slash"}, "owner/slug"),
                                             ({"code_file": "x.py"}, "notebook"),
                                             ({"dataset_sources": []}, "dataset_sources")])
def test_bad_kernel_metadata_is_rejected(trained, change, message):
    cfg, _ = trained
    meta = {**bundle.kernel_metadata(cfg, "kaggle_inference.ipynb"), **change}
    with pytest.raises(ValueError, match=message):
        bundle.validate_kernel_metadata(meta)


def test_exploration_notebook_runs(tmp_path, synth_dir, tiny_model_dir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    sets = [f"data.dir={synth_dir}", f"model.path={tiny_model_dir}", f"encode.cache_dir={tmp_path / 'cache'}"]
    monkeypatch.setenv("QUEST_ROOT", str(ROOT))
    monkeypatch.setenv("QUEST_SET", ";".join(sets))
    nb = nbformat.read(ROOT / "notebooks" / "explore.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2
