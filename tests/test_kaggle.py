import shutil
import zipfile

import pytest
import requests

from conftest import make_config
from kaggle_fakes import HAS_CLIENT

if not HAS_CLIENT:
    pytest.skip("the kaggle client is not installed here (the Kaggle-image environment has kagglesdk only); the "
                "API runs from your machine", allow_module_level=True)
from kaggle_server import FakeApi, bound_args, http_error  # noqa: E402
from pipeline.cli import stages
from pipeline.kaggle import api


class FakeKaggle(FakeApi):
    """The installed client's KaggleApi whose downloads serve files from a local folder; `fail` is raised as the
    real transfer would raise it (requests' exceptions, kagglesdk's HTTPError)."""

    def __init__(self, source=None, fail=None):
        super().__init__()
        self.source, self.fail = source, fail

    def competition_download_files(self, *args, **kwargs):
        a = bound_args("competition_download_files", args, kwargs)
        self.calls.append(("competition", a["competition"]))
        if self.fail:
            raise self.fail
        with zipfile.ZipFile(f"{a['path']}/{a['competition']}.zip", "w") as z:
            for f in self.source.glob("*.csv"):
                z.write(f, f.name)

    def model_instance_version_download(self, *args, **kwargs):
        a = bound_args("model_instance_version_download", args, kwargs)
        self.calls.append(("model", a["model_instance_version"]))
        shutil.copytree(self.source, f"{a['path']}/inner")

    def dataset_download_files(self, *args, **kwargs):
        a = bound_args("dataset_download_files", args, kwargs)
        self.calls.append(("dataset", a["dataset"]))
        shutil.copytree(self.source, f"{a['path']}/inner")


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
