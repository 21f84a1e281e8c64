"""Logging with loguru: readable lines on stderr, JSON lines in a rotated file.

Every line can carry two context fields, `job` and `service`, set with `logger.contextualize`.

Every record goes through `_clean` before any handler sees it, as a last line of defence: URLs
in it are masked (a store password, a webhook token), control characters escaped and newlines
from data written as `\\n`, so that one record is one line (journald reads one line as one entry)
and no text from a catalogue or an exception can forge a line or move a terminal's cursor.
Tracebacks show code, never the values of local variables (`diagnose=False`): a traceback with
values printed a store URL's password once per failed job.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from loguru import logger

from monitord.config import LoggingSettings
from monitord.redact import mask_urls, one_line, printable

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


def _format(record: Any) -> str:
    # A template loguru fills in: values are referenced by name, never pasted into it, so that
    # a brace in a service id is text, not a placeholder.
    context = "".join(f" [{{extra[{key}]}}]" for key in CONTEXT_KEYS if record["extra"].get(key))
    tail = "\n{extra[traceback]}" if record["extra"].get("traceback") else ""
    return "{time:YYYY-MM-DD HH:mm:ss} {level: <7}" + context + " {message}" + tail + "\n"


class _ToLoguru(logging.Handler):
    """Sends the standard library's log records (aiohttp, apprise, SQLAlchemy) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, record.getMessage())


def setup_logging(settings: LoggingSettings, *, to_file: bool = True) -> None:
    """Replace loguru's handlers with monitord's: stderr always, the JSON file when asked."""
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    logger.remove()
    logger.configure(patcher=_clean)
    logger.add(
        sys.stderr,
        level=settings.level,
        format=_format,
        colorize=False,
        backtrace=False,
        diagnose=False,
    )
    if to_file and settings.file:
        Path(settings.file).parent.mkdir(parents=True, exist_ok=True)
        logger.add(
            settings.file,
            level=settings.level,
            format=_format,
            serialize=True,
            rotation=settings.rotation_mb * 1024 * 1024,
            retention=settings.keep_files,
            encoding="utf-8",
            backtrace=False,
            diagnose=False,
        )
