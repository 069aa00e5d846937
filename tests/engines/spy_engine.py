#!/usr/bin/env python3
"""An engine that spies, for the tests of engine confinement.

It takes its targets from the leading ``key=value`` lines of its input file:

  read=PATH       open PATH and read a byte
  write=PATH      create (or append to) PATH
  list=PATH       list the directory PATH
  proc=NAME       open /proc/<its parent, the worker>/NAME and read a byte
  signal=parent   send SIGURG (ignored by default) to its parent, the worker

Every attempt is recorded in <output dir>/spy.json as {"what": ..., "target":
..., "ok": bool, "error": str}.  Then it does an engine's normal job (as
fake_engine.py's success), so the run succeeds whatever the spy found.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_engine  # noqa: E402


def attempt(what: str, target: str) -> dict:
    record = {"what": what, "target": target, "ok": False, "error": ""}
    try:
        if what == "read":
            with open(target, "rb") as f:
                f.read(1)
        elif what == "write":
            with open(target, "ab") as f:
                f.write(b"spy\n")
        elif what == "list":
            os.listdir(target)
        elif what == "proc":
            with open(f"/proc/{os.getppid()}/{target}", "rb") as f:
                f.read(1)
        elif what == "signal":
            os.kill(os.getppid(), signal.SIGURG)
        else:
            raise ValueError(f"unknown attempt {what}")
        record["ok"] = True
    except (OSError, ValueError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    return record


def main(argv: list[str]) -> None:
    opts = fake_engine.parse_command(argv)
    todo = []
    with open(opts["input"][0], encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, value = line.rstrip("\n").partition("=")
            if not sep or key not in ("read", "write", "list", "proc", "signal"):
                break
            todo.append((key, value))
    records = [attempt(what, target) for what, target in todo]
    out = Path(opts["output-dir"][0])
    (out / "spy.json").write_text(json.dumps(records, indent=1))
    fake_engine.succeed(opts)


if __name__ == "__main__":
    main(sys.argv[1:])
