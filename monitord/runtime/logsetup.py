"""Logging with loguru: readable lines on stderr, JSON lines in a rotated file (JsonLogFile).

Every line can carry two context fields, `job` and `service`, set with `logger.contextualize`.

Under systemd, stderr goes to journald ($JOURNAL_STREAM names it): journald stamps each entry
itself, so the line carries no second timestamp, and it starts with its syslog priority
(`<4>` for a warning) so that `journalctl -p warning` finds it. The JSON file holds one flat
object a line: time, level, job, service, message and, when there is one, traceback.

Every record goes through `_clean` before any handler sees it, as a last line of defence: URLs
in it are masked (a store password, a webhook token), control characters escaped and newlines
from data written as `\\n`, so that one record is one line (journald reads one line as one entry)
and no text from a catalogue or an exception can forge a line or move a terminal's cursor.
Tracebacks show code, never the values of local variables (`diagnose=False`): a traceback with
values printed a store URL's password once per failed job.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import logging.handlers
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from monitord.config import LoggingSettings
from monitord.files import missing_link, missing_target, write_problem
from monitord.redact import mask_urls, one_line, printable
from monitord.timeutil import SHANGHAI

CONTEXT_KEYS = ("job", "service")
"""The context fields shown in brackets on each line."""


def _exception_lines(error: traceback.TracebackException) -> list[str]:
    """A traceback as Python prints it, with the exception's own text kept to one line."""
    lines: list[str] = []
    if error.__cause__ is not None:
        lines += _exception_lines(error.__cause__)
        lines += ["", "The above exception was the direct cause of the following exception:", ""]
    elif error.__context__ is not None and not error.__suppress_context__:
        lines += _exception_lines(error.__context__)
        lines += ["", "During handling of the above exception, another exception occurred:", ""]
    if error.stack:
        lines.append("Traceback (most recent call last):")
        lines += "".join(error.stack.format()).rstrip("\n").split("\n")
    # The message is data (a URL, a service name, a server's answer): one line, masked.
    lines.append(one_line(mask_urls("".join(error.format_exception_only()).rstrip("\n"))))
    return lines


def traceback_text(error: BaseException) -> str:
    """The traceback of error, masked and escaped, as monitord's logs show it."""
    lines = _exception_lines(traceback.TracebackException.from_exception(error))
    return "\n".join(printable(mask_urls(line)) for line in lines)


def _clean(record: Any) -> None:
    """The loguru patcher: mask and escape what a record carries (see the module docstring)."""
    record["message"] = one_line(mask_urls(record["message"]))
    extra = record["extra"]
    for key in CONTEXT_KEYS:
        if extra.get(key):
            extra[key] = one_line(mask_urls(str(extra[key])))
    exception = record["exception"]
    if exception is not None:
        # loguru would render the exception itself (and write its raw text into the JSON
        # record): hand it the cleaned text instead.
        if exception.value is not None:
            extra["traceback"] = traceback_text(exception.value)
        record["exception"] = None


SYSLOG_PRIORITY = {
    "TRACE": 7,
    "DEBUG": 7,
    "INFO": 6,
    "SUCCESS": 5,
    "WARNING": 4,
    "ERROR": 3,
    "CRITICAL": 2,
}
"""loguru's levels as syslog priorities, as journald reads them from a `<N>` prefix."""


def _context(record: Any) -> str:
    # Templates loguru fills in: values are referenced by name, never pasted into them, so
    # that a brace in a service id is text, not a placeholder.
    return "".join(f" [{{extra[{key}]}}]" for key in CONTEXT_KEYS if record["extra"].get(key))


def _tail(record: Any) -> str:
    return "\n{extra[traceback]}" if record["extra"].get("traceback") else ""


def _format(record: Any) -> str:
    # loguru stamps the process's local time: UTC on many servers, where people read Shanghai's.
    local: str = record["time"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    return local + " {level: <7}" + _context(record) + " {message}" + _tail(record) + "\n"


def _journal_format(record: Any) -> str:
    priority = SYSLOG_PRIORITY.get(record["level"].name, 6)
    # journald splits a traceback into entries, one per line: each keeps the priority.
    record["extra"]["_journal_tail"] = "".join(
        f"\n<{priority}>{line}" for line in record["extra"].get("traceback", "").splitlines()
    )
    # "\\<" is loguru's escape: a bare "<4>" would be read as a colour tag.
    return f"\\<{priority}>{{level: <7}}" + _context(record) + " {message}{extra[_journal_tail]}\n"


def _json_format(record: Any) -> str:
    extra = record["extra"]
    flat: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "job": extra.get("job"),
        "service": extra.get("service"),
        "message": record["message"],
    }
    if extra.get("traceback"):
        flat["traceback"] = extra["traceback"]
    extra["_json"] = json.dumps(flat, ensure_ascii=False)
    return "{extra[_json]}\n"


def stderr_is_journal() -> bool:
    """Whether stderr is the journald stream systemd connected ($JOURNAL_STREAM = dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        status = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{status.st_dev}:{status.st_ino}" == f"{device}:{inode}"


QUIET_LOGGERS = ("apprise",)
"""Standard-library loggers not sent to loguru: apprise's warning that a send failed is said in
monitord's own line about that delivery, with the reason (alerts.delivery), once."""


class _ToLoguru(logging.Handler):
    """Sends the standard library's log records (aiohttp, SQLAlchemy) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.partition(".")[0] in QUIET_LOGGERS:
            return
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, record.getMessage())


FILE_TROUBLE_EVERY_SECONDS = 300.0
"""While the JSON log cannot be written, stderr is told so at most this often."""


class JsonLogFile(logging.handlers.RotatingFileHandler):
    """The JSON log file, rotated by size, that tells stderr in one line when it cannot be
    written (a full disk) and in one line when it can again; records meanwhile go to stderr
    only. loguru's own file sink printed a traceback and the whole record for every line, and
    another traceback at exit."""

    terminator = ""  # each record comes formatted with its newline

    def __init__(
        self,
        file: str,
        max_bytes: int,
        keep_files: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(file, maxBytes=max_bytes, backupCount=keep_files, encoding="utf-8")
        self._monotonic = monotonic
        self._failing = False
        self._said_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record; said on stderr when that fails, and when it works again."""
        failed_before = self._failing
        self._failing = False
        super().emit(record)  # a failure goes to handleError, which sets _failing
        if failed_before and not self._failing:
            self._tell(f"the JSON log {self.baseFilename} is written again")
            self._said_at = None

    def handleError(self, record: logging.LogRecord) -> None:
        """One line on stderr, at most every FILE_TROUBLE_EVERY_SECONDS, instead of a trace."""
        self._failing = True
        error = sys.exc_info()[1]
        now = self._monotonic()
        if self._said_at is not None and now - self._said_at < FILE_TROUBLE_EVERY_SECONDS:
            return
        self._said_at = now
        why = error.strerror if isinstance(error, OSError) and error.strerror else repr(error)
        self._tell(
            f"the JSON log {self.baseFilename} cannot be written ({why}): its lines go to "
            "stderr only until it can"
        )

    def close(self) -> None:
        """Close the file; what could not be flushed to a full disk is let go quietly."""
        with contextlib.suppress(OSError):
            super().close()

    @staticmethod
    def _tell(text: str) -> None:
        priority = f"<{SYSLOG_PRIORITY['WARNING']}>" if stderr_is_journal() else ""
        sys.stderr.write(f"{priority}monitord: {text}\n")
        sys.stderr.flush()


def log_file_problem(file: str | None) -> str | None:
    """Why the daemon could not write its JSON log at `file`, or None (nothing made: what
    `check-config` says before a reload that would otherwise be refused)."""
    if file is None:
        return None
    try:
        return write_problem(Path(file))
    except OSError as exc:  # a folder on the way this user cannot search
        return f"cannot reach it ({exc.strerror})"


def setup_logging(settings: LoggingSettings, *, to_file: bool = True) -> None:
    """Replace loguru's handlers with monitord's: stderr always, the JSON file when asked.

    Raises OSError, with the handlers in place untouched, when the file cannot be written.
    """
    if to_file and settings.file:
        # Made and opened before the handlers go: a file that cannot be written leaves the
        # running ones (a reload refused keeps logging where it did).
        link = missing_link(Path(settings.file).parent)
        if link is not None:  # mkdir would say only "File exists"
            raise FileNotFoundError(errno.ENOENT, missing_target(link), str(link))
        Path(settings.file).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.file).open("a", encoding="utf-8").close()
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    logger.remove()
    logger.configure(patcher=_clean)
    logger.add(
        sys.stderr,
        level=settings.level,
        format=_journal_format if stderr_is_journal() else _format,
        colorize=False,
        backtrace=False,
        diagnose=False,
    )
    if to_file and settings.file:
        json_file = JsonLogFile(
            settings.file, settings.rotation_mb * 1024 * 1024, settings.keep_files
        )
        logger.add(
            json_file, level=settings.level, format=_json_format, backtrace=False, diagnose=False
        )
