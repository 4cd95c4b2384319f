"""The worker's logging: one format for keywatch's, faust's and aiokafka's lines, and no floods.

Two formats (`KEYWATCH_LOG_FORMAT`): `text` (the default), and `json`, one JSON object per line for a SIEM,
with `time` (RFC 3339 UTC, milliseconds), `level`, `logger`, `message` and, for an exception, `exc_info`.

A broker outage makes aiokafka and faust log the same warning or error many times a second (thousands of lines per
worker per outage), which buries the one line that says what happened. `RepeatFilter` lets the first of a kind
through, holds back the repeats for an interval, and then says how many there were.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]
REPEAT_INTERVAL_S = 60.0
_MAX_KINDS = 1024  # kinds of line remembered at once: bounded, whatever floods the log
# `extra=UNFOLDED` on a log call: never held back (summaries, and progress lines of keywatch's own backoff loops,
# which repeat slowly by design and say something new each time).
UNFOLDED = {"keywatch_unfolded": True}


@dataclass(slots=True)
class _Window:
    since: float
    held: int
    record: logging.LogRecord


def _kind(record: logging.LogRecord) -> tuple[str, int, str, str]:
    """What makes two lines "the same": logger, level, message template and exception type (not the arguments:
    the node id, offset or attempt number of a repeated failure change, the failure does not)."""
    exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
    return record.name, record.levelno, str(record.msg), exc


class RepeatFilter(logging.Filter):
    """Warnings and errors: the first of each kind passes, then at most one per `interval_s`, with a count of the
    ones held back since; `summaries()` reports the counts of kinds that went quiet."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._windows: OrderedDict[tuple[str, int, str, str], _Window] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` is written (a record let through after repeats says how many were held back)."""
        if record.levelno < logging.WARNING or getattr(record, "keywatch_unfolded", False):
            return True
        kind = _kind(record)
        now = self._clock()
        window = self._windows.get(kind)
        if window is not None and now - window.since < self.interval_s:
            window.held += 1
            window.record = record
            return False
        if window is not None and window.held:
            record.msg = f"{record.msg} [{window.held} more like this in the last {now - window.since:.0f}s]"
        self._windows[kind] = _Window(now, 0, record)
        self._windows.move_to_end(kind)
        while len(self._windows) > _MAX_KINDS:
            self._windows.popitem(last=False)
        return True

    def summaries(self) -> list[tuple[logging.LogRecord, int]]:
        """The kinds whose interval has passed with repeats held back: (the last repeat, how many), each once."""
        now = self._clock()
        out: list[tuple[logging.LogRecord, int]] = []
        for kind, window in list(self._windows.items()):
            if now - window.since >= self.interval_s:
                if window.held:
                    out.append((window.record, window.held))
                del self._windows[kind]
        return out


_FILTER = RepeatFilter()


def repeat_filter(**_: Any) -> RepeatFilter:
    """The process's one RepeatFilter (a factory for `logging.config.dictConfig`, which faust's worker uses)."""
    return _FILTER


def report_repeats(flt: RepeatFilter | None = None) -> int:
    """Log one line for each kind of warning or error that repeated and went quiet; the number of such lines."""
    flt = flt or _FILTER
    held = flt.summaries()
    for record, count in held:
        logging.getLogger(record.name).log(
            record.levelno,
            "%d more like this in the last %.0fs, the last: %s",
            count,
            flt.interval_s,
            record.getMessage(),
            extra=UNFOLDED,
        )
    return len(held)


class JsonLines(JsonFormatter):
    """One JSON object per record: time (RFC 3339 UTC with milliseconds), level, logger, message, exc_info."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*_RESERVED, "keywatch_unfolded", "color_message"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time as RFC 3339 UTC with milliseconds."""
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# the standard LogRecord attributes: everything else on a record is an `extra` field, kept in the JSON object
_RESERVED = [*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime"]


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of one log format."""
    return JsonLines() if fmt == "json" else logging.Formatter(FORMAT)


def json_formatter() -> logging.Formatter:
    """The JSON formatter (a factory for `logging.config.dictConfig`)."""
    return JsonLines()


def setup(level: str, fmt: LogFormat = "text") -> None:
    """Configure the root logger before faust starts: keywatch's format, the repeat filter."""
    logging.basicConfig(level=level, format=FORMAT, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(fmt))
        handler.addFilter(_FILTER)


def faust_logging_config(level: str, fmt: LogFormat = "text") -> dict[str, Any]:
    """The `logging_config` handed to faust's worker (which replaces the root handlers when it starts): the same
    format and the same repeat filter as before it started, so every line of the process looks alike."""
    chosen: dict[str, Any] = {"()": "keywatch.logs.json_formatter"} if fmt == "json" else {"format": FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"repeats": {"()": "keywatch.logs.repeat_filter"}},
        "formatters": {"plain": chosen},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "plain",
                "filters": ["repeats"],
                "level": level,
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }
