"""The dashboard of the HTTP endpoint, read as a program reads it: its pages,
the event streams that follow a run's log, and the actions that only the
token opens.  test_dashboard_browser.py looks at the same pages in a real
browser."""

from __future__ import annotations

import http.client
import re

import pytest

from adetest import wait_until, write_input
from httpkit import (
    HOSTILE_NAME, answering, get, holding, http_deploy, paced_run, release, running_with_actions,
    write_token,
)



def page_has(port: int, path: str, text: str) -> bool:
    answer = answering(port, path)
    return answer is not None and answer[0] == 200 and text in answer[2]


class EventStream:
    """A client of a text/event-stream: the events as (id, type, data)."""

    def __init__(self, port: int, path: str, last_id: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.conn.request("GET", path, headers=headers)
        self.answer = self.conn.getresponse()

    def next(self) -> tuple[str | None, str, str] | None:
        """The next event, or None at the end of the stream."""
        event_id, kind, data = None, "message", []
        while True:
            line = self.answer.readline()
            if not line:
                return None
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if data or kind != "message":
                    return event_id, kind, "\n".join(data)
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field == "id":
                event_id = value
            elif field == "event":
                kind = value
            elif field == "data":
                data.append(value)

    def until(self, text: str) -> list:
        """Events up to the first whose data holds text (that one too)."""
        seen = []
        while (event := self.next()) is not None:
            seen.append(event)
            if text in event[2]:
                return seen
        raise AssertionError(f"the stream ended before {text!r}: {seen}")

    def close(self) -> None:
        self.conn.close()


def test_pages_show_the_work_and_keep_hostile_strings_as_text(deploy, tmp_path):
    dep, port = http_deploy(deploy, **{"supervisor.workers": 1})
    hostile = dep.enqueue(write_input(tmp_path / HOSTILE_NAME))["run_id"]
    run, go = paced_run(dep, steps=2)
    dep.start_worker()
    assert dep.wait_run(hostile)["status"] == "succeeded"
    wait_until(lambda: holding(port, run), 60, "the worker table to show the paced run")

    code, headers, page = get(port, "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in page
    assert "<img" not in page
    assert f'href="/runs/{hostile}"' in page
    assert re.search(r'<table id="queue">', page)
    envs = dep.rows("SELECT id FROM environments")
    assert envs and all(f'href="/envs/{e["id"]}"' in page for e in envs)

    # The engine's words arrive on the run's page as text, bytes that are
    # not UTF-8 repaired (get() decodes the page strictly).
    release(go, 1)
    wait_until(lambda: page_has(port, f"/runs/{run}", "step 1"), 60, "step 1 on the run's page")
    code, _, page = get(port, f"/runs/{run}")
    assert code == 200
    assert "step 1 &lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt; &amp;amp;" in page
    assert "<script>document" not in page
    assert f'data-stream="/runs/{run}/events?from=' in page
    release(go, 2)
    assert dep.wait_run(run)["status"] == "succeeded"

    code, _, page = get(port, "/?status=succeeded")
    assert code == 200 and f'href="/runs/{run}"' in page and f'href="/runs/{hostile}"' in page
    code, _, page = get(port, "/?status=failed")
    assert code == 200 and f'href="/runs/{run}"' not in page
    assert get(port, "/?status=<b>")[0] == 400
    assert get(port, "/runs/00000000-0000-0000-0000-000000000000")[0] == 404
    assert get(port, "/runs/not-an-id%3Cscript%3E")[0] == 404

    env = envs[0]["id"]
    code, _, page = get(port, f"/envs/{env}")
    assert code == 200 and "environment.complete" in page  # its build log
    assert 'method="post"' not in page  # no actions unless enabled


@pytest.mark.sqlite_only("the stream reads a log file; the backend only says when the run ends")
def test_event_stream_follows_the_log_and_resumes_where_it_stopped(deploy):
    dep, port = http_deploy(deploy, **{"supervisor.workers": 1})
    run, go = paced_run(dep, steps=3)
    dep.start_worker()
    wait_until(lambda: holding(port, run), 60, "the paced run to be running")

    stream = EventStream(port, f"/runs/{run}/events")
    assert stream.answer.status == 200
    assert stream.answer.getheader("Content-Type") == "text/event-stream"
    release(go, 1)
    first = stream.until("step 1")
    ids = [e[0] for e in first]
    assert all(ids) and len(set(ids)) == len(ids)
    stream.close()

    # Two steps happen while nobody listens; a client that comes back with
    # the last id it saw gets exactly what it missed, then the end.
    release(go, 2)
    release(go, 3)
    assert dep.wait_run(run)["status"] == "succeeded"
    stream = EventStream(port, f"/runs/{run}/events", last_id=ids[-1])
    rest = []
    while (event := stream.next()) is not None:
        rest.append(event)
    stream.close()
    datas = [e[2] for e in rest]
    assert rest[-1][1] == "end"
    assert not any("step 1" in d for d in datas)
    step2 = next(i for i, d in enumerate(datas) if "step 2" in d)
    step3 = next(i for i, d in enumerate(datas) if "step 3" in d)
    assert step2 < step3
    offsets = [int(e[0].split("-")[1]) for e in rest if e[0]]
    assert offsets == sorted(offsets) and offsets[0] > int(ids[-1].split("-")[1])

    # An id of another file (the log was replaced) starts over after "reset".
    stream = EventStream(port, f"/runs/{run}/events", last_id="1-999999")
    event = stream.next()
    assert event[1] == "reset"
    assert "step 1" in stream.until("step 1")[-1][2]
    stream.close()


@pytest.mark.sqlite_only("the actions are ade-ctl's own statements, tested on every backend")
def test_actions_need_the_token_and_a_request_from_the_same_site(deploy, tmp_path):
    token = "s3cret-token-of-the-tests"
    dep, port, run, go = running_with_actions(deploy, tmp_path, token)

    code, _, page = get(port, f"/runs/{run}")
    assert f'action="/runs/{run}/cancel"' in page
    assert token not in page

    def post(path, body=b"", **headers):
        return get(port, path, method="POST", data=body,
                   headers={"Content-Type": "application/x-www-form-urlencoded", **headers})

    cancel = f"/runs/{run}/cancel"
    assert post(cancel)[0] == 403
    assert post(cancel, b"token=wrong-token-of-the-tests")[0] == 403
    assert post(cancel, b"token=" + token[:-1].encode())[0] == 403
    assert post(cancel, f"token={token}".encode(), Origin="http://evil.example")[0] == 403
    assert post(cancel, f"token={token}".encode(), **{"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert get(port, cancel)[0] == 404  # no action by GET
    assert dep.rows("SELECT status FROM runs WHERE id = ?", run)[0]["status"] == "running"

    code, headers, _ = post(cancel, f"token={token}".encode(),
                            Origin=f"http://127.0.0.1:{port}", **{"Sec-Fetch-Site": "same-origin"})
    assert code == 303 and headers["Location"] == f"/runs/{run}"
    assert dep.wait_run(run, statuses=("cancelled",))["status"] == "cancelled"
    assert post(cancel, **{"X-Ade-Token": token})[0] == 409  # nothing left to cancel

    # The cancelled run comes back; its engine waits for go.1 again.
    code, headers, _ = post(f"/runs/{run}/requeue", **{"X-Ade-Token": token})
    assert code == 303
    row = dep.rows("SELECT status, completed_at FROM runs WHERE id = ?", run)[0]
    assert row["status"] in ("queued", "running") and row["completed_at"] is None
    assert post(f"/runs/{run}/requeue", **{"X-Ade-Token": token})[0] == 409
    release(go, 1)
    assert dep.wait_run(run)["status"] == "succeeded"
    log = dep.worker_logs(tail=100000)
    assert token not in log
    assert "refused: wrong or missing token" in log


@pytest.mark.sqlite_only("about reading the token file, not the database")
def test_a_token_file_others_can_read_leaves_the_actions_off(deploy, tmp_path):
    token_file = write_token(tmp_path / "token", "readable-by-everyone-token", 0o644)
    dep, port = http_deploy(deploy, **{"http.actions": "yes", "http.token_file": str(token_file)})
    run = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    dep.start_worker()
    assert dep.wait_run(run)["status"] == "succeeded"
    wait_until(lambda: answering(port, "/") is not None, 30, "the endpoint")
    code, _, page = get(port, f"/runs/{run}")
    assert code == 200 and 'method="post"' not in page
    code, _, page = get(port, f"/runs/{run}/requeue", method="POST",
                        headers={"X-Ade-Token": "readable-by-everyone-token"})
    assert code == 403 and "Actions are off" in page
    assert "can be read by others" in dep.worker_logs(tail=100000)


@pytest.mark.sqlite_only("SQLite alone stores text that is not UTF-8 as it was given")
def test_a_row_that_is_not_utf8_renders_as_repaired_text(deploy, tmp_path):
    dep, port = http_deploy(deploy)
    run = dep.enqueue(write_input(tmp_path / "a.csv"), max_attempts=1)["run_id"]
    db = dep.db()
    db.execute("UPDATE runs SET status = 'failed', error_message ="
               " CAST(X'3c623eff3c2f623e20e282' AS TEXT) WHERE id = ?", (run,))
    dep.start_worker()
    wait_until(lambda: answering(port, "/") is not None, 30, "the endpoint")
    for path in ("/?status=failed", f"/runs/{run}"):
        code, _, page = get(port, path)  # decoded strictly: valid UTF-8
        assert code == 200 and "&lt;b&gt;\ufffd&lt;/b&gt; \ufffd" in page, page
        assert "<b>" not in page
