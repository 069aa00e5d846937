"""The ledger engine of the concurrency tests.

The engine here is a small shell script (ledger_engine) so that thousands of
runs stay quick: the engine process itself appends "<run> <pid> start <t>"
and "<run> <pid> end <t>" to a ledger file (O_APPEND, one write per line,
so the file's line order is the order in which the lines were written; t is
/proc/uptime) and prints the sample engine.run.completed record.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from adetest import SAMPLE_EVENTS

LEDGER_ENGINE = """#!/bin/sh
# ade-superd test engine: writes its own ledger lines, then reports success.
ledger='{ledger}'
completed='{completed}'
seconds='{seconds}'
input=
while [ $# -gt 0 ]; do
	case $1 in
	--input) input=$2; shift 2 ;;
	*) shift ;;
	esac
done
run=${{input%/*}}; run=${{run%/*}}; run=${{run##*/}}
read up idle < /proc/uptime
echo "$run $$ start $up" >> "$ledger"
[ "$seconds" = 0 ] || sleep "$seconds"
cat "$completed" >&2
read up idle < /proc/uptime
echo "$run $$ end $up" >> "$ledger"
"""


def ledger_engine(tmp_path: Path, seconds: float = 0) -> tuple[str, Path]:
    """(engine_command, ledger path) of a shell engine that keeps a ledger."""
    ledger = tmp_path / "ledger.txt"
    completed = tmp_path / "completed.ndjson"
    lines = [line for line in SAMPLE_EVENTS.read_text().splitlines() if line.strip()]
    completed.write_text(lines[-1] + "\n")  # the sample engine.run.completed
    script = tmp_path / "ledger-engine.sh"
    script.write_text(LEDGER_ENGINE.format(ledger=ledger, completed=completed,
                                           seconds=seconds))
    return f"/bin/sh {script}", ledger


def read_ledger(ledger: Path) -> dict[str, list[tuple[int, str, str, float]]]:
    """{run id: [(line number, "start"/"end", engine pid, uptime), ...]} in file order."""
    entries = defaultdict(list)
    if not ledger.exists():
        return entries
    for number, line in enumerate(ledger.read_text().splitlines()):
        run, pid, what, uptime = line.split()
        entries[run].append((number, what, pid, float(uptime)))
    return entries


def executions(entries: list[tuple[int, str, str, float]]) -> list[tuple[int, int, str]]:
    """The (start line, end line, pid) intervals of one run's executions.  Fails
    when an execution started before the previous one ended (they overlapped)
    or never ended."""
    intervals, open_ = [], None
    for number, what, pid, _ in entries:
        if what == "start":
            assert open_ is None, f"an execution started while another ran: {entries}"
            open_ = (number, pid)
        else:
            assert open_ is not None and open_[1] == pid, f"an end without its start: {entries}"
            intervals.append((open_[0], number, pid))
            open_ = None
    assert open_ is None, f"an execution never ended: {entries}"
    return intervals


def max_concurrent(entries: dict) -> int:
    """The most engines between their start and end lines at any point of the ledger."""
    events = sorted((n, +1 if what == "start" else -1)
                    for runs in entries.values() for n, what, _, _ in runs)
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def jobs_done(log_text: str) -> list[int]:
    """Jobs done by each worker of one supervisor, from its log."""
    done = [int(n) for n in re.findall(r"stopping after (\d+) jobs?", log_text)]
    assert done, log_text[-2000:]
    return done
