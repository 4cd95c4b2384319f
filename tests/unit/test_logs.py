"""The worker's log filter: repeated warnings and errors are folded into one line per interval with a count."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keywatch import logs
from keywatch.logs import RepeatFilter, faust_logging_config, report_repeats


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A fresh hand-moved clock."""
    return Clock()


Logged = tuple[logging.Logger, io.StringIO, RepeatFilter]


@pytest.fixture
def logged(clock: Clock) -> Iterator[Logged]:
    """A logger writing through a RepeatFilter (60 s) into a buffer."""
    flt = RepeatFilter(60.0, clock=clock)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(flt)
    logger = logging.getLogger("kwtest.repeats")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, out, flt
    logger.handlers.clear()
    logger.propagate = True


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_flood_of_one_error_is_one_line_then_one_per_interval_with_a_count(logged: Logged, clock: Clock) -> None:
    """5,000 identical errors in a minute write one line; the first after the interval says how many were held."""
    logger, out, _ = logged
    for i in range(5000):
        logger.error("Unable connect to node with id %d: %s", i % 3, "Connect call failed")
    assert _lines(out) == ["ERROR kwtest.repeats: Unable connect to node with id 0: Connect call failed"]
    clock.now += 61
    logger.error("Unable connect to node with id %d: %s", 1, "Connect call failed")
    assert _lines(out)[-1] == (
        "ERROR kwtest.repeats: Unable connect to node with id 1: Connect call failed"
        " [4999 more like this in the last 61s]"
    )


def test_different_kinds_and_info_lines_are_never_held_back(logged: Logged) -> None:
    """Other templates, other levels and other loggers each pass; INFO and DEBUG lines always pass."""
    logger, out, _ = logged
    logger.warning("broker %s down", "a")
    logger.error("broker %s down", "a")
    logger.warning("changelog %s not acknowledged", "x")
    for _ in range(3):
        logger.info("dead letter %s", "y")
        logger.debug("detail")
    assert len(_lines(out)) == 3 + 6


def test_a_kind_that_went_quiet_is_summarised_once(logged: Logged, clock: Clock) -> None:
    """After the interval, report_repeats writes one line with the count and the last repeat, then nothing more."""
    logger, out, flt = logged
    for i in range(10):
        logger.warning("fetch failed at offset %d", i)
    assert report_repeats(flt) == 0  # the interval has not passed yet
    clock.now += 60
    assert report_repeats(flt) == 1
    assert _lines(out)[-1] == (
        "WARNING kwtest.repeats: 9 more like this in the last 60s, the last: fetch failed at offset 9"
    )
    clock.now += 600
    assert report_repeats(flt) == 0
    logger.warning("fetch failed at offset %d", 11)  # a new run starts with its first line
    assert _lines(out)[-1] == "WARNING kwtest.repeats: fetch failed at offset 11"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(["a %s", "b %s", "c"]), st.integers(0, 9)), max_size=60)
)
def test_every_line_is_written_or_counted(events: list[tuple[int, str, int]]) -> None:
    """Whatever the timing: lines written plus repeats reported equal the lines logged (nothing silently lost)."""
    clock = Clock()
    flt = RepeatFilter(60.0, clock=clock)
    written = 0
    held_reported = 0
    for step, template, arg in sorted(events):
        clock.now = 1000.0 + step
        record = logging.LogRecord("kw", logging.ERROR, __file__, 1, template, (arg,) if "%" in template else (), None)
        if flt.filter(record):
            written += 1
            marker = " more like this in the last "
            text = str(record.msg)
            if marker in text:
                held_reported += int(text.rsplit("[", 1)[1].split(" ", 1)[0])
    clock.now += 10_000
    held_reported += sum(count for _, count in flt.summaries())
    assert written + held_reported == len(events)


def test_faust_logging_config_keeps_the_format_and_the_filter() -> None:
    """The dictConfig handed to faust's worker installs a handler with keywatch's format and the shared filter."""
    config = faust_logging_config("INFO")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(config)
        (handler,) = root.handlers
        assert logs.repeat_filter() in handler.filters
        assert handler.formatter is not None
        assert handler.formatter._fmt == logs.FORMAT
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
