"""Scale-out on Kaggle (issue 15): training kernels pushed per fold group, their folds collected into one run
and checked against it, bounded status polling; end to end through a fake Kaggle that runs the kernels here."""
import copy
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import holding_process, tiny_train_config
from kaggle_fakes import HAS_CLIENT, requires_client
from pipeline.cli import stages
from pipeline.core import config, files, layout, provenance
from pipeline.core.columns import ID, TARGETS
from pipeline.kaggle import api, kernels
from pipeline.run.rundir import Run, RunError

if HAS_CLIENT:
    from kaggle_server import FakeApi, KernelCloud, KernelOutput


def _kernel_output(tmp_path, run_dir):
    """A training kernel's output folder holding (a copy of) run_dir, as `kaggle kernels output` leaves it."""
    out = tmp_path / "kernel-output"
    shutil.copytree(run_dir, layout.KernelWork(out).run(run_dir.name).root)
    return out, layout.KernelWork(out).run(run_dir.name)


def _kaggle(out, *handles, **kw) -> "FakeApi":
    """The kaggle client, on a Kaggle where each of handles is a kernel that has run and left `out`."""
    return FakeApi(KernelOutput(out, handles, **kw))


def _collector(trained, tmp_path):
    """The trained run's config pointed at an empty output folder (its folds file kept): where folds arrive."""
    cfg, (run_dir, _) = trained
    here = copy.deepcopy(cfg)
    for assignment in (f"output.dir={tmp_path / 'here'}", f"folds.file={cfg.folds_file}", "train.seed=1"):
        config.override(here, assignment)
    assert here.run_name == run_dir.name
    return config.validate(here)


@requires_client
def test_collected_folds_join_the_run_and_are_checked(trained, tmp_path):
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, _ = _kernel_output(tmp_path, run_dir)
    handle = "someone/quest-train-f0-1"
    paths = stages.collect(here, kernels=[handle], client=_kaggle(out, handle))
    assert Run(here.run_dir).finished_folds() == [0, 1] and paths[-1].name == "summary.json"
    mine, theirs = (pd.read_csv(d / "oof.csv").set_index(ID).sort_index() for d in (here.run_dir, run_dir))
    assert np.allclose(mine[list(TARGETS)], theirs[list(TARGETS)])
    info = files.read_json(here.run_dir / "run.json")
    assert info["collected"][0]["kernel"] == "someone/quest-train-f0-1" and info["collected"][0]["folds"] == [0, 1]
    assert Run(here.run_dir).load_config().output.dir == here.output.dir  # this machine's config, not the kernel's
    again = _kaggle(out, "someone/quest-train-f0-1")  # the same folds again: nothing to copy, nothing refused
    stages.collect(here, kernels=["someone/quest-train-f0-1"], client=again)
    assert files.read_json(here.run_dir / "run.json")["collected"][-1]["folds"] == []


@pytest.mark.parametrize("tamper, message", [
    (lambda src: files.write_json(src.info, {**files.read_json(src.info), "folds_fingerprint": "0" * 16}),
     "trained on another split"),
    (lambda src: files.write_text(src.config, src.config.read_text().replace("epochs = 2", "epochs = 3")),
     r"other settings \{'train.epochs': \(3, 2\)\}"),
    (lambda src: files.write_json(src.info, {**files.read_json(src.info), "tokenizer_fingerprint": "f" * 64}),
     "tokenizer copy .* does not match its run.json"),
    (lambda src: src.fold(1).weights.write_bytes(b"half"), "fold1/model.weights.h5 is damaged"),
    (lambda src: shutil.copy(src.fold(0).oof, src.fold(1).oof), "its fold 1 predicted .* holds another fold's output"),
    (lambda src: files.write_json(src.info, {**files.read_json(src.info), "data_fingerprint": {"labels": "x"}}),
     "trained on another train file"),
    (lambda src: shutil.copytree(src.fold(0).root, src.root / "fold7"), "fold7 are not folds of this 2-fold run"),
    (lambda src: files.write_json(src.fold(0).metrics, {**files.read_json(src.fold(0).metrics), "global_batch": 32}),
     None),  # checked against this run's other folds below
    (lambda src: files.write_json(src.fold(0).metrics, {**files.read_json(src.fold(0).metrics),
                                                        "precision": "mixed_float16"}), None),  # a P100's "auto"
])
@requires_client
def test_mismatched_kernel_runs_are_refused_before_anything_is_copied(trained, tmp_path, tamper, message):
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, src = _kernel_output(tmp_path, run_dir)
    if message is None:  # a kernel on two GPUs (global batch 32), or in float16, cannot join folds trained on one
        shutil.rmtree(src.fold(0).root)  # GPU in float32 (global batch 16)
        stages.collect(here, kernels=["someone/quest-a"], client=_kaggle(out, "someone/quest-a"))  # fold 1 arrives first
        out, src = _kernel_output(tmp_path / "b", run_dir)
        shutil.rmtree(src.fold(1).root)
        message = ("fold 1 of .* was trained with a global batch of 16 .* kernel someone/quest-b gives 32|"
                   "fold 1 of .* was trained in float32; kernel someone/quest-b trains in mixed_float16")
    tamper(src)
    before = sorted(p for p in here.run_dir.rglob("*")) if here.run_dir.exists() else []
    with pytest.raises(RunError, match=message):
        stages.collect(here, kernels=["someone/quest-b"], client=_kaggle(out, "someone/quest-b"))
    after = sorted(p for p in here.run_dir.rglob("*") if p.name != ".lock") if here.run_dir.exists() else []
    assert [p for p in after if p.name != ".lock"] == [p for p in before if p.name != ".lock"]


@requires_client
def test_a_kernel_that_used_another_tokenizer_is_refused(trained, tmp_path, synth_dir):
    from pipeline.core.columns import TEXT_COLUMNS
    from pipeline.dev import synth, tinymodel
    from pipeline.text import tokenizer as tokenizer_lib

    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, src = _kernel_output(tmp_path, run_dir)
    texts = [t for c in TEXT_COLUMNS for t in synth.generate(60, 10, seed=9)[0][c]]
    other = tokenizer_lib.load(tinymodel.make(tmp_path / "other", texts, vocab_size=300))
    shutil.rmtree(src.tokenizer)
    other.save(src.tokenizer)  # a consistent kernel run, on another vocabulary
    files.write_json(src.info, {**files.read_json(src.info), "tokenizer_fingerprint": other.fingerprint})
    with pytest.raises(RunError, match="trained with another tokenizer"):
        stages.collect(here, kernels=["someone/quest-a"], client=_kaggle(out, "someone/quest-a"))


@requires_client
def test_a_local_fold_with_other_weights_is_kept(trained, tmp_path):
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, src = _kernel_output(tmp_path, run_dir)
    stages.collect(here, kernels=["someone/quest-a"], client=_kaggle(out, "someone/quest-a"))
    fold = layout.RunPaths(here.run_dir).fold(0)
    files.write_json(fold.finished, {**files.read_json(fold.finished), "weights_sha256": "0" * 64})
    with pytest.raises(RunError, match="fold 0 is already finished .* with other weights"):
        stages.collect(here, kernels=["someone/quest-a"], client=_kaggle(out, "someone/quest-a"))


def _pushed(cfg, handle: str, folds: list[int], version: int):
    """What `kernel --train --push` records for a kernel (output/kaggle-train/pushed.json)."""
    files.write_json(layout.pushed_kernels(cfg), {**kernels.pushed_record(cfg), handle: {
        "run": cfg.run_name, "folds": folds, "version": version, "pushed": "2026-12-02T00:00:00+00:00"}})


@requires_client
def test_a_kernel_that_failed_keeps_the_folds_it_finished(trained, tmp_path, caplog):
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, src = _kernel_output(tmp_path, run_dir)
    shutil.rmtree(src.fold(1).root)  # fold 1 ran out of memory: the kernel ended in error after fold 0
    handle = "someone/quest-train-f0-1"
    _pushed(here, handle, [0, 1], version=1)
    client = _kaggle(out, handle, statuses=[("error", "ResourceExhaustedError: OOM when allocating tensor")])
    stages.collect(here, client=client)
    assert Run(here.run_dir).finished_folds() == [0] and ("output", handle) in client.calls
    assert "folds [1] did not finish and were not collected" in caplog.text and "OOM" in caplog.text


@requires_client
def test_collect_takes_the_version_pushed_from_here_or_refuses(trained, tmp_path):
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, _ = _kernel_output(tmp_path, run_dir)
    handle = "someone/quest-train-f0-1"
    _pushed(here, handle, [0, 1], version=2)
    client = _kaggle(out, handle, version=3)  # someone pushed it again (from another machine or the web editor)
    with pytest.raises(RunError, match="is at version 3, but version 2 was pushed from here"):
        stages.collect(here, client=client)
    assert ("output", handle) not in client.calls and not Run(here.run_dir).finished_folds()
    stages.collect(here, client=_kaggle(out, handle, version=2))
    assert Run(here.run_dir).finished_folds() == [0, 1]


@requires_client
def test_status_polling_is_bounded_and_reports_failures(monkeypatch):
    monkeypatch.setattr(api.time, "sleep", lambda s: None)
    client = _kaggle(".", "someone/quest-k", statuses=["queued", "running", "running", "complete"])
    assert api.wait_kernel("someone/quest-k", client, timeout=600, poll=60) == ("complete", "")
    assert len(client.calls) == 4
    with pytest.raises(api.KaggleApiError, match=r"is 'running' after 120s; collect it when it has run"):
        api.wait_kernel("someone/quest-k", _kaggle(".", "someone/quest-k", statuses=["running"]), timeout=120, poll=60)
    ended = _kaggle(".", "someone/quest-k", statuses=[("error", "CUDA out of memory")])
    assert api.wait_kernel("someone/quest-k", ended, timeout=600) == ("error", "CUDA out of memory")
    with pytest.raises(api.KaggleApiError, match=r"is 'running'; collect it when it has run \(--wait"):
        api.wait_kernel("someone/quest-k", _kaggle(".", "someone/quest-k", statuses=["running"]))  # look once
    # Kaggle answers 403 for a kernel that is not there or not yours; the client turns it into a ValueError about
    # benchmark slugs: Kaggle's own status and message come back, with the next step for a 403
    with pytest.raises(api.KaggleApiError, match=r"status of kernel someone/quest-typo: Kaggle answered 403: "
                                                 r"Permission 'kernels.get' was denied\. .*check that the handle"):
        api.wait_kernel("someone/quest-typo", client)
    with pytest.raises(api.KaggleApiError, match=r"has not run \('new_script'"):
        api.wait_kernel("someone/quest-k", _kaggle(".", "someone/quest-k", statuses=["new_script"]), timeout=600)
    ended = _kaggle(".", "someone/quest-k", statuses=["cancel_requested", "cancel_requested", "cancel_acknowledged"])
    assert api.wait_kernel("someone/quest-k", ended, timeout=600)[0] == "cancel_acknowledged"  # requested: not ended


@requires_client
def test_training_kernel_metadata_and_notebook(trained, tmp_path):
    cfg, _ = trained
    k = copy.deepcopy(cfg)
    for assignment in ("kaggle.train_kernel=someone/quest-train", "kaggle.code_dataset=someone/quest-code",
                       "kaggle.model=keras/bert/keras/bert_base_en_uncased/2", "train.folds=[0]"):
        config.override(k, assignment)
    notebook, meta_path = stages.kernel(k, train=True, out=str(tmp_path / "k"))
    meta = files.read_json(meta_path)
    assert meta["id"] == "someone/quest-train-f0" and meta["enable_internet"] is False and meta["enable_gpu"] is True
    assert meta["dataset_sources"] == ["someone/quest-code"]
    assert meta["model_sources"] == ["keras/bert/keras/bert_base_en_uncased/2"]
    cell = [c for c in json.loads(notebook.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])][0]
    scope = {}
    exec("".join(cell["source"]), scope)
    assert scope["FOLDS"] == [0] and config.from_toml_text(scope["CONFIG"]).run_name == k.run_name
    config.override(k, "kaggle.model=")
    with pytest.raises(ValueError, match="needs the backbone as an input: set kaggle.model"):
        stages.kernel(k, train=True, out=str(tmp_path / "k"))


def _train_on_kernels(tmp_path, synth_dir, tiny_model_dir, fold_groups, python=None):
    """package --code-only -> kernel --train --push per fold group -> collect --wait, through a fake Kaggle whose
    kernels run the training notebook here (read-only /kaggle/input, network blocked) with `python`."""
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__epochs=1, train__seed=3,
                            kaggle__code_dataset="someone/quest-code", kaggle__model="someone/tiny-bert-model",
                            kaggle__train_kernel="someone/quest-train")
    stages.folds(cfg)
    cloud = KernelCloud(tmp_path / "cloud", cfg.path(cfg.data.dir), datasets={"someone/tiny-bert-model": tiny_model_dir},
                        python=python)
    client = FakeApi(cloud)
    stages.package(cfg, code_only=True, upload=True, client=client)
    for folds in fold_groups:
        cfg.train.folds = folds
        stages.kernel(cfg, train=True, push=True, client=client)
    cfg.train.folds = []
    return cfg, cloud, stages.collect(cfg, wait=600, client=client)  # the kernels pushed from here


@pytest.mark.slow
@requires_client
def test_two_kernels_train_the_folds_and_the_run_is_as_if_trained_here(tmp_path, synth_dir, tiny_model_dir,
                                                                      monkeypatch):
    monkeypatch.setattr(api.time, "sleep", lambda s: None)
    cfg, cloud, (run_dir, summary) = _train_on_kernels(tmp_path, synth_dir, tiny_model_dir, ([0], [1]))
    assert kernels.pushed_for_run(cfg) == ["someone/quest-train-f0", "someone/quest-train-f1"]
    assert Run(run_dir).finished_folds() == [0, 1] and files.read_json(summary)["folds_done"] == [0, 1]
    assert all("training folds" in text and "installed from the bundle" in text for text in cloud.runs)
    collected = files.read_json(run_dir / "run.json")["collected"]  # the kernels ran the code packaged here
    assert [c["folds"] for c in collected] == [[0], [1]]
    assert {c["git_commit"] for c in collected} == {provenance.git_commit()}
    assert [c[0] for c in cloud.calls].count("kernel status") >= 6  # queued, running, complete for each
    local = copy.deepcopy(cfg)  # fold 0 trained here from the same config: the same model
    config.override(local, f"output.dir={tmp_path / 'local'}")
    config.override(local, "train.folds=[0]")
    local_run = stages.train(local)[0]
    mine, theirs = (pd.read_csv(layout.RunPaths(d).fold(0).oof).set_index(ID) for d in (local_run, run_dir))
    assert np.allclose(mine[list(TARGETS)], theirs.loc[mine.index, list(TARGETS)], atol=1e-5)
    stages.validate(cfg)
    stages.ensemble(cfg)
    assert (stages.package(cfg, out=str(tmp_path / "bundle"))[0] / "runs" / run_dir.name / "fold1").is_dir()


KAGGLE_PYTHON = os.environ.get("QUEST_KAGGLE_PYTHON", "")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(KAGGLE_PYTHON), reason="no Kaggle-image environment: run `make kaggle-check` "
                    "(builds .venv-kaggle from configs/kaggle-image-constraints.txt)")
@requires_client
def test_training_kernel_on_the_kaggle_image(tmp_path, synth_dir, tiny_model_dir, monkeypatch):
    """The training notebook run by Kaggle's versions (Python 3.12, TF 2.20, keras 3.13, keras-hub 0.26 ...) with
    the network blocked: it installs the bundled keras / keras-hub, trains its fold, and the fold collects."""
    monkeypatch.setattr(api.time, "sleep", lambda s: None)
    cfg, cloud, (run_dir, _) = _train_on_kernels(tmp_path, synth_dir, tiny_model_dir, ([1],), python=KAGGLE_PYTHON)
    assert Run(run_dir).finished_folds() == [1]
    versions = provenance.library_versions()
    for dist in ("keras", "keras-hub"):  # the image's older versions were replaced by the ones used here
        assert f"{dist}-{versions[dist]}" in cloud.runs[0]
    assert files.read_json(run_dir / "run.json")["versions"]["tensorflow"].startswith("2.20")  # the image's own


if HAS_CLIENT:
    class HostileOutput(KernelOutput):
        """Kaggle listing one more output file under `name` (its content: a file of the real output)."""

        def __init__(self, out, handle, name: str, **kw):
            super().__init__(out, [handle], **kw)
            self.hostile = name

        def ListKernelSessionOutput(self, r):
            out = super().ListKernelSessionOutput(r)
            item = type(out.files[0])()
            item.file_name, item.url = self.hostile, out.files[0].url
            out.files = [*out.files, item]
            return out


@pytest.mark.parametrize("name", ["../../../../quest-escape", "/tmp/quest-escape-abs", "quest/../../escape",
                                  "..", "C:\\escape"])
@requires_client
def test_kernel_output_named_outside_its_folder_is_refused_before_any_download(trained, tmp_path, name):
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, _ = _kernel_output(tmp_path, run_dir)
    handle = "someone/quest-hostile"
    client = FakeApi(HostileOutput(out, handle, name))
    with pytest.raises(api.archives.UnsafeArchive, match="names file.s. outside its folder.*nothing was downloaded"):
        stages.collect(here, kernels=[handle], client=client)
    assert not os.path.exists("/tmp/quest-escape-abs") and not (tmp_path / "quest-escape").exists()
    assert not Run(here.run_dir).finished_folds()


@requires_client
def test_a_link_in_a_kernel_output_is_never_followed_into_the_run(trained, tmp_path):
    """A link the client wrote (or a planted one) is refused before anything reads it; a fold brings only the
    files a fold needs."""
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, src = _kernel_output(tmp_path, run_dir)
    (src.fold(0).root / "notes.txt").write_text("not a fold's file")
    handle = "someone/quest-train-f0-1"
    stages.collect(here, kernels=[handle], client=_kaggle(out, handle))
    assert not (Run(here.run_dir).fold(0).root / "notes.txt").exists()
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    with pytest.raises(api.archives.UnsafeArchive, match="is a symbolic link"):
        api.archives.check_tree(_link(src.fold(1).root / "extra.json", secret).parent.parent)


def _link(at, to):
    os.symlink(to, at)
    return at


@requires_client
def test_collect_never_merges_into_a_run_another_process_is_writing(trained, tmp_path):
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, _ = _kernel_output(tmp_path, run_dir)
    handle = "someone/quest-train-f0-1"
    writer = holding_process("from pipeline.run.rundir import Run", f"lock = Run({str(here.run_dir)!r}).lock()",
                             "lock.__enter__()")
    try:
        with pytest.raises(RunError, match=rf"is being written by pid {writer.pid} "):
            stages.collect(here, kernels=[handle], client=_kaggle(out, handle))
        assert not Run(here.run_dir).finished_folds()
    finally:
        writer.kill()
        writer.wait()


@requires_client
def test_kernel_output_pages_and_failed_downloads_are_refused_not_merged(trained, tmp_path):
    """An output listing cut into pages is refused with the count (the client reads the first page only); a
    file whose download answers 500 is an error with Kaggle's status, not an error page saved as a fold file."""
    cfg, (run_dir, _) = trained
    here = _collector(trained, tmp_path)
    out, _ = _kernel_output(tmp_path, run_dir)
    handle = "someone/quest-train-f0-1"
    paged = KernelOutput(out, [handle])
    paged.page_size = 3
    with pytest.raises(api.KaggleApiError, match=r"cut into pages \(3 files on the first\)"):
        stages.collect(here, kernels=[handle], client=FakeApi(paged))
    broken = KernelOutput(out, [handle])
    broken.failing = {"model.weights.h5"}
    with pytest.raises(api.KaggleApiError, match=r"Kaggle answered 500: .*Kaggle's service failed on its side"):
        stages.collect(here, kernels=[handle], client=FakeApi(broken))
    assert not Run(here.run_dir).finished_folds()
    stages.collect(here, kernels=[handle], client=_kaggle(out, handle))
    assert Run(here.run_dir).finished_folds() == [0, 1]
