"""The Kaggle path: bundle contents, wheels, input discovery, the inference notebook, the API calls."""
import copy
import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, holding_process
from kaggle_fakes import HAS_CLIENT, SOCKET_GUARD, make_wheel, mount, read_only, requires_client, run_notebook, snapshot
from pipeline.cli import stages
from pipeline.core import config, files, layout, manifest
from pipeline.core.columns import ID, TARGETS
from pipeline.core.errors import DamagedArtifact, PipelineError, UsageError
from pipeline.kaggle import api, bundle, kernels, wheels
from pipeline.kernel import inference
from pipeline.run.rundir import Run

if HAS_CLIENT:
    from kaggle_server import FakeApi, KaggleServer

# ---- input discovery (no TensorFlow) ----

def _fake_inputs(tmp_path):
    b, d = tmp_path / "src-bundle", tmp_path / "src-data"
    for folder, names in ((b, ["bundle.json"]), (d, ["test.csv", "sample_submission.csv"])):
        folder.mkdir(exist_ok=True)
        for n in names:
            (folder / n).write_text("x\n")
    return b, d


@pytest.mark.parametrize("layout", ["current", "old"])
def test_inputs_are_found_by_contents_in_both_mount_layouts(tmp_path, layout, monkeypatch):
    for var in ("QUEST_BUNDLE", "QUEST_DATA"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "input"
    want = mount(root, *_fake_inputs(tmp_path), layout=layout, slug="any-name-at-all")
    assert inference.find_inputs(root) == want


def test_environment_overrides_discovery(tmp_path, monkeypatch):
    root = tmp_path / "input"
    mount(root, *_fake_inputs(tmp_path), layout="current")
    other = tmp_path / "elsewhere"
    mount(other, *_fake_inputs(tmp_path), layout="old")
    monkeypatch.setenv("QUEST_BUNDLE", str(other / "my-quest-models"))
    monkeypatch.delenv("QUEST_DATA", raising=False)
    b, d = inference.find_inputs(root)
    assert b == other / "my-quest-models" and d == root / "competitions" / "google-quest-challenge"


def test_missing_inputs_fail_with_the_input_tree(tmp_path, monkeypatch):
    for var in ("QUEST_BUNDLE", "QUEST_DATA"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "input" / "competitions" / "google-quest-challenge").mkdir(parents=True)
    (tmp_path / "input" / "competitions" / "google-quest-challenge" / "train.csv").write_text("x")
    with pytest.raises(inference.InputsNotFound) as err:
        inference.find_inputs(tmp_path / "input")
    msg = str(err.value)
    assert "bundle.json" in msg and "test.csv + sample_submission.csv" in msg
    assert "google-quest-challenge/" in msg and "train.csv" in msg  # the tree as it is


# ---- which wheels a bundle carries (no TensorFlow) ----

def test_bundle_carries_trained_versions_and_what_the_image_lacks(tmp_path):
    src = tmp_path / "src"
    make_wheel(src, "kerasx", "3.15", requires=("depa>=2", "depb", "depc>=9; extra == 'grain'",
                                                   "depd>=9; platform_system == 'Windows'"))
    make_wheel(src, "depa", "1.5")
    make_wheel(src, "depa", "2.1")
    make_wheel(src, "hubx", "0.26")
    image = {"kerasx": "3.13", "depa": "1.0", "depb": "0.5", "depc": "1", "depd": "1", "hubx": "0.26"}
    out = wheels.collect({"kerasx": "3.15", "hubx": "0.26"}, [], image, src, tmp_path / "bundle")
    assert [p.name for p in out] == ["depa-2.1-py3-none-any.whl", "kerasx-3.15-py3-none-any.whl"]


def test_wheels_that_cannot_be_had_fail_loudly(tmp_path):
    src = tmp_path / "src"
    make_wheel(src, "kerasx", "3.15", requires=("depa>=2",))
    with pytest.raises(wheels.WheelError, match="image lacks depa>=2"):
        wheels.collect({"kerasx": "3.15"}, [], {"kerasx": "3.13", "depa": "1.0"}, src, tmp_path / "b")
    make_wheel(src, "natx", "2.0", tag="cp312-cp312-manylinux_2_17_x86_64")
    with pytest.raises(wheels.WheelError, match="not pure Python"):
        wheels.collect({"natx": "2.0"}, [], {"natx": "1.0"}, src, tmp_path / "b")
    with pytest.raises(wheels.WheelError, match="looks like a pip option"):
        wheels.collect({}, ["--index-url=http://evil"], {}, src, tmp_path / "b")


def test_kernel_install_resolves_against_the_image_and_stays_in_tmp(tmp_path, monkeypatch):
    good, bad = tmp_path / "good", tmp_path / "bad"
    make_wheel(good / "wheels", "questdummy", "0.2", requires=("numpy",))
    make_wheel(bad / "wheels", "questdummy", "0.2", requires=("questmissing>=1",))
    (tmp_path / "working").mkdir()
    monkeypatch.chdir(tmp_path / "working")
    with pytest.raises(RuntimeError, match="questmissing"):  # --no-deps would have hidden this
        inference.install_wheels(bad, target=tmp_path / "site-bad")
    assert inference.install_wheels(good, target=tmp_path / "site") == ["questdummy-0.2"]
    assert (tmp_path / "site" / "questdummy" / "__init__.py").is_file()
    assert os.listdir(tmp_path / "working") == []  # nothing written to the working directory
    sys.path.remove(str(tmp_path / "site"))


# ---- the bundle and the notebook (tiny trained runs) ----

@pytest.fixture(scope="module")
def bundled(trained, tmp_path_factory):
    """A bundle of the two trained runs with a fitted ensemble; the ensemble's submission for comparison."""
    cfg, run_dirs = trained
    cfg.ensemble.name = "bundled"
    stages.ensemble(cfg, runs=[str(d) for d in run_dirs])
    expected = pd.read_csv(cfg.submission_file)
    out = stages.package(cfg, runs=[str(d) for d in run_dirs], out=str(tmp_path_factory.mktemp("b") / "bundle"))[0]
    cfg.ensemble.name = "ensemble"
    return cfg, run_dirs, out, expected


def test_bundle_holds_what_inference_needs_and_no_more(bundled):
    cfg, run_dirs, out, _ = bundled
    manifest = files.read_json(out / "bundle.json")
    assert manifest["runs"] == [d.name for d in run_dirs] and len(manifest["weights"]) == 2
    for d in run_dirs:
        r = out / "runs" / d.name
        for name in ("config.toml", "run.json", "model.json", "tokenizer/tokenizer.json",
                     "fold0/model.weights.h5", "fold1/metrics.json", "fold1/finished.json"):
            assert (r / name).is_file(), name
        assert not list(r.rglob("oof.csv")) and not (r / "cache").exists()
    shipped = {p.parent.name for p in (out / "pipeline").glob("*/__init__.py")}
    assert shipped == set(bundle.SHIPPED_PACKAGES) and (out / "pipeline" / "run" / "predict.py").is_file()
    assert not (out / "pipeline" / "dev").exists()
    code = "import importlib, pkgutil, pipeline\n[importlib.import_module(m.name) for m in " \
           "pkgutil.walk_packages(pipeline.__path__, 'pipeline.')]"
    res = subprocess.run([sys.executable, "-c", code], cwd=out, env={**os.environ, "PYTHONPATH": str(out)},
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]  # every shipped module imports without the dev modules
    trained_with = files.read_json(run_dirs[0] / "run.json")["versions"]
    image = wheels.read_image(cfg.path(cfg.kaggle.image))
    names = sorted(w.name for w in (out / "wheels").glob("*.whl"))
    for dist in ("keras", "keras-hub"):  # shipped exactly when the image has another version than trained
        wheel = f"{dist.replace('-', '_')}-{trained_with[dist]}-py3-none-any.whl"
        assert (wheel in names) == (image[dist] != trained_with[dist]), (wheel, names)
    assert all(n.endswith("-none-any.whl") for n in names)
    bundle.validate_dataset_metadata(files.read_json(out / "dataset-metadata.json"))


def test_package_never_replaces_a_folder_it_did_not_write(bundled, tmp_path):
    cfg, run_dirs, _, _ = bundled
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a bundle"):
        stages.package(cfg, runs=[str(run_dirs[0])], out=str(tmp_path))
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    mine = tmp_path / "b.partial"  # a user's folder whose name a staging folder once had
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    stages.package(cfg, runs=[str(run_dirs[0])], out=str(tmp_path / "b"))
    assert (mine / "notes.txt").read_text() == "keep me" and (tmp_path / "b" / "bundle.json").is_file()


def test_bundles_copy_no_links_and_a_full_disk_leaves_nothing_behind(bundled, tmp_path, monkeypatch):
    cfg, run_dirs, _, _ = bundled
    secret = tmp_path / "kaggle.json"
    secret.write_text('{"key": "secret"}')
    link = run_dirs[0] / "tokenizer" / "extra.json"
    link.symlink_to(secret)
    try:
        with pytest.raises(ValueError, match=r"tokenizer/extra.json is a symbolic link .*follows no link"):
            stages.package(cfg, runs=[str(run_dirs[0])], out=str(tmp_path / "b"))
    finally:
        link.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kaggle.json"]  # no bundle, no staging folder, no lock

    real_copy, copied = files.shutil.copyfile, []

    def fills_up(src, dst, **kw):
        if len(copied) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        copied.append(dst)
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(files.shutil, "copyfile", fills_up)
    with pytest.raises(OSError, match="No space left"):
        stages.package(cfg, runs=[str(run_dirs[0])], out=str(tmp_path / "b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kaggle.json"]


@pytest.mark.parametrize("planted", ["tokenizer", "fold1", "model.json", "fold0/metrics.json"])
def test_no_link_inside_a_run_is_followed_into_a_bundle(bundled, tmp_path, planted):
    """A run's tokenizer folder, a fold folder or a file that is a link (to ~/.kaggle, say) stops `package` with
    the link's name; the run is put back as it was."""
    cfg, run_dirs, _, _ = bundled
    home = tmp_path / "home-kaggle"
    home.mkdir()
    (home / "kaggle.json").write_text('{"key": "secret"}')
    run = run_dirs[0]
    real = run / planted
    moved = real.rename(tmp_path / "moved")
    real.symlink_to(moved if planted != "tokenizer" else home)
    try:
        with pytest.raises(ValueError, match=f"{planted} is a symbolic link"):
            stages.package(cfg, runs=[str(run)], out=str(tmp_path / "b"))
    finally:
        real.unlink()
        moved.rename(real)
    assert not (tmp_path / "b").exists()


def test_package_replaces_only_a_bundle_it_marked_and_one_writer_at_a_time(bundled, tmp_path):
    cfg, run_dirs, out, _ = bundled
    app = tmp_path / "web-app"
    app.mkdir()
    (app / "bundle.json").write_text('{"name": "my web app", "kind": "inference"}')  # a user's own bundle.json
    (app / "index.html").write_text("keep me")
    with pytest.raises(ValueError, match="not a bundle written by `package`"):
        stages.package(cfg, runs=[str(run_dirs[0])], out=str(app))
    assert (app / "index.html").read_text() == "keep me"
    assert files.read_json(out / "bundle.json")["format"] == bundle.BUNDLE_FORMAT["format"]
    dest = tmp_path / "shared-bundle"
    holder = holding_process("from pipeline.core import files", f"writing = files.staged_dir({str(dest)!r})",
                             "writing.__enter__()")
    try:
        with pytest.raises(files.Busy, match=rf"{dest} is being written by pid {holder.pid} .*wait for it"):
            stages.package(cfg, runs=[str(run_dirs[0])], out=str(dest))
    finally:
        holder.kill()
        holder.wait()
    stages.package(cfg, runs=[str(run_dirs[0])], out=str(dest))  # the holder killed mid-write: its leftovers go
    assert bundle.is_bundle(dest) and sorted(p.name for p in tmp_path.iterdir() if "shared" in p.name) == ["shared-bundle"]


def test_kernel_never_writes_over_a_users_kernel_metadata(trained, tmp_path):
    cfg, _ = trained
    (tmp_path / "kernel-metadata.json").write_text('{"id": "me/my-own-kernel"}')
    with pytest.raises(ValueError, match="holds kernel-metadata.json that `kernel` did not write"):
        stages.kernel(cfg, out=str(tmp_path))
    assert (tmp_path / "kernel-metadata.json").read_text() == '{"id": "me/my-own-kernel"}'
    stages.kernel(cfg, out=str(tmp_path / "k"))
    stages.kernel(cfg, out=str(tmp_path / "k"))  # a folder it wrote itself it may write again


def test_kernel_follows_no_link_at_its_destination_and_never_copies_a_file_onto_itself(trained, tmp_path):
    cfg, _ = trained
    target = tmp_path / "precious.ipynb"
    target.write_text("mine")
    for name in ("kaggle_inference.ipynb", "kernel-metadata.json"):  # in a folder it wrote, a file made a link
        stages.kernel(cfg, out=str(tmp_path / name))
        (tmp_path / name / name).unlink()
        (tmp_path / name / name).symlink_to(target)
        with pytest.raises(ValueError, match=f"{name} is a symbolic link"):
            stages.kernel(cfg, out=str(tmp_path / name))
        assert target.read_text() == "mine"
    (tmp_path / "linked").symlink_to(tmp_path / "kaggle_inference.ipynb")  # the folder itself a link
    with pytest.raises(ValueError, match="linked is a symbolic link"):
        stages.kernel(cfg, out=str(tmp_path / "linked"))
    with pytest.raises(ValueError, match="holds kaggle_inference.ipynb that `kernel` did not write"):
        stages.kernel(cfg, out=str(ROOT / "notebooks"))
    with pytest.raises(ValueError, match="is the file it would be copied from"):
        files.copy_file(layout.INFERENCE_NOTEBOOK, ROOT / "notebooks" / ".." / "notebooks" / "kaggle_inference.ipynb")
    mine = tmp_path / "mine"  # a user's own kernel folder: both files, named as ours, none of them ours
    mine.mkdir()
    for name in ("kernel-metadata.json", "kaggle_inference.ipynb"):
        (mine / name).write_text("{}")
    with pytest.raises(ValueError, match="did not write"):
        stages.kernel(cfg, out=str(mine))
    assert all((mine / n).read_text() == "{}" for n in ("kernel-metadata.json", "kaggle_inference.ipynb"))


def check_kernel_output(work, data, run_dirs, expected, atol=1e-5):
    sub = pd.read_csv(work / "submission.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and (sub[ID] == sample[ID]).all()
    for d in run_dirs:  # the kernel's per-run predictions equal `run.py predict` on the same runs
        mine = pd.read_csv(work / "predictions" / d.name / "test.csv")
        ref = pd.read_csv(d / "predictions" / "test.csv")
        assert np.allclose(mine[list(TARGETS)], ref[list(TARGETS)], atol=atol)
    close = np.isclose(sub[list(TARGETS)], expected[list(TARGETS)], atol=atol)
    assert close.mean() > 0.995, f"{(~close).sum()} cells differ"  # post-processing ties may flip a near-tie


def run_kernel(python: str, bundled, tmp_path, layout: str):
    """The bundle and the competition data mounted read-only in `layout` under a fake /kaggle/input, the
    notebook run by `python`; checks the inputs were only read. Returns (notebook text, working dir, data dir)."""
    cfg, _, out, _ = bundled
    root, work = tmp_path / "input", tmp_path / "working"
    work.mkdir()
    _, data = mount(root, out, cfg.path(cfg.data.dir), layout)
    read_only(root)
    before = snapshot(root)
    text = run_notebook(python, root, work, tmp_path)
    assert snapshot(root) == before  # the inputs were only read
    return text, work, data


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["current", "old-zipped"])
def test_inference_notebook_runs_offline_and_matches_ensemble(bundled, tmp_path, layout):
    _, run_dirs, _, expected = bundled
    text, work, data = run_kernel(sys.executable, bundled, tmp_path, layout)
    assert "projected time for a 10,000-row hidden test" in text and "installed from the bundle" in text
    check_kernel_output(work, data, run_dirs, expected)
    assert not (work / "site").exists() and (tmp_path / "cache").is_dir()  # installs and caches outside working/


KAGGLE_PYTHON = os.environ.get("QUEST_KAGGLE_PYTHON", "")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(KAGGLE_PYTHON), reason="no Kaggle-image environment: run `make kaggle-check` "
                    "(builds .venv-kaggle from configs/kaggle-image-constraints.txt)")
@pytest.mark.parametrize("layout", ["current", "old"])
def test_notebook_on_the_kaggle_image(bundled, tmp_path, layout):
    """The bundle made here, mounted read-only under a fake /kaggle/input, run by Kaggle's versions (Python 3.12,
    TF 2.20, keras 3.13, keras-hub 0.26 ...) with the network blocked: only the bundle's wheels can be installed."""
    _, run_dirs, _, expected = bundled
    text, work, data = run_kernel(KAGGLE_PYTHON, bundled, tmp_path, layout)
    versions = files.read_json(run_dirs[0] / "run.json")["versions"]
    for dist in ("keras", "keras-hub"):  # the image's older versions were replaced by the trained ones
        assert f"{dist}-{versions[dist]}" in text
    assert (tmp_path / "site").is_dir() and not (work / "site").exists()
    check_kernel_output(work, data, run_dirs, expected, atol=1e-4)


# ---- the Kaggle API, through an injected client ----

@requires_client
def test_upload_creates_then_versions_and_reports_failures(bundled, tmp_path):
    cfg, run_dirs, out, _ = bundled
    cfg.kaggle.dataset = "someone/quest-bundle"
    try:
        client = FakeApi(KaggleServer(tmp_path / "kaggle"))
        stages.package(cfg, runs=[str(run_dirs[0])], out=str(out.parent / "b2"), upload=True, client=client)
        kinds = [c[0] for c in client.calls if c[0] != "blob"]  # the client's real upload: a blob per file
        assert kinds == ["status", "status", "create"]  # asked first (and by the client itself), then created
        kept = client.server.datasets["someone/quest-bundle"].folder
        assert (kept / "pipeline" / "kernel" / "inference.py").is_file() and (kept / "runs").is_dir()
        n = len(client.calls)
        stages.package(cfg, runs=[str(run_dirs[0])], out=str(out.parent / "b2"), upload=True, client=client)
        assert [c[0] for c in client.calls[n:] if c[0] != "blob"] == ["status", "version"]
        assert files.read_json(layout.uploaded_datasets(cfg))["someone/quest-bundle"]["version"] == 2
        taken = KaggleServer(tmp_path / "kaggle2")
        taken.add_dataset("someone/quest-bundle", hidden=1)  # exists, but not visible to our first look yet
        stages.package(cfg, runs=[str(run_dirs[0])], out=str(out.parent / "b2"), upload=True, client=FakeApi(taken))
        assert [c[0] for c in taken.calls if c[0] != "blob"][-1] == "version"  # the client saw it: a version
    finally:
        cfg.kaggle.dataset = ""
        layout.uploaded_datasets(cfg).unlink(missing_ok=True)  # the shared run's output: later pushes wait for none


@requires_client
def test_kernel_push_waits_for_the_dataset_and_checks_the_answer(tmp_path, trained, monkeypatch):
    cfg, _ = trained
    monkeypatch.setattr(api.time, "sleep", lambda s: None)
    cfg.kaggle.kernel, cfg.kaggle.dataset = "someone/quest-inference", "someone/quest-bundle"
    try:
        nb_path, meta_path = stages.kernel(cfg, out=str(tmp_path / "k"))
        meta = files.read_json(meta_path)
        assert meta["enable_internet"] is False and meta["competition_sources"] == ["google-quest-challenge"]
        assert meta["dataset_sources"] == ["someone/quest-bundle"] and meta["enable_gpu"] is True
        server = KaggleServer(tmp_path / "kaggle")
        server.add_dataset("someone/quest-bundle", statuses=["blobs_received", "blobs_decompressed", "ready"])
        stages.kernel(cfg, out=str(tmp_path / "k"), push=True, client=FakeApi(server))
        assert [c[0] for c in server.calls] == ["status", "status", "status", "push"]
        server.add_dataset("someone/quest-bundle", statuses=["not_yet_persisted"])
        with pytest.raises(api.KaggleApiError, match="still 'not_yet_persisted' .* after"):
            stages.kernel(cfg, out=str(tmp_path / "k"), push=True, client=FakeApi(server), wait=60)
        assert [c[0] for c in server.calls].count("push") == 1  # never pushed before the dataset was ready
        with pytest.raises(api.KaggleApiError, match="someone/quest-bundle"):  # the source is not on Kaggle
            stages.kernel(cfg, out=str(tmp_path / "k"), push=True, client=FakeApi(KaggleServer(tmp_path / "k2")),
                          wait=0)
        quota = KaggleServer(tmp_path / "k3", push_error="Notebook quota exceeded")
        quota.add_dataset("someone/quest-bundle")
        with pytest.raises(api.KaggleApiError, match="Notebook quota exceeded"):
            stages.kernel(cfg, out=str(tmp_path / "k"), push=True, client=FakeApi(quota))
        cfg.kaggle.kernel = ""
        with pytest.raises(ValueError, match="set kaggle.kernel and kaggle.dataset"):
            stages.kernel(cfg, out=str(tmp_path / "k"), push=True, client=FakeApi(quota))
    finally:
        cfg.kaggle.kernel = cfg.kaggle.dataset = ""


@requires_client
def test_submit_sends_the_kernel_version_and_reports_refusals(trained):
    cfg, _ = trained
    cfg.kaggle.kernel = "someone/quest-inference"
    try:
        server = KaggleServer()
        server.add_kernel("someone/quest-inference", version=3)
        stages.submit(cfg, version=3, client=FakeApi(server))
        assert server.calls[-1] == ("submit", "google-quest-challenge", "someone/quest-inference", 3, "submission.csv")
        with pytest.raises(api.KaggleApiError, match=r"looking up kernel someone/quest-inference: .*403: Permission "
                                                     r"'kernels.get' was denied"):
            stages.submit(cfg, version=3, client=FakeApi())  # Kaggle has no such kernel of ours: the exact lookup
        with pytest.raises(ValueError, match="--version 0"):
            stages.submit(cfg, version=0, client=FakeApi(server))
    finally:
        cfg.kaggle.kernel = ""


@pytest.mark.parametrize("change, message", [({"enable_internet": True}, "enable_internet = false"),
                                             ({"id": "no-slash"}, "owner/slug"),
                                             ({"id": "someone/short"}, "6-50"),
                                             ({"id": "someone/" + "x" * 51}, "6-50"),
                                             ({"code_file": "x.py"}, "notebook"),
                                             ({"enable_tpu": True}, "CPU or GPU notebooks only"),
                                             ({"dataset_sources": []}, "dataset_sources")])
def test_bad_kernel_metadata_is_rejected(trained, change, message):
    cfg, _ = trained
    meta = {**kernels.kernel_metadata(cfg, "kaggle_inference.ipynb"), **change}
    with pytest.raises(ValueError, match=message):
        kernels.validate_kernel_metadata(meta)


def test_tpu_is_refused_with_the_reason():
    with pytest.raises(config.ConfigError, match="CPU or GPU notebooks only"):
        config.load(None, ["kaggle.accelerator=tpu"])


def test_network_guard_really_blocks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(SOCKET_GUARD)
    code = "import socket\ntry:\n    socket.create_connection(('8.8.8.8', 53), timeout=2)\nexcept OSError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True)
    assert "network disabled" in out.stdout


@pytest.mark.slow
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


def _first_cell(notebook) -> str:
    return "".join(json.loads(notebook.read_text())["cells"][1]["source"])


def _zipped_bundle(root, hostile: dict) -> None:
    """A bundle mounted as the client's dir_mode="zip" upload leaves it (each folder a zip of its contents), one
    archive of which holds `hostile` members (name -> (mode, bytes))."""
    b = root / "my-quest-models"
    b.mkdir(parents=True)
    (b / "bundle.json").write_text(json.dumps({**bundle.BUNDLE_FORMAT, "kind": "code"}))
    with zipfile.ZipFile(b / "pipeline.zip", "w") as z:
        for f in sorted((ROOT / "pipeline").rglob("*.py")):
            z.write(f, str(f.relative_to(ROOT / "pipeline")))
    with zipfile.ZipFile(b / "runs.zip", "w") as z:
        z.writestr("r/config.toml", "")
        for name, (mode, data) in hostile.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, data)


@pytest.mark.parametrize("notebook", [layout.INFERENCE_NOTEBOOK, layout.TRAIN_NOTEBOOK])
@pytest.mark.parametrize("member, mode, message", [
    ("../../../quest-escape.txt", 0o100644, "a '..' in its name"),
    ("/tmp/quest-escape-abs.txt", 0o100644, "an absolute name"),
    ("r/key.json", 0o120777, "a symbolic link"),
])
def test_the_notebooks_unpack_a_zipped_bundle_only_through_the_checked_extractor(tmp_path, notebook, member, mode,
                                                                                message):
    root = tmp_path / "input"
    _zipped_bundle(root, {member: (mode, b"/root/.kaggle/kaggle.json" if mode == 0o120777 else b"x")})
    (tmp_path / "tmp").mkdir()
    res = subprocess.run([sys.executable, "-c", _first_cell(notebook)], capture_output=True, text=True,
                         env={**os.environ, "QUEST_INPUT_ROOT": str(root), "TMPDIR": str(tmp_path / "tmp")})
    assert res.returncode != 0 and "UnsafeArchive" in res.stderr and message in res.stderr, res.stderr[-800:]
    assert not list(tmp_path.rglob("quest-escape*")) and not os.path.exists("/tmp/quest-escape-abs.txt")
    assert not list((tmp_path / "tmp").rglob("key.json"))


@pytest.mark.parametrize("change, message", [
    ({"weights": [0.0, 1.0, 0.0]}, "expected one weight per run"),
    ({"weights": [5.0, 1.0]}, "must add up to 1"),
    ({"weights": [-1.0, 2.0]}, "finite numbers >= 0"),
    ({"weights": [float("nan"), 1.0]}, "finite numbers >= 0"),
    ({"weights": [[0.5] * 29, [0.5] * 30]}, "per-target weights must be"),
    ({"method": "median"}, "blend method 'median' is not one of"),
    ({"runs": ["../escape", "x"]}, "plain name"),
    ({"format": None}, "was not written by `python run.py package`"),
])
def test_a_bundle_manifest_is_checked_before_the_kernel_trusts_it(bundled, tmp_path, change, message):
    """Every blend the kernel would read is checked (with its digest recomputed, so each check is what refuses),
    and an edit that leaves the digest as package recorded it is refused by the digest."""
    _, _, out, _ = bundled
    copy = tmp_path / "b"
    copy.mkdir()
    good = files.read_json(out / "bundle.json")
    assert manifest.read(out) == good
    files.write_json(copy / "bundle.json", {**good, "weights": [0.25, 0.75]})  # valid, but not the blend recorded
    with pytest.raises(DamagedArtifact, match="differ from those `package` recorded"):
        manifest.read(copy)
    edited = {**good, **change}
    if "format" not in change and "runs" not in change:
        edited["blend_sha256"] = manifest.blend_digest(edited["runs"], edited["method"], edited["weights"])
    files.write_json(copy / "bundle.json", edited)
    with pytest.raises(PipelineError, match=message):
        manifest.read(copy)


def test_each_ensemble_owns_its_submission_and_current_covers_every_file(bundled, tmp_path):
    """`ensemble.name=other` no longer leaves the default ensemble "current" over the other's submission; a kill
    between weights.json and the summary leaves a blend that is not current and that package refuses; a blend
    fitted while a fold was missing is refused once the fold is back."""
    cfg, run_dirs, _, _ = bundled
    runs = [str(d) for d in run_dirs]
    here = copy.deepcopy(cfg)
    config.override(here, "ensemble.name=mine")
    stages.ensemble(here, runs=runs)
    mine = pd.read_csv(here.submission_file)
    other = copy.deepcopy(here)
    config.override(other, "ensemble.name=other")
    config.override(other, "ensemble.method=rank")
    stages.ensemble(other, runs=runs)
    assert files.read_json(layout.submission_record(here.submission_file))["ensemble"] == "other"
    assert not np.allclose(pd.read_csv(here.submission_file)[list(TARGETS)], mine[list(TARGETS)])
    stages.ensemble(here, runs=runs)  # not current any more: made again, and the submission is its own again
    assert np.allclose(pd.read_csv(here.submission_file)[list(TARGETS)], mine[list(TARGETS)])
    assert files.read_json(layout.submission_record(here.submission_file))["ensemble"] == "mine"

    ens = layout.ensemble(here)
    files.write_json(ens.weights, {**files.read_json(ens.weights), "method": "rank"})  # killed before the summary
    with pytest.raises(UsageError, match="incomplete or was changed after it was written"):
        stages.package(here, runs=runs, out=str(tmp_path / "b1"))
    stages.ensemble(here, runs=runs)
    assert files.read_json(ens.weights)["method"] == here.ensemble.method

    fold = run_dirs[0] / "fold1"
    fold.rename(tmp_path / "fold1-away")
    try:
        stages.ensemble(here, runs=runs)  # fitted with fold 1 missing
    finally:
        (tmp_path / "fold1-away").rename(fold)
    with pytest.raises(UsageError, match=r"fitted on folds .* the runs now have .*stale"):
        stages.package(here, runs=runs, out=str(tmp_path / "b2"))
    stages.ensemble(here, runs=runs)
    stages.package(here, runs=runs, out=str(tmp_path / "b3"))


def test_bundled_versions_come_from_the_folds_not_from_a_rewritten_run_record(bundled, tmp_path):
    cfg, run_dirs, _, _ = bundled
    run = Run(shutil.copytree(run_dirs[0], tmp_path / run_dirs[0].name))
    trained = bundle.trained_versions([run])
    files.write_json(run.info, {**files.read_json(run.info), "versions": {"keras": "0.0.1", "keras-hub": "0.0.1"}})
    assert bundle.trained_versions([run]) == trained
    metrics = files.read_json(run.fold(1).metrics)
    metrics["provenance"]["versions"]["keras"] = "0.0.2"
    files.write_json(run.fold(1).metrics, metrics)
    with pytest.raises(UsageError, match="different library versions"):
        bundle.trained_versions([run])


def test_fold_weights_are_the_models_alone_and_old_folds_are_bundled_without_the_optimizer(bundled, tmp_path):
    """A fold's model.weights.h5 held AdamW's moments beside the weights (3x the size); it now holds the weights
    only, and package re-saves an older fold's weights without them (its finished.json records both hashes)."""
    import keras

    from pipeline.modeling import model as model_lib

    cfg, run_dirs, out, _ = bundled
    run = Run(shutil.copytree(run_dirs[0], tmp_path / run_dirs[0].name))
    weights = run.fold(0).weights
    assert not model_lib.holds_optimizer_state(weights)
    model = run.load_fold(0)
    n_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    assert weights.stat().st_size < 1.2 * n_bytes + 2**16
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.save_weights(weights)  # as folds were saved before
    files.write_json(run.fold(0).finished, {**files.read_json(run.fold(0).finished),
                                            "weights_sha256": files.sha256_file(weights)})
    assert model_lib.holds_optimizer_state(weights) and weights.stat().st_size > 2 * n_bytes
    b = stages.package(cfg, runs=[str(run.root)], out=str(tmp_path / "b"))[0]
    shipped = Run(b / "runs" / run.name)
    assert not model_lib.holds_optimizer_state(shipped.fold(0).weights)
    assert files.read_json(shipped.fold(0).finished)["converted_from_sha256"] == files.sha256_file(weights)
    a, c = (np.concatenate([w.ravel() for w in r.load_fold(0).get_weights()]) for r in (run, shipped))
    assert np.array_equal(a, c)


def test_the_notebooks_first_cell_and_find_bundle_pick_the_same_bundle(tmp_path, monkeypatch):
    """A code dataset and an inference bundle both attached: the inference notebook's first cell and find_bundle
    both take the inference bundle (whatever the names), the training notebook's and find_bundle both the
    shallowest, then by path; the competition folder is the one the bundle names (kaggle.competition)."""
    from pipeline.kernel import environment

    root = tmp_path / "input"
    for name, kind in (("aaa-quest-code", "code"), ("zzz-quest-models", "inference")):
        b = root / "datasets" / "someone" / name
        b.mkdir(parents=True)
        (b / "pipeline").mkdir()
        files.write_json(b / "bundle.json", {**bundle.BUNDLE_FORMAT, "kind": kind, "competition": "quest-rerun"})
    for slug in ("google-quest-challenge", "quest-rerun"):
        (root / "competitions" / slug).mkdir(parents=True)
        for f in ("test.csv", "sample_submission.csv"):
            (root / "competitions" / slug / f).write_text("")
    monkeypatch.delenv("QUEST_BUNDLE", raising=False)
    monkeypatch.delenv("QUEST_DATA", raising=False)
    for notebook, kind in ((layout.INFERENCE_NOTEBOOK, "inference"), (layout.TRAIN_NOTEBOOK, None)):
        res = subprocess.run([sys.executable, "-c", _first_cell(notebook) + "\nprint(BUNDLE)"], capture_output=True,
                             text=True, env={**os.environ, "QUEST_INPUT_ROOT": str(root)})
        assert res.returncode == 0, res.stderr[-800:]
        assert res.stdout.strip().splitlines()[-1] == str(environment.find_bundle(root, kind))
    assert environment.find_bundle(root, "inference").name == "zzz-quest-models"
    assert environment.find_bundle(root).name == "aaa-quest-code"
    found, data = inference.find_inputs(root)
    assert found.name == "zzz-quest-models" and data.name == "quest-rerun"
