"""The Kaggle client: logging in as the client itself does, and every failure of a call as a pipeline error.

kaggle 2.x (kagglesdk) raises `requests.HTTPError(<Kaggle's message>)` for any answer >= 400 (the status is on
`err.response`, not in the text), turns 401/403 into ValueError in some calls (kernels_status, kernels_output),
and `import kaggle` logs in at import time and calls exit(1) when no login works. `answering` turns all of
these into KaggleApiError / KaggleUnavailable carrying Kaggle's own message and the next step, so a user
never sees a traceback or a silent exit for a refused call.
"""
from __future__ import annotations

import contextlib
import io
import sys

from pipeline.core.errors import PipelineError

LOGIN_HELP = (
    "Log in the way the kaggle client reads logins (kaggle.com > Settings > API): an API token in "
    "~/.kaggle/access_token or the KAGGLE_API_TOKEN variable, `kaggle auth login` (OAuth), or a legacy key in "
    "~/.kaggle/kaggle.json or KAGGLE_USERNAME + KAGGLE_KEY (KAGGLE_CONFIG_DIR moves kaggle.json's folder)")
# The next step for an answer's HTTP status, when the call gives no better one.
NEXT_STEP = {
    401: "Kaggle refused the login: make a new API token at https://www.kaggle.com/settings and log in again",
    403: "permission denied: check that the handle (owner/slug) is right and yours",
    404: "not found: check the handle (owner/slug), or wait a minute if you created it just now",
    409: "it already exists under another handle or title",
    429: "too many requests or a daily limit reached: wait and try again later",
}
SERVER_STEP = "Kaggle's service failed on its side: try again in a few minutes (kaggle.com/status shows outages)"


class KaggleUnavailable(PipelineError, RuntimeError):
    """No working login or no network: says exactly what to do instead."""


class KaggleApiError(PipelineError, RuntimeError):
    """Kaggle answered, but with a failure; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def api_class():
    """kaggle's KaggleApi class, without dying: importing it runs kaggle/__init__.py, which logs in at import and
    calls exit(1) when that fails; the class's own module has loaded by then."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise KaggleUnavailable(f"the kaggle package is not installed ({err}): pip install -r requirements.txt") from None
    except (SystemExit, Exception):  # the login at import failed (exit(1), or a KeyError on a kaggle.json it
        if "kaggle.api.kaggle_api_extended" not in sys.modules:  # cannot read); get_client logs in again
            raise
        KaggleApi = sys.modules["kaggle.api.kaggle_api_extended"].KaggleApi
    return KaggleApi


def get_client():
    """A logged-in KaggleApi. The client finds the login (every way it supports, in its own order); we only
    report clearly when none works."""
    KaggleApi = api_class()
    api = KaggleApi()
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            api.authenticate()
    except SystemExit:
        raise KaggleUnavailable(f"no working Kaggle login found. {LOGIN_HELP}") from None
    except KeyError as err:  # the client reads kaggle.json's "username" and "key" unchecked
        raise KaggleUnavailable(f"no working Kaggle login found: ~/.kaggle/kaggle.json has no {err} (it holds a "
                                f"legacy username and key; a new-style token goes in ~/.kaggle/access_token). "
                                f"{LOGIN_HELP}") from None
    except Exception as err:  # checking a token needs the network
        raise KaggleUnavailable(f"logging in to Kaggle failed ({type(err).__name__}: {err}). {LOGIN_HELP}") from None
    check_login(api)
    return api


def check_login(api):
    """What authenticate() left, checked whatever sys.argv says: the client lets a command line ending in -v or
    -h (taken for "version"/"help") go on logged out, and our -v means verbose. A login is a token, or a user
    name with a key. A token the client found but Kaggle refused (expired, revoked) is still sent on every call
    beside a working kaggle.json key: named, with the fix."""
    values = api.config_values
    token, user, key = (values.get(n) for n in (api.CONFIG_NAME_TOKEN, api.CONFIG_NAME_USER, api.CONFIG_NAME_KEY))
    if not (token or (user and key)):
        raise KaggleUnavailable(f"no working Kaggle login found. {LOGIN_HELP}")
    if not token:
        from kagglesdk import get_access_token_from_env

        refused, source = get_access_token_from_env()
        if refused:
            where = "~/.kaggle/access_token" if source == "access_token" else source
            raise KaggleUnavailable(f"Kaggle does not accept the API token in {where} (expired or revoked), and the "
                                    "client sends it on every call instead of your legacy key: delete "
                                    f"{where} (or unset the variable), or save a new token from "
                                    "https://www.kaggle.com/settings there")


def status_of(err: BaseException) -> int | None:
    return getattr(getattr(err, "response", None), "status_code", None)


@contextlib.contextmanager
def answering(what: str, next_step: dict[int, str] | str | None = None):
    """Run one API call; any failure becomes KaggleApiError("<what>: Kaggle answered <status>: <message>. <next
    step>"), or KaggleUnavailable when Kaggle could not be reached. next_step: text, or texts by HTTP status."""
    import requests

    try:
        yield
    except PipelineError:
        raise
    except (requests.ConnectionError, requests.Timeout) as err:
        raise KaggleUnavailable(f"{what}: Kaggle could not be reached ({type(err).__name__}: {err}); check the "
                                "network and try again") from None
    except requests.HTTPError as err:
        raise _refused(what, err, next_step) from None
    except Exception as err:  # the client's own refusals and anything else
        if isinstance(err.__context__, requests.HTTPError):  # kernels_status / kernels_output turn a 401 or 403
            raise _refused(what, err.__context__, next_step) from None  # into a ValueError about another API
        hint = next_step if isinstance(next_step, str) else ""
        raise KaggleApiError(f"{what} failed ({type(err).__name__}: {err})" + (f". {hint}" if hint else "")) from None


def _refused(what: str, err, next_step) -> KaggleApiError:
    """Kaggle's answer (its status and its own message) and the next step: the call's own for that status, else
    the general one (NEXT_STEP, 5xx: Kaggle's side)."""
    code = status_of(err)
    text = str(err).rstrip(". ")
    steps = next_step if isinstance(next_step, dict) else {}
    general = code in NEXT_STEP or (code or 0) >= 500  # a login, permission or server failure: not the call's
    hint = steps.get(code) or (next_step if isinstance(next_step, str) and not general else None)
    if callable(hint):
        hint = hint(text)
    hint = hint or NEXT_STEP.get(code) or (SERVER_STEP if code and code >= 500 else "")
    return KaggleApiError(f"{what}: Kaggle answered {code}: {text}" + (f". {hint}" if hint else ""), code)
