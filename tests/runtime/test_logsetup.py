"""What monitord's logs show: never a secret, one line per record, no control characters."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from monitord.config import LoggingSettings
from monitord.runtime.logsetup import JsonLogFile, setup_logging

PASSWORD = "hunter2-pw"
STORE_URL = f"postgresql://monitord:{PASSWORD}@db.example:5432/monitord"
FORGED = "企业开办\n2026-12-04 09:00:00 ERROR   forged line\x1b[2J\u202e"


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Where a test's JSON log goes; loguru's handlers are removed after the test."""
    yield tmp_path / "monitord.log.jsonl"
    logger.remove()


def start_logging(log_file: Path) -> None:
    # In the test itself, not in a fixture: pytest captures stderr anew for the test's call.
    setup_logging(LoggingSettings(file=str(log_file), level="DEBUG"))


def connect(url: str) -> None:
    password = url.split(":")[2].split("@")[0]  # a local variable holding the secret
    raise ConnectionError(f"cannot reach {url} (password {len(password)} characters)")


def test_a_traceback_shows_no_secret_held_in_a_variable_or_its_message(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_logging(log_file)
    # With loguru's diagnose=True, every traceback printed each local variable's value.
    try:
        connect(STORE_URL)
    except ConnectionError:
        logger.exception("job {} failed", "catalogue-sync")
    err = capsys.readouterr().err
    written = log_file.read_text(encoding="utf-8")
    assert PASSWORD not in err
    assert PASSWORD not in written
    assert "Traceback (most recent call last):" in err
    assert "ConnectionError: cannot reach postgresql://monitord:***@db.example:5432/monitord" in err
    record = json.loads(written.splitlines()[-1])
    assert record["traceback"].endswith(
        "ConnectionError: cannot reach postgresql://monitord:***@db.example:5432/monitord "
        "(password 10 characters)"
    )


def test_urls_in_a_message_are_masked_in_both_logs(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_logging(log_file)
    logger.warning("store unreachable at {}", STORE_URL)
    logging.getLogger("aiohttp.client").warning(
        "sent to dingtalk://a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6/"
    )
    err = capsys.readouterr().err
    written = log_file.read_text(encoding="utf-8")
    for text in (err, written):
        assert PASSWORD not in text
        assert "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6" not in text
    assert "store unreachable at postgresql://monitord:***@db.example:5432/monitord" in err
    assert "sent to dingtalk://***/" in err


def test_catalogue_text_cannot_forge_a_line_or_move_the_cursor(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_logging(log_file)
    with logger.contextualize(job="probes", service="svc-{0}\nforged"):
        logger.info("service {} is down", FORGED)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "\x1b" not in err and "\u202e" not in err
    assert err.endswith(
        " [probes] [svc-{0}\\nforged] service 企业开办\\n2026-12-04 09:00:00 ERROR   forged "
        "line\\x1b[2J\\u202e is down\n"
    )
    [line] = log_file.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["message"] == (
        "service 企业开办\\n2026-12-04 09:00:00 ERROR   forged line\\x1b[2J\\u202e is down"
    )


def test_an_exception_message_from_data_stays_on_one_line(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_logging(log_file)
    try:
        raise ValueError(FORGED)
    except ValueError:
        logger.exception("job failed")
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == (
        "ValueError: 企业开办\\n2026-12-04 09:00:00 ERROR   forged line\\x1b[2J\\u202e"
    )
    assert not any(line.startswith("2026-12-04 09:00:00 ERROR") for line in lines)


def test_the_json_log_is_one_flat_object_a_line(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_logging(log_file)
    with logger.contextualize(job="probes", service="svc-0042"):
        logger.warning("service {} is down", "企业开办")
    logger.info("no context")
    first, second = (json.loads(line) for line in log_file.read_text("utf-8").splitlines())
    assert set(first) == {"time", "level", "job", "service", "message"}
    assert (first["level"], first["job"], first["service"]) == ("WARNING", "probes", "svc-0042")
    assert first["message"] == "service 企业开办 is down"
    assert dt.datetime.fromisoformat(first["time"]).tzinfo is not None
    assert (second["job"], second["service"]) == (None, None)


def test_under_journald_a_line_has_its_priority_and_no_second_timestamp(
    log_file: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import sys

    status = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
    start_logging(log_file)
    with logger.contextualize(job="probes"):
        logger.warning("service svc-0042 is down")
    try:
        raise ValueError("bad answer")
    except ValueError:
        logger.exception("job failed")
    lines = capfd.readouterr().err.splitlines()
    assert lines[0] == "<4>WARNING [probes] service svc-0042 is down"
    assert lines[1] == "<3>ERROR   job failed"
    assert all(line.startswith("<3>") for line in lines[1:])
    assert lines[-1] == "<3>ValueError: bad answer"


def test_a_json_log_on_a_full_disk_is_one_line_on_stderr_and_stderr_logging_goes_on(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Each record printed loguru's "--- Logging error in Loguru Handler ---", a traceback and
    # the whole record, and the exit one more traceback.
    setup_logging(LoggingSettings(file="/dev/full", level="INFO"))  # every write: ENOSPC
    for n in range(3):
        logger.info("record {}", n)
    logger.remove()  # as at exit: the file closed
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if "JSON log" in line] == [
        "monitord: the JSON log /dev/full cannot be written (No space left on device): its "
        "lines go to stderr only until it can"
    ]
    assert [line.split(" INFO    ")[1] for line in err.splitlines() if " INFO " in line] == [
        "record 0",
        "record 1",
        "record 2",
    ]
    assert "Traceback" not in err and "Loguru" not in err


def test_a_json_log_that_fails_for_long_says_so_every_few_minutes_and_once_when_it_works(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    clock = [0.0]
    file = tmp_path / "monitord.log.jsonl"
    json_log = JsonLogFile(str(file), 1 << 20, 2, monotonic=lambda: clock[0])
    handler = logger.add(json_log, format="{message}\n")
    working = json_log.stream
    json_log.stream = open("/dev/full", "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    for seconds in (0, 60, 299, 300, 301):
        clock[0] = seconds
        logger.info("at {}", seconds)
    with contextlib.suppress(OSError):  # what it holds cannot be flushed either
        json_log.stream.close()
    json_log.stream = working  # room again
    logger.info("room again")
    logger.info("and after")
    logger.remove(handler)
    said = capfd.readouterr().err.splitlines()
    assert said == [
        f"monitord: the JSON log {file} cannot be written (No space left on device): its "
        "lines go to stderr only until it can",
    ] * 2 + [f"monitord: the JSON log {file} is written again"]
    assert file.read_text(encoding="utf-8").splitlines() == ["room again", "and after"]
