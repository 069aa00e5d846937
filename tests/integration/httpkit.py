"""What the tests of the HTTP endpoint share: a free port, plain requests
that return the status whatever it is, a deployment that listens, and a
run that goes one step at a time."""

from __future__ import annotations

import os
import re
import socket
import urllib.error
import urllib.request

from adetest import FAKE_ENGINE_COMMAND, give_to_service_user, wait_until, write_input

# A document name that would be an image were it not escaped.
HOSTILE_NAME = "<img src=x onerror=alert(1)>.csv"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(_NoRedirect)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, method: str = "GET", data: bytes | None = None,
        headers: dict | None = None) -> tuple[int, dict, str]:
    """The status, headers and body (as text) of a request; redirects are
    not followed."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=data, headers=headers or {})
    try:
        with OPENER.open(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def answering(port: int, path: str = "/health"):
    """The endpoint's answer once it listens, else None."""
    try:
        return get(port, path)
    except (ConnectionError, urllib.error.URLError):
        return None


def http_deploy(deploy, **settings):
    port = free_port()
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, backoff_base_seconds=1,
                 backoff_max_seconds=1, **{"http.listen": f"127.0.0.1:{port}"}, **settings)
    return dep, port


def paced_run(dep, steps: int = 3, name: str = "paced.csv") -> tuple[str, object]:
    """A run whose engine writes its event N once the file go.N exists."""
    go = dep.root / "go"
    run = dep.enqueue(write_input(dep.root / name, mode="paced", steps=steps, go=go))["run_id"]
    return run, go


def release(go, n: int) -> None:
    (go.parent / f"{go.name}.{n}").write_text("1")


def holding(port: int, run: str) -> bool:
    answer = answering(port, "/")
    return answer is not None and f'href="/runs/{run}"' in workers_of(answer[2])


def workers_of(page: str) -> str:
    match = re.search(r'<table id="workers">.*?</table>', page, re.S)
    return match.group(0) if match else ""


def write_token(path, text: str, mode: int = 0o600):
    path.write_text(text + "\n")
    os.chmod(path, mode)
    give_to_service_user(path)
    return path


def running_with_actions(deploy, tmp_path, token: str):
    """A deployment with the actions on for token, and a paced run of one
    step that its worker holds.  Returns (dep, port, run, go)."""
    token_file = write_token(tmp_path / "token", token)
    dep, port = http_deploy(deploy, **{"supervisor.workers": 1, "http.actions": "yes",
                                       "http.token_file": str(token_file)})
    run, go = paced_run(dep, steps=1)
    dep.start_worker()
    wait_until(lambda: holding(port, run), 60, "the paced run to be running")
    return dep, port, run, go
