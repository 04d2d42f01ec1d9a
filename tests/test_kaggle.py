import io
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import requests

from conftest import make_config
from kaggle_fakes import HAS_CLIENT

if not HAS_CLIENT:
    pytest.skip("the kaggle client is not installed here (the Kaggle-image environment has kagglesdk only); the "
                "API runs from your machine", allow_module_level=True)
from kaggle_server import FakeApi, bound_args, http_error  # noqa: E402
from pipeline.cli import stages
from pipeline.core.errors import UsageError
from pipeline.kaggle import api


class FakeKaggle(FakeApi):
    """The installed client's KaggleApi whose downloads serve files from a local folder; `fail` is raised as the
    real transfer would raise it (requests' exceptions, kagglesdk's HTTPError)."""

    def __init__(self, source=None, fail=None, archive=None):
        super().__init__()
        self.source, self.fail, self.archive = source, fail, archive

    def competition_download_files(self, *args, **kwargs):
        a = bound_args("competition_download_files", args, kwargs)
        self.calls.append(("competition", a["competition"]))
        if self.fail:
            raise self.fail
        with zipfile.ZipFile(f"{a['path']}/{a['competition']}.zip", "w") as z:
            for f in self.source.glob("*.csv"):
                z.write(f, f.name)

    def model_instance_version_download(self, *args, **kwargs):
        """As the real client with untar=False: the version's tar.gz, named after the model, in path."""
        a = bound_args("model_instance_version_download", args, kwargs)
        self.calls.append(("model", a["model_instance_version"]))
        assert a["untar"] is False, "the pipeline unpacks archives itself, checked"
        slug = a["model_instance_version"].split("/")[1]
        archive = self.archive or _tar_of(self.source, Path(a["path"]) / "build")
        shutil.move(archive, Path(a["path"]) / f"{slug}.tar.gz")
        shutil.rmtree(Path(a["path"]) / "build", ignore_errors=True)

    def dataset_download_files(self, *args, **kwargs):
        """As the real client with unzip=False: <slug>.zip in path."""
        a = bound_args("dataset_download_files", args, kwargs)
        self.calls.append(("dataset", a["dataset"]))
        assert a["unzip"] is False, "the pipeline unpacks archives itself, checked"
        with zipfile.ZipFile(Path(a["path"]) / f"{a['dataset'].split('/')[1]}.zip", "w") as z:
            for f in sorted(self.source.rglob("*")):
                z.write(f, str(Path("inner") / f.relative_to(self.source)))


def _tar_of(folder: Path, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    with tarfile.open(where / "model.tar.gz", "w:gz") as t:
        t.add(folder, arcname="inner")
    return where / "model.tar.gz"


def test_download_unzips_validates_and_then_skips(tmp_path, synth_dir):
    cfg = make_config(tmp_path, tmp_path / "comp")
    client = FakeKaggle(synth_dir)
    paths = stages.download(cfg, client=client)
    assert [p.name for p in paths] == ["train.csv", "test.csv", "sample_submission.csv"]
    assert all(p.is_file() for p in paths) and not list((tmp_path / "comp").glob("*.zip"))
    stages.download(cfg, client=client)
    assert client.calls == [("competition", "google-quest-challenge")]  # second call: files valid, skipped


def test_download_without_credentials_says_where_files_go(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    cfg = make_config(tmp_path, tmp_path / "comp")
    with pytest.raises(api.KaggleUnavailable, match=r"no working Kaggle login found.*put train\.csv, test\.csv and "
                                                        r"sample_submission\.csv in .*comp"):
        stages.download(cfg)


def test_network_failure_leaves_no_partial_files(tmp_path):
    cfg = make_config(tmp_path, tmp_path / "comp")
    with pytest.raises(api.KaggleUnavailable, match="could not be reached .ConnectionError"):
        stages.download(cfg, client=FakeKaggle(fail=requests.ConnectionError("Max retries exceeded")))
    assert not (tmp_path / "comp").exists() or not list((tmp_path / "comp").iterdir())


def test_rules_not_accepted_says_where_to_accept_them(tmp_path):
    cfg = make_config(tmp_path, tmp_path / "comp")
    refused = http_error(403, "You must accept this competition's rules before you'll be able to download files.")
    with pytest.raises(api.KaggleUnavailable, match=r"403: You must accept .* accept the competition's rules at "
                                                    r"https://www.kaggle.com/c/google-quest-challenge/rules"):
        stages.download(cfg, client=FakeKaggle(fail=refused))


@pytest.mark.parametrize("handle, call", [("keras/bert/keras/bert_tiny_en_uncased/2", "model"),
                                          ("someone/tiny-bert-hf", "dataset")])
def test_model_download_finds_the_model_folder(tmp_path, synth_dir, tiny_model_dir, handle, call):
    cfg = make_config(tmp_path, synth_dir, kaggle__model=handle, kaggle__model_name="tiny")
    cfg.data.dir = str(synth_dir)
    client = FakeKaggle(tiny_model_dir)
    paths = api.download_model(cfg, client=client)
    assert (paths[0] / "config.json").is_file() and paths[0].name == "tiny" and client.calls[0][0] == call


def test_bad_model_handle(tmp_path, synth_dir):
    cfg = make_config(tmp_path, synth_dir, kaggle__model="just-a-name")
    with pytest.raises(ValueError, match="owner/model/framework/variation/version"):
        api.download_model(cfg, client=FakeKaggle())


@pytest.mark.parametrize("handle, name", [("keras/bert/keras/bert_tiny_en_uncased/2", "keras__bert__keras__bert_tiny_en_uncased__2"),
                                          ("someone/tiny-bert-hf", "someone__tiny-bert-hf")])
def test_model_folders_are_named_by_the_whole_handle(tmp_path, synth_dir, tiny_model_dir, handle, name):
    """Two Kaggle Models at the same version number (the handle's last part) no longer share a folder, and a
    folder holding another handle's model is refused, never reused."""
    cfg = make_config(tmp_path, synth_dir, kaggle__model=handle)
    assert api.download_model(cfg, client=FakeKaggle(tiny_model_dir))[0].name == name
    other = make_config(tmp_path, synth_dir, kaggle__model=handle.replace("bert", "albert", 1))
    assert api.download_model(other, client=FakeKaggle(tiny_model_dir))[0].name != name
    clash = make_config(tmp_path, synth_dir, kaggle__model=handle.replace("bert", "albert", 1), kaggle__model_name=name)
    with pytest.raises(UsageError, match=f"holds the model '{handle}'"):
        api.download_model(clash, client=FakeKaggle(tiny_model_dir))


def _hostile_tar(tmp_path: Path, member: str, kind: str) -> Path:
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo("inner/config.json")
        info.size = 2
        t.addfile(info, io.BytesIO(b"{}"))
        info = tarfile.TarInfo(member)
        if kind == "file":
            info.size = 1
            t.addfile(info, io.BytesIO(b"x"))
        elif kind in ("symlink", "hardlink"):
            info.type, info.linkname = (tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE), str(Path.home() / ".kaggle" / "kaggle.json")
            t.addfile(info)
        else:
            info.type = {"fifo": tarfile.FIFOTYPE, "device": tarfile.CHRTYPE}[kind]
            t.addfile(info)
    return path


@pytest.mark.parametrize("member, kind", [("../../../../../x", "file"), ("/tmp/quest-escape-abs", "file"),
                                          ("inner/../../escape", "file"), ("inner/key", "symlink"),
                                          ("inner/hard", "hardlink"), ("inner/pipe", "fifo"), ("inner/dev", "device")])
def test_a_model_archive_is_checked_member_by_member_before_anything_is_written(tmp_path, synth_dir, member, kind):
    cfg = make_config(tmp_path, synth_dir, kaggle__model="keras/bert/keras/bert_tiny_en_uncased/2")
    (tmp_path / "src").mkdir()
    client = FakeKaggle(archive=_hostile_tar(tmp_path / "src", member, kind))
    with pytest.raises(api.KaggleUnavailable, match=f"{re.escape(repr(member))} .*nothing was unpacked"):
        api.download_model(cfg, client=client)
    assert not Path("/tmp/quest-escape-abs").exists() and not (tmp_path.parent / "escape").exists()
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file()]


def test_a_competition_zip_with_an_escaping_member_is_refused(tmp_path, synth_dir):
    class Hostile(FakeKaggle):
        def competition_download_files(self, *args, **kwargs):
            a = bound_args("competition_download_files", args, kwargs)
            with zipfile.ZipFile(f"{a['path']}/{a['competition']}.zip", "w") as z:
                for f in self.source.glob("*.csv"):
                    z.write(f, f.name)
                z.writestr("../../outside.csv", "qa_id\n1\n")

    cfg = make_config(tmp_path, tmp_path / "comp")
    with pytest.raises(api.KaggleUnavailable, match=r"'\.\./\.\./outside\.csv' \(a '\.\.' in its name\)"):
        stages.download(cfg, client=Hostile(synth_dir))
    assert not (tmp_path / "outside.csv").exists() and not (tmp_path / "comp" / "train.csv").exists()


def test_download_replaces_only_a_model_folder_it_made(tmp_path, synth_dir, tiny_model_dir):
    """--force downloads again over the pipeline's own folder, never over a user's model folder of that name."""
    cfg = make_config(tmp_path, synth_dir, kaggle__model="someone/tiny-bert-hf", kaggle__model_name="mine")
    mine = tmp_path / "models" / "mine"
    shutil.copytree(tiny_model_dir, mine)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="did not make"):
        api.download_model(cfg, client=FakeKaggle(tiny_model_dir), force=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    ours = make_config(tmp_path, synth_dir, kaggle__model="someone/tiny-bert-hf")
    first = api.download_model(ours, client=FakeKaggle(tiny_model_dir))[0]
    (first / "stale.txt").write_text("from an earlier download")
    assert api.download_model(ours, client=FakeKaggle(tiny_model_dir), force=True) == [first]
    assert not (first / "stale.txt").exists() and (first / api.MODEL_SOURCE).is_file()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging, aside or lock left


def test_a_dataset_zip_is_checked_too(tmp_path, synth_dir, tiny_model_dir):
    class Hostile(FakeKaggle):
        def dataset_download_files(self, *args, **kwargs):
            a = bound_args("dataset_download_files", args, kwargs)
            with zipfile.ZipFile(Path(a["path"]) / "tiny.zip", "w") as z:
                z.writestr("inner/config.json", "{}")
                info = zipfile.ZipInfo("inner/key")
                info.external_attr = 0o120777 << 16
                z.writestr(info, str(Path.home() / ".kaggle" / "kaggle.json"))

    cfg = make_config(tmp_path, synth_dir, kaggle__model="someone/tiny-bert-hf")
    with pytest.raises(api.KaggleUnavailable, match=r"'inner/key' \(a symbolic link\)"):
        api.download_model(cfg, client=Hostile(tiny_model_dir))
