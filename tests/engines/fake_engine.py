#!/usr/bin/env python3
"""A scriptable stand-in for the ADE engine, for ade-superd's integration tests.

ade-superd runs engines with a scrubbed environment, so this engine takes its
instructions from the document it is asked to process: the leading lines of
the --input file that look like ``key=value``.  ``mode`` picks what it does:

  success   a few engine events, an output file, a valid engine.run.completed
            (the payload of engine-events.sample.ndjson), exit 0
  exit1     an error line and a failed engine.run.completed, exit 1
  exit2     a usage error on stderr, exit 2 (what argparse does)
  hang      writes pidfile, starts a grandchild that ignores SIGTERM (its pid
            in pidfile + ".child"), then sleeps forever
  garbage   non-JSON lines, invalid UTF-8, a 10 MB line, JSON that is not an
            object, objects without a usable "event", then success
  flood     writes ``mb`` MB (default 200) of text to stdout, then success
  lines     writes ``count`` lines of one character each to stdout, then
            success
  stall     writes ``mb`` MB of lines to stdout, creates the file
            ``flooded``, waits until the file ``go`` exists, writes
            ``after`` (default ``mb``) MB more, then success
  slow      writes pidfile, sleeps ``seconds``, then success
  ledger    appends "<run dir name> <pid> start" and "... end" lines to the
            file ``ledger`` (O_APPEND), sleeping ``seconds`` in between, then
            success
  signal    kills itself with signal ``sig`` (default 9)
  flaky     counts its calls in the file ``counter``; the first ``fail``
            calls (default 1) write output/stale.xlsx and exit 1, later ones
            exit 0 with no output and no engine.run.completed

Other keys:

  ignore_term=1   (hang) the engine itself ignores SIGTERM too
  escape=PATH     (any mode) first leaves behind a process that escapes the
                  engine's process group and session the way a daemon does
                  (fork, setsid, fork again; its parent exits), sleeps an hour
                  with its output on /dev/null, and has its pid in PATH
  payload=        (success) ``sample`` by default; ``none``: no
                  engine.run.completed, output/other.bin written; ``bare``:
                  neither a completion nor an output file; ``dupes``:
                  a field and a column repeated; ``scope``: payload scope
                  "table"; ``outside``: the sample's output path (outside the
                  run directory) kept, output/normalized.xlsx written;
                  ``symlink:/some/file``: output/normalized.xlsx is a symbolic
                  link to that file and the reported path does not exist;
                  ``unfit``: values too long or too large for their columns
                  (see UNFIT below); ``bigint``: an integer beyond int64 in
                  the counts; ``many``: ``fields`` (default 1000) fields and
                  as many table columns, on one line of the size it takes;
                  ``cut``: the completion line ends in the middle
  fields=         (payload=many) how many fields (and columns)
  columns=        (payload=many) how many table columns, if not as many
  pad=            (payload=many) bytes of label per field, to make the
                  line large without many values
  argv_file=      the command line is written there as JSON
  env_file=       the environment, open descriptors, session and process
                  group are written there as JSON

Standard library only.  Also answers ``config validate``: exit 0, or what
``--validate=MODE`` before the command asks for (written into the
deployment's engine_command): exit1, exit127, signal9, look.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "engine-events.sample.ndjson"
RUN_ID = uuid.uuid4().hex
VALUE_OPTIONS = ("--input", "-i", "--output-dir", "--config-package", "--log-format",
                 "--log-level", "--input-sheet", "--output", "-o", "--logs-dir")
FLAG_OPTIONS = ("--active-sheet-only", "--debug", "--quiet")


def usage(message: str) -> None:
    sys.stderr.write("usage: fake_engine process file --input F --output-dir D "
                     "--config-package C\n")
    sys.stderr.write(f"fake_engine: error: {message}\n")
    sys.stderr.flush()
    sys.exit(2)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def emit(event: str, message: str, data=None, level: str = "info", **extra) -> None:
    record = {"event_id": uuid.uuid4().hex, "engine_run_id": RUN_ID, "timestamp": now(),
              "level": level, "event": event, "message": message}
    if data is not None:
        record["data"] = data
    record.update(extra)
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()


def validate(mode: str) -> None:
    """config validate: ok, exit1 (invalid package), exit127, signal9, or
    look (ok, after writing what its run directory holds to
    $TMPDIR/seen.json)."""
    if mode == "look":
        seen = sorted(os.listdir("."))
        Path(os.environ["TMPDIR"], "seen.json").write_text(json.dumps(seen))
    if mode == "exit1":
        print("Config package INVALID")
        sys.exit(1)
    if mode == "exit127":
        sys.exit(127)
    if mode == "signal9":
        os.kill(os.getpid(), signal.SIGKILL)
    print("Config package OK")
    sys.exit(0)


def parse_command(argv: list[str]) -> dict:
    mode = "ok"
    while argv and argv[0].startswith("--validate="):
        mode = argv.pop(0).split("=", 1)[1]
    if argv[:2] == ["config", "validate"]:
        validate(mode)
    if argv[:2] != ["process", "file"]:
        usage(f"unknown command {' '.join(argv[:2])!r}")
    opts: dict[str, list[str]] = {}
    i = 2
    while i < len(argv):
        arg = argv[i]
        if arg in VALUE_OPTIONS:
            if i + 1 >= len(argv):
                usage(f"{arg} needs a value")
            opts.setdefault(arg.lstrip("-"), []).append(argv[i + 1])
            i += 2
        elif arg in FLAG_OPTIONS:
            opts.setdefault(arg.lstrip("-"), []).append("")
            i += 1
        else:
            usage(f"unrecognized argument {arg!r}")
    for required in ("input", "output-dir", "config-package"):
        if required not in opts:
            usage(f"--{required} is required")
    return opts


def instructions(input_file: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    with open(input_file, "rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", "replace").strip()
            if "=" not in line or line.startswith("#"):
                break
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def sample_records() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def succeed(opts: dict, variant: str = "sample") -> None:
    """Emit the sample events, write an output file, exit 0."""
    input_file = Path(opts["input"][0])
    out_dir = Path(opts["output-dir"][0])
    out_dir.mkdir(parents=True, exist_ok=True)
    if variant == "bare":
        sys.exit(0)
    if variant == "none":
        output = out_dir / "other.bin"
    elif variant == "outside":
        output = out_dir / "normalized.xlsx"
        (out_dir / "another.xlsx").write_bytes(b"not this one\n")
    elif variant.startswith("symlink:"):
        # output/normalized.xlsx is a link to a file outside the run directory
        (out_dir / "normalized.xlsx").symlink_to(variant.split(":", 1)[1])
        output = Path("/nonexistent/elsewhere.xlsx")
    else:
        output = out_dir / f"{input_file.stem}_normalized.xlsx"
    if not variant.startswith("symlink:"):
        output.write_bytes(b"PK\x03\x04 not really a workbook\n")
    records = sample_records()
    for record in records[:-1]:
        record["engine_run_id"] = RUN_ID
        sys.stderr.write(json.dumps(record) + "\n")
    completed = records[-1]
    completed["engine_run_id"] = RUN_ID
    payload = completed["data"]
    if variant != "outside":
        payload["outputs"]["normalized"]["path"] = str(output)
    if variant == "dupes":
        extra = dict(payload["fields"][0], label="Second email", valid_cells=99)
        payload["fields"].append(extra)
        columns = payload["workbooks"][0]["sheets"][0]["tables"][0]["structure"]["columns"]
        columns.append(dict(columns[0], header={"raw": "Again", "normalized": "again"}))
    elif variant == "scope":
        payload["scope"] = "table"
    elif variant == "unfit":
        unfit(payload)
    elif variant == "many":
        many(payload, int(opts.get("fields", 1000)), int(opts.get("pad", 0)),
             int(opts["columns"]) if "columns" in opts else None)
    line = json.dumps(completed, separators=(",", ":"))
    if variant == "bigint":
        line = line.replace('"total":2,', '"total":123456789012345678901234567890,', 1)
    elif variant == "cut":
        line = line[:len(line) // 2]
    if variant != "none":
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
    sys.exit(0)


# Field names, labels and counts that do not fit the result columns:
# run_fields.field is VARCHAR(128), label VARCHAR(255), the counts are
# 32-bit integers.
UNFIT_FIELD = "f" + "\u00e9" * 150          # 151 characters, 301 bytes
UNFIT_LABEL = "L" * 300
UNFIT_SHEET = "S" * 254 + "\u20ac" * 2      # 256 characters, 260 bytes


def unfit(payload: dict) -> None:
    payload["counts"]["rows"]["total"] = 2 ** 40
    payload["counts"]["cells"]["total"] = 1e300
    payload["evaluation"]["outcome"] = "x" * 30
    first = payload["fields"][0]
    first.update(field=UNFIT_FIELD, label=UNFIT_LABEL, valid_cells=2 ** 31 + 5)
    first["occurrences"]["tables"] = 1e300
    # a second field whose name is the same once cut: kept out as a duplicate
    payload["fields"].append(dict(first, field=UNFIT_FIELD + "tail", label="second"))
    sheet = payload["workbooks"][0]["sheets"][0]
    sheet["locator"]["sheet"]["name"] = UNFIT_SHEET
    columns = sheet["tables"][0]["structure"]["columns"]
    columns[0]["mapping"]["method"] = "m" * 40
    columns[0]["non_empty_cells"] = -(2 ** 33)
    # a column index that no 32-bit column holds: the row is left out
    columns.append(dict(columns[1], index=2 ** 32))


def many(payload: dict, count: int, pad: int, columns: int | None = None) -> None:
    label = "p" * pad if pad else None
    payload["fields"] = [
        {"field": f"f{i}", "label": label, "detected": True, "derived": False,
         "valid_cells": i, "best_mapping_score": 1.0, "source_headers": [],
         "occurrences": {"tables": 1, "columns": 1}} for i in range(count)]
    table = payload["workbooks"][0]["sheets"][0]["tables"][0]
    template = table["structure"]["columns"][0]
    table["structure"]["columns"] = [dict(template, index=i)
                                     for i in range(count if columns is None else columns)]


def fail_exit1(opts: dict) -> None:
    sys.stderr.write("Traceback (most recent call last):\nRuntimeError: deliberate failure\n")
    payload = sample_records()[-1]["data"]
    payload["execution"] = {"status": "failed", "started_at": now(), "completed_at": now(),
                            "duration_ms": 1,
                            "failure": {"stage": "run", "code": "engine_error",
                                        "message": "deliberate failure"}}
    payload["outputs"] = None
    emit("engine.run.completed", "engine.run.completed", payload, level="error")
    sys.exit(1)


def write_pid(path: str | None, pid: int) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{pid}\n")
    os.replace(tmp, path)


def escape(path: str) -> None:
    """Leaves a detached sleeper behind, as a careless engine plugin would."""
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            write_pid(path, os.getpid())
            time.sleep(3600)
            os._exit(0)
        os._exit(0)
    os.waitpid(first, 0)
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def hang(todo: dict) -> None:
    if todo.get("ignore_term") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pidfile = todo.get("pidfile")
    child_pidfile = f"{pidfile}.child" if pidfile else None
    code = ("import os, signal, time, sys\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "p = sys.argv[1]\n"
            "if p:\n"
            "    open(p + '.tmp', 'w').write(str(os.getpid()))\n"
            "    os.replace(p + '.tmp', p)\n"
            "time.sleep(3600)\n")
    subprocess.Popen([sys.executable, "-c", code, child_pidfile or ""])
    deadline = time.monotonic() + 10
    while child_pidfile and not os.path.exists(child_pidfile) and time.monotonic() < deadline:
        time.sleep(0.01)
    write_pid(pidfile, os.getpid())
    emit("engine.log", "hanging now")
    while True:
        time.sleep(3600)


def garbage(opts: dict) -> None:
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    out.write(b"plain text on stdout\n")
    err.write(b"plain text on stderr\n")
    out.write(b"invalid utf-8: \xff\xfe\xc3\x28 \xed\xa0\x80 end\n")
    err.write(b"nul byte: a\x00b\n")
    err.write(b'{"event": "engine.bad", "message": "invalid utf-8 \xff in json"}\n')
    err.write(b"\r\n   \n\n")
    err.write(b"[1, 2, 3]\n")
    err.write(b'"just a string"\n')
    err.write(b"42\n")
    err.write(b"null\n")
    err.write(b'{"no_event_key": true}\n')
    err.write(b'{"event": 17, "message": "event is not a string"}\n')
    err.write(b'{"event": "engine.dup", "event": "engine.dup2"}\n')
    err.write(b'{"event": "engine.truncated", "message": "never closed"\n')
    err.write(b'{"event": "engine.log", "message": "bogus context", "context": "mine"}\n')
    err.write(b'{"event": "engine.nul", "message": "a\\u0000b"}\n')
    err.write(b'{"event": "engine.huge_number", "data": {"n": 1e400}}\n')
    depth = 100_000  # far deeper than any JSON parser should follow
    err.write(b'{"event": "engine.deep", "data": ' + b"[" * depth + b"]" * depth + b"}\n")
    err.flush()
    # a 10 MB line with no newline inside it
    chunk = b"x" * (1 << 20)
    for _ in range(10):
        out.write(chunk)
    out.write(b"\n")
    out.flush()
    out.write(b"\xe2\x82")  # a cut-off UTF-8 sequence at the very end of stdout
    out.flush()
    succeed(opts)


def flood(opts: dict, megabytes: int) -> None:
    line = b"flood " + b"y" * 1017 + b"\n"  # 1 KiB per line
    block = line * 1024
    out = sys.stdout.buffer
    for _ in range(megabytes):
        out.write(block)
    out.flush()
    succeed(opts)


def lines(opts: dict, count: int) -> None:
    out = sys.stdout.buffer
    block = b"x\n" * 65536
    while count > 0:
        n = min(count, 65536)
        out.write(block[:2 * n])
        count -= n
    out.flush()
    succeed(opts)


def stall(opts: dict, todo: dict) -> None:
    out = sys.stdout.buffer
    block = (b"stall " + b"z" * 1017 + b"\n") * 1024
    megabytes = int(todo.get("mb", "4"))
    for _ in range(megabytes):
        out.write(block)
    out.flush()
    Path(todo["flooded"]).write_text("1")
    while not os.path.exists(todo["go"]):
        time.sleep(0.02)
    for _ in range(int(todo.get("after", megabytes))):
        out.write(block)
    out.flush()
    succeed(opts)


def paced(opts: dict, todo: dict) -> None:
    """One event per step, each once the file go.N exists; then success.
    The messages carry markup and bytes that are not UTF-8, as an engine's
    may."""
    err = sys.stderr.buffer
    for step in range(1, int(todo.get("steps", "3")) + 1):
        while not os.path.exists(f"{todo['go']}.{step}"):
            time.sleep(0.02)
        record = {"event_id": uuid.uuid4().hex, "engine_run_id": RUN_ID, "timestamp": now(),
                  "level": "info", "event": "engine.step",
                  "message": f"step {step} <script>document.title='owned'</script> &amp; BYTES"}
        line = json.dumps(record).encode().replace(b"BYTES", b"\xff\xfe end")
        err.write(line + b"\n")
        err.flush()
    succeed(opts)


def ledger(opts: dict, path: str, seconds: float) -> None:
    run = Path(opts["input"][0]).parent.parent.name
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{run} {os.getpid()} start\n".encode())
        time.sleep(seconds)
        os.write(fd, f"{run} {os.getpid()} end\n".encode())
    finally:
        os.close(fd)
    succeed(opts)


def record_context(todo: dict) -> None:
    if todo.get("argv_file"):
        Path(todo["argv_file"]).write_text(json.dumps(sys.argv[1:]))
    if todo.get("env_file"):
        fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
        Path(todo["env_file"]).write_text(json.dumps(
            {"environ": dict(os.environ), "fds": fds, "cwd": os.getcwd(),
             "pgid": os.getpgid(0), "pid": os.getpid(), "sid": os.getsid(0)}))


def main(argv: list[str]) -> None:
    opts = parse_command(argv)
    input_file = Path(opts["input"][0])
    if not input_file.is_file():
        usage(f"file does not exist: {input_file}")
    todo = instructions(input_file)
    record_context(todo)
    if todo.get("escape"):
        escape(todo["escape"])
    mode = todo.get("mode", "success")
    emit("engine.run.started", "Run started", {"input_file": str(input_file), "mode": mode})
    if mode == "success":
        opts.update({k: todo[k] for k in ("fields", "pad", "columns") if k in todo})
        succeed(opts, todo.get("payload", "sample"))
    elif mode == "exit1":
        fail_exit1(opts)
    elif mode == "exit2":
        usage("argument --input: deliberate usage error")
    elif mode == "hang":
        hang(todo)
    elif mode == "garbage":
        garbage(opts)
    elif mode == "flood":
        flood(opts, int(todo.get("mb", "200")))
    elif mode == "lines":
        lines(opts, int(todo.get("count", "1000")))
    elif mode == "stall":
        stall(opts, todo)
    elif mode == "slow":
        write_pid(todo.get("pidfile"), os.getpid())
        time.sleep(float(todo.get("seconds", "5")))
        succeed(opts)
    elif mode == "paced":
        paced(opts, todo)
    elif mode == "ledger":
        ledger(opts, todo["ledger"], float(todo.get("seconds", "0.05")))
    elif mode == "flaky":
        counter = Path(todo["counter"])
        calls = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(calls))
        if calls <= int(todo.get("fail", "1")):
            out_dir = Path(opts["output-dir"][0])
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "stale.xlsx").write_bytes(b"from a failed attempt\n")
            fail_exit1(opts)
        succeed(opts, "bare")
    elif mode == "signal":
        os.kill(os.getpid(), int(todo.get("sig", "9")))
        time.sleep(10)
    else:
        usage(f"unknown mode {mode!r}")


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main(sys.argv[1:])
