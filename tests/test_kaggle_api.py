"""The Kaggle API as it really answers (issue 24): the installed kaggle client (kaggle 2.x / kagglesdk), its
network replaced by an in-memory Kaggle (kaggle_server.KaggleServer) that answers with kagglesdk's own response
classes, status enums and exceptions. Each test names the case of the issue it covers."""
import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kaggle_fakes import HAS_CLIENT

if not HAS_CLIENT:
    pytest.skip("the kaggle client is not installed here (the Kaggle-image environment has kagglesdk only); the "
                "API runs from your machine", allow_module_level=True)
from kaggle_server import FakeApi, KaggleApi, KaggleServer  # noqa: E402
from pipeline.core import config as config_lib, files
from pipeline.kaggle import api, bundle, client as client_lib, kernels, wheels
from pipeline.kernel import inference


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(api.time, "sleep", lambda s: None)


def _folder(tmp_path, handle="someone/quest-bundle", name="b") -> Path:
    """A dataset folder as `package` leaves it: files, a folder, dataset-metadata.json."""
    folder = tmp_path / name
    (folder / "pipeline").mkdir(parents=True, exist_ok=True)
    (folder / "pipeline" / "code.py").write_text("x = 1\n")
    (folder / "bundle.json").write_text("{}")
    files.write_json(folder / "dataset-metadata.json", bundle.dataset_metadata(handle, bundle.dataset_title(handle)))
    return folder


# 1. The first upload creates the dataset; create-or-version is decided before anything is uploaded.
def test_first_upload_creates_and_later_ones_add_versions(tmp_path):
    """The client's real dataset_create_new / dataset_create_version run (metadata checks, its own status look-up,
    the resumable blob upload with its retry on 429, the create request): only the transport is faked."""
    client = FakeApi()
    client.server.rate_limited = 1  # the first blob upload start is answered 429 (Retry-After: 0), then retried
    assert api.upload_dataset(_folder(tmp_path), client) == ("created", 1)
    handle = "someone/quest-bundle"
    assert client.calls[:2] == [("status", handle), ("status", handle)]  # ours, then the client's own look-up
    blobs = [name for kind, name in client.calls[2:-1]]  # a file, a folder as the client's zip; the first twice
    assert len(blobs) == 3 and set(blobs) == {"bundle.json", "pipeline.zip"} and client.calls[-1] == ("create", handle)
    assert api.upload_dataset(_folder(tmp_path), client) == ("version", 2)
    assert [c[0] for c in client.calls[6:]] == ["status", "blob", "blob", "version"]
    folder = client.server.datasets[handle].folder
    assert (folder / "pipeline" / "code.py").is_file()  # folders went up (dir_mode zip), not skipped
    assert (folder / "bundle.json").read_text() == "{}"  # every byte arrived


def test_a_dataset_kaggle_shows_late_gets_a_version_not_a_title_error(tmp_path):
    """Our first look answers 404 (a new dataset shows late) but the client's own look inside dataset_create_new
    finds it and answers "the requested title ... is already in use": that means add a version."""
    server = KaggleServer()
    server.add_dataset("someone/quest-bundle", tmp_path, title="Quest Bundle", hidden=1)
    assert api.upload_dataset(_folder(tmp_path), FakeApi(server)) == ("version", 2)
    assert [c[0] for c in server.calls][-1] == "version"
    other = KaggleServer()  # another dataset of ours holds the title: that one is a real clash
    other.add_dataset("someone/another-slug", tmp_path, title="Quest Bundle")
    with pytest.raises(api.KaggleApiError, match="title is already in use"):
        api.upload_dataset(_folder(tmp_path), FakeApi(other))


def test_a_dataset_that_is_not_yours_is_refused_with_the_next_step(tmp_path):
    server = KaggleServer()
    server.add_dataset("other/quest-bundle")  # Kaggle shows it, but it belongs to someone else
    with pytest.raises(api.KaggleApiError, match=r"Kaggle answered 403: Permission 'datasets.update' was denied\. "
                                                 r".*choose a slug under your own user name"):
        api.upload_dataset(_folder(tmp_path, "other/quest-bundle"), FakeApi(server))


# 2 and 3. Logins as the client reads them; a failed login is the project's message, not exit(1).
def test_a_home_with_only_an_access_token_logs_in(tmp_path, monkeypatch):
    from kagglesdk.kaggle_http_client import KaggleHttpClient
    from kagglesdk.security.types.oauth_service import IntrospectTokenResponse

    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "access_token").write_text("KGAT_0123456789abcdef\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    asked = []

    def network(self, service, name, request, response_type):  # Kaggle's answer to the token check
        asked.append((name, request.token))
        answer = IntrospectTokenResponse()
        answer.active, answer.username = True, "someone"
        return answer

    monkeypatch.setattr(KaggleHttpClient, "call", network)
    client = client_lib.get_client()
    assert client.config_values[client.CONFIG_NAME_USER] == "someone"
    assert asked == [("IntrospectToken", "KGAT_0123456789abcdef")]


def _run_download(tmp_path, home_files: dict) -> subprocess.CompletedProcess:
    """`run.py download` in a fresh process (kaggle's import-time login runs for real) with this home."""
    home = tmp_path / "home"
    for name, text in home_files.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), HTTPS_PROXY="http://127.0.0.1:9")
    return subprocess.run([sys.executable, str(config_lib.ROOT / "run.py"), "download", "--set",
                           f"data.dir={tmp_path / 'comp'}"], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("home_files", [{}, {".kaggle/kaggle.json": json.dumps({"api_token": "KGAT_abc"})}],
                         ids=["no login", "kaggle.json holding a new-style token"])
def test_a_failed_login_says_what_to_do(tmp_path, home_files):
    done = _run_download(tmp_path, home_files)
    assert done.returncode == 2, done.stderr  # a user error, not a crash (1) or a silent exit
    assert "no working Kaggle login found" in done.stderr and "~/.kaggle/access_token" in done.stderr
    assert "put train.csv, test.csv and sample_submission.csv in" in done.stderr and "Traceback" not in done.stderr


# 4. Every API failure is a pipeline error carrying Kaggle's message and the next step.
def test_submission_refusals_carry_kaggles_message_and_the_next_step(tmp_path):
    server = KaggleServer(rules_accepted=False)
    server.add_kernel("someone/quest-inference", version=3)
    with pytest.raises(api.KaggleApiError, match=r"403: You must accept this competition's rules.*accept the "
                                                 r"competition's rules at https://www.kaggle.com/c/google-quest-"
                                                 r"challenge/rules"):
        api.submit_kernel("google-quest-challenge", "someone/quest-inference", 3, "m", FakeApi(server))
    server.rules_accepted, server.submissions_left = True, 0
    with pytest.raises(api.KaggleApiError, match=r"400: Submission not allowed: .*daily Submission allowance.*"
                                                 r"the daily submission limit is reached: submit again after it resets"):
        api.submit_kernel("google-quest-challenge", "someone/quest-inference", 3, "m", FakeApi(server))
    server.submissions_left = 5
    output = tmp_path / "work"
    output.mkdir()  # the version ran, but wrote no submission.csv
    server.kernels["someone/quest-inference"].output = output
    with pytest.raises(api.KaggleApiError, match=r"400: Submission not allowed: submission.csv was not found.*check "
                                                 r"that version 3 wrote submission.csv"):
        api.submit_kernel("google-quest-challenge", "someone/quest-inference", 3, "m", FakeApi(server))


@pytest.mark.parametrize("code, step", [(401, "make a new API token"), (403, "check that the handle"),
                                        (500, "Kaggle's service failed on its side"),
                                        (503, "Kaggle's service failed on its side")])
def test_status_and_output_refusals_name_kaggles_status_and_the_right_step(code, step, tmp_path):
    """kernels_status / kernels_output turn a 401 or 403 into a ValueError about benchmark slugs: Kaggle's own
    status and message come back with the step for that status; 5xx get theirs."""
    class Refusing(KaggleServer):
        def GetKernelSessionStatus(self, r):
            from kaggle_server import Refusal
            raise Refusal(code, {401: "Unauthenticated", 403: "Permission 'kernels.get' was denied"}.get(
                code, "Internal error"))

    server = Refusing()
    server.add_kernel("someone/quest-k")
    with pytest.raises(api.KaggleApiError, match=rf"Kaggle answered {code}: .*{step}") as err:
        api.kernel_status("someone/quest-k", FakeApi(server))
    assert "benchmark" not in str(err.value)


def test_an_older_version_cannot_be_checked_so_it_is_refused_with_the_reason():
    server = KaggleServer()
    server.add_kernel("someone/quest-inference", version=4)
    with pytest.raises(api.KaggleApiError, match=r"version 2 is not its latest \(4\): .*latest version only.*"
                                                 r"Output > Submit"):
        api.submit_kernel("google-quest-challenge", "someone/quest-inference", 2, "m", FakeApi(server))
    assert "submit" not in [c[0] for c in server.calls] and ("get kernel", "someone/quest-inference") in server.calls


def test_the_fake_refuses_a_submission_of_a_running_version_as_kaggle_does():
    server = KaggleServer()
    server.add_kernel("someone/quest-inference", version=2, statuses=["running"])
    with pytest.raises(Exception, match="has not completed"):
        FakeApi(server).competition_submit_code("submission.csv", "m", "google-quest-challenge",
                                                kernel="someone/quest-inference", kernel_version=2, quiet=True)


def test_a_push_kaggle_refuses_is_an_error_naming_it(tmp_path, trained):
    cfg, _ = trained
    server = KaggleServer(user="me")  # logged in as "me": someone's kernel is not ours to push
    server.add_dataset("someone/quest-bundle")
    k = _kernel_config(cfg)
    with pytest.raises(api.KaggleApiError, match=r"pushing the kernel .*403: Permission 'kernels.update' was denied"):
        kernels.kernel(k, out=str(tmp_path / "k"), push=True, client=FakeApi(server))
    server = KaggleServer(rules_accepted=False)  # the competition as a source needs its rules accepted
    server.add_dataset("someone/quest-bundle")
    with pytest.raises(api.KaggleApiError, match=r"does not accept these sources: \['google-quest-challenge'\] .*"
                                                 r"accept the competition's rules at"):
        kernels.kernel(k, out=str(tmp_path / "k2"), push=True, client=FakeApi(server))
    meta = tmp_path / "k2" / "kernel-metadata.json"
    files.write_json(meta, {**files.read_json(meta), "machine_shape": "NvidiaTeslaV100"})  # edited by hand
    with pytest.raises(api.KaggleApiError, match=r"400: Invalid machine shape 'NvidiaTeslaV100'"):
        api.push_kernel(tmp_path / "k2", FakeApi(KaggleServer()))


def _kernel_config(cfg, **changes):
    k = config_lib.from_toml_text(config_lib.to_toml(cfg))
    for key, value in {"kaggle.kernel": "someone/quest-inference", "kaggle.dataset": "someone/quest-bundle",
                       **changes}.items():
        config_lib.override(k, f"{key}={value}")
    return config_lib.validate(k)


# 5. The dataset-ready wait: 404 while new, failed and deleted final, the new version waited for.
def test_a_brand_new_dataset_is_waited_for_and_final_states_end_the_wait(tmp_path):
    server = KaggleServer()
    server.add_dataset("someone/quest-bundle", hidden=2, statuses=["blobs_received", "ready"])
    assert api.wait_dataset_ready("someone/quest-bundle", FakeApi(server), timeout=600, poll=10) == "ready"
    assert [c[0] for c in server.calls] == ["status"] * 4  # 404, 404, blobs_received, ready
    for final in ("failed", "deleted"):
        server.add_dataset("someone/quest-bundle", statuses=["not_yet_persisted", final])
        with pytest.raises(api.KaggleApiError, match=f"is '{final}' on Kaggle"):
            api.wait_dataset_ready("someone/quest-bundle", FakeApi(server), timeout=600)
    with pytest.raises(api.KaggleApiError, match=r"someone/quest-bundel still 'not visible yet' .* check the handle"):
        api.wait_dataset_ready("someone/quest-bundel", FakeApi(server), timeout=30, poll=10)  # a typo: never shows


def test_the_push_waits_for_the_version_just_uploaded(tmp_path, trained):
    cfg, _ = trained
    k = _kernel_config(cfg, **{"output.dir": tmp_path / "out"})
    server = KaggleServer(processing=["blobs_received", "ready"])
    client = FakeApi(server)
    server.add_dataset("someone/quest-bundle")  # version 1, ready
    api_folder = _folder(tmp_path)
    bundle._publish(k, api_folder, "someone/quest-bundle", True, client)  # version 2 uploaded and recorded
    assert bundle.uploaded_version(k, "someone/quest-bundle") == 2
    d = server.datasets["someone/quest-bundle"]
    d.statuses = [("ready", 1), ("ready", 1), ("ready", 2)]  # Kaggle still shows version 1 as ready for a while
    kernels.kernel(k, out=str(tmp_path / "k"), push=True, client=client)
    polls = [c for c in server.calls if c[0] == "status"]
    assert len(polls) == 1 + 3 and server.calls[-1][0] == "push"  # the upload's lookup, then 3 polls, then push


# 7. The 2-hour limit acts: over the budget the commit run fails with the numbers and what to cut.
def test_the_projected_time_fails_the_commit_run_over_budget():
    assert "19% of Kaggle's 2 h limit" in inference.check_time(1400, True, 0.75, runs=1, folds=5)
    with pytest.raises(inference.OverTime, match=r"100.0 min, 83% of Kaggle's 2 h limit .*fewer runs \(2 bundled\), "
                                                 r"fewer folds \(10 in all\), a shorter encode.max_len"):
        inference.check_time(6000, True, 0.75, runs=2, folds=10)
    assert "9 h limit" in inference.check_time(6000, False, 0.75, runs=2, folds=10)  # CPU: 9 hours
    assert "budget 0%" in inference.check_time(9000, True, 0.0, runs=2, folds=10)  # the user turned it off


def test_the_projection_counts_loading_and_tracing_each_fold(trained):
    import pandas as pd

    from pipeline.data import tables
    from pipeline.run import predict

    cfg, (run_dir, _) = trained
    frame = pd.DataFrame(tables.read_csv(cfg.data_file("test_file"), "predict"))
    fixed, per_row = predict.Predictor.of(run_dir).cost(frame, sample=8)
    assert fixed > 0 and per_row > 0 and fixed > per_row * 8  # building + tracing a model outweighs one batch


# 8. Smaller: titles from slugs, the slug rule, kagglehub in the image, machine shapes, submit-before-done.
def test_two_bundles_under_two_slugs_do_not_collide(tmp_path):
    client = FakeApi()
    api.upload_dataset(_folder(tmp_path, "someone/quest-bundle", "a"), client)
    assert api.upload_dataset(_folder(tmp_path, "someone/quest-code", "c"), client) == ("created", 1)
    assert {d.title for d in client.server.datasets.values()} == {"Quest Bundle", "Quest Code"}


@pytest.mark.parametrize("handle", ["someone/quest--bundle", "someone/-quest-bundle", "someone/quest-bundle-",
                                    "someone/short"])
def test_slugs_that_do_not_survive_the_title_round_trip_are_refused(handle):
    with pytest.raises(ValueError, match="single hyphens"):
        bundle.validate_dataset_metadata(bundle.dataset_metadata(handle, "A Long Enough Title"))


def test_the_image_manifest_lists_kagglehub():
    assert "kagglehub" in wheels.read_image(config_lib.ROOT / "configs" / "kaggle-image-constraints.txt")


def test_the_kernel_sets_the_machine_shape(tmp_path, trained):
    cfg, _ = trained
    server = KaggleServer()
    server.add_dataset("someone/quest-bundle")
    k = _kernel_config(cfg, **{"kaggle.machine_shape": "NvidiaTeslaT4"})
    kernels.kernel(k, out=str(tmp_path / "k"), push=True, client=FakeApi(server))
    pushed = server.kernels["someone/quest-inference"].pushed
    assert json.loads((pushed / "sources.json").read_text())["machine_shape"] == "NvidiaTeslaT4"


def test_a_version_still_running_is_not_submitted(trained):
    cfg, _ = trained
    server = KaggleServer()
    server.add_kernel("someone/quest-inference", version=2, statuses=["running"])
    k = _kernel_config(cfg)
    with pytest.raises(api.KaggleApiError, match="version 2 is 'running'; submit it when it has finished"):
        kernels.submit(k, version=2, client=FakeApi(server))
    with pytest.raises(api.KaggleApiError, match=r"has no version 5 \(its latest is 2\)"):
        kernels.submit(k, version=5, client=FakeApi(server))
    assert "submit" not in [c[0] for c in server.calls]
    server.kernels["someone/quest-inference"].statuses = ["complete"]
    kernels.submit(k, version=2, client=FakeApi(server))
    assert server.calls[-1] == ("submit", "google-quest-challenge", "someone/quest-inference", 2, "submission.csv")


# The contract: every call the project makes binds to the installed client's signature.
def _client_calls() -> list[tuple[str, int, list[str], str]]:
    found = []
    for path in sorted((config_lib.ROOT / "pipeline" / "kaggle").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "client"):
                found.append((node.func.attr, len(node.args), [k.arg for k in node.keywords], path.name))
    return found


def test_every_api_call_binds_to_the_installed_client():
    calls = _client_calls()
    assert {c[0] for c in calls} >= {"dataset_status", "dataset_create_new", "dataset_create_version",
                                     "kernels_push", "kernels_status", "build_kaggle_client",
                                     "competition_submit_code", "competition_download_files"}
    for name, n_args, keywords, where in calls:
        method = getattr(KaggleApi, name, None)
        assert method is not None, f"{where}: KaggleApi has no {name}"
        inspect.signature(method).bind(None, *[None] * n_args, **dict.fromkeys(keywords))  # TypeError on a rename


def test_the_fake_refuses_as_kagglesdk_does():
    """The fake's failures are kagglesdk's: requests.HTTPError with Kaggle's message, the status on .response."""
    import requests

    with pytest.raises(requests.HTTPError) as err:
        FakeApi().dataset_status("someone/nothing-here")
    assert err.value.response.status_code == 404 and "Failed to resolve" in str(err.value)
    with pytest.raises(ValueError, match="Permission 'kernels.get' was denied"):  # the client's own translation
        FakeApi().kernels_status("someone/nothing-here")


def test_a_trailing_v_does_not_turn_the_login_check_off(tmp_path):
    """The client exempts command lines ending in -v ("version") from login; our -v means verbose. With no login,
    `run.py download -v` still stops with the login message (exit 2)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), HTTPS_PROXY="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, str(config_lib.ROOT / "run.py"), "download", "--set",
                           f"data.dir={tmp_path / 'comp'}", "-v"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no working Kaggle login found" in done.stderr and "Traceback" not in done.stderr


def test_a_revoked_token_beside_a_working_key_is_named(tmp_path, monkeypatch):
    """Kaggle refuses the token in ~/.kaggle/access_token (introspection: not active); the client falls back to
    the legacy key but would send the refused token on every call: the login stops and names the file."""
    from kagglesdk.kaggle_http_client import KaggleHttpClient
    from kagglesdk.security.types.oauth_service import IntrospectTokenResponse

    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "access_token").write_text("KGAT_revoked\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")  # the legacy key (kaggle.json's folder is fixed at import)
    monkeypatch.setenv("KAGGLE_KEY", "abc")

    def network(self, service, name, request, response_type):  # Kaggle's answer: the token is not active
        answer = IntrospectTokenResponse()
        answer.active = False
        return answer

    monkeypatch.setattr(KaggleHttpClient, "call", network)
    with pytest.raises(client_lib.KaggleUnavailable, match=r"does not accept the API token in ~/.kaggle/access_token "
                                                           r".*delete ~/.kaggle/access_token"):
        client_lib.get_client()
    (tmp_path / ".kaggle" / "access_token").unlink()
    assert client_lib.get_client().config_values["username"] == "someone"
