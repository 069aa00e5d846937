"""Event records written by the engine.

Every record is sent to one or more sinks (stderr, optionally a file under
``--logs-dir``).  A sink either prints one compact JSON object per line
(``ndjson``) or a human readable line (``text``), and drops records below
its level, the same way a ``logging`` handler would.
"""

from __future__ import annotations

import json
import sys
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
LOG_FORMATS = ("ndjson", "text")


def utc_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with millisecond precision and a ``Z`` suffix."""
    moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def qualify(event: str) -> str:
    """Put an event name into the ``engine`` namespace."""
    return event if event.startswith("engine.") else "engine." + event


def error_info(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "stack_trace": "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)
        ),
    }


class Sink:
    def __init__(self, stream: TextIO, level: str, fmt: str, owned: bool = False):
        self.stream = stream
        self.threshold = LEVELS[level]
        self.fmt = fmt
        self.owned = owned

    def write(self, record: dict[str, Any]) -> None:
        if LEVELS[record["level"]] < self.threshold:
            return
        if self.fmt == "ndjson":
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
        else:
            line = self._text(record)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            # A closed pipe must not turn into a traceback of its own.
            pass

    @staticmethod
    def _text(record: dict[str, Any]) -> str:
        parts = [record["timestamp"], f"{record['level'].upper():<8}"]
        if record["event"] != "engine.log":
            parts.append(f"[{record['event']}]")
        parts.append(record["message"])
        line = " ".join(parts)
        if "data" in record:
            line += " " + json.dumps(record["data"], separators=(",", ":"), default=str)
        if "error" in record:
            line += "\n" + record["error"]["stack_trace"].rstrip("\n")
        return line

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class EventLogger:
    """Builds records with a per-run id and hands them to the sinks."""

    def __init__(self, sinks: list[Sink] | None = None, run_id: str | None = None):
        self.sinks = list(sinks or [])
        self.run_id = run_id or uuid.uuid4().hex

    @classmethod
    def to_stderr(cls, level: str = "info", fmt: str = "text") -> "EventLogger":
        return cls([Sink(sys.stderr, level, fmt)])

    def add_file(self, path, level: str, fmt: str) -> None:
        # Like the real engine, the file never filters more than INFO does.
        if LEVELS[level] > LEVELS["info"]:
            level = "info"
        handle = open(path, "a", encoding="utf-8")
        self.sinks.append(Sink(handle, level, fmt, owned=True))

    def enabled(self, level: str) -> bool:
        return any(LEVELS[level] >= s.threshold for s in self.sinks)

    def emit(
        self,
        level: str,
        event: str,
        message: str | None = None,
        data: dict[str, Any] | None = None,
        exc: BaseException | None = None,
    ) -> None:
        name = qualify(event)
        record: dict[str, Any] = {
            "event_id": uuid.uuid4().hex,
            "engine_run_id": self.run_id,
            "timestamp": utc_timestamp(),
            "level": level,
            "event": name,
            "message": message if message is not None else name,
        }
        if data:
            record["data"] = data
        if exc is not None:
            record["error"] = error_info(exc)
        for sink in self.sinks:
            sink.write(record)

    # Plain log lines become ``engine.log`` records.
    def log(self, level: str, message: str, exc: BaseException | None = None, **data: Any) -> None:
        self.emit(level, "engine.log", message, data or None, exc)

    def debug(self, message: str, **data: Any) -> None:
        self.log("debug", message, **data)

    def info(self, message: str, **data: Any) -> None:
        self.log("info", message, **data)

    def warning(self, message: str, **data: Any) -> None:
        self.log("warning", message, **data)

    def error(self, message: str, exc: BaseException | None = None, **data: Any) -> None:
        self.log("error", message, exc, **data)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class ConfigLogger:
    """The logger handed to config code (hooks).

    Plain messages become ``engine.log`` records; ``event`` produces a free
    form ``engine.config.<name>`` record, which is the only namespace a
    config package may use.
    """

    def __init__(self, logger: EventLogger):
        self._logger = logger

    def debug(self, message: str, **data: Any) -> None:
        self._logger.log("debug", message, **data)

    def info(self, message: str, **data: Any) -> None:
        self._logger.log("info", message, **data)

    def warning(self, message: str, **data: Any) -> None:
        self._logger.log("warning", message, **data)

    def error(self, message: str, **data: Any) -> None:
        self._logger.log("error", message, **data)

    def event(self, name: str, message: str | None = None, level: str = "info", **data: Any) -> None:
        if name.startswith("engine."):
            name = name[len("engine."):]
        if not name.startswith("config."):
            name = "config." + name
        self._logger.emit(level, name, message, data or None)
