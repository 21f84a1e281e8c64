"""Logging with loguru: readable lines on stderr, JSON lines in a rotated file.

Every line can carry two context fields, `job` and `service`, set with `logger.contextualize`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from loguru import logger

from monitord.config import LoggingSettings


def _stderr_format(record: Any) -> str:
    context = "".join(
        f" [{record['extra'][key]}]" for key in ("job", "service") if record["extra"].get(key)
    )
    return "{time:YYYY-MM-DD HH:mm:ss} {level: <7}" + context + " {message}\n{exception}"


class _ToLoguru(logging.Handler):
    """Sends the standard library's log records (APScheduler, aiohttp, apprise) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, record.getMessage())


def setup_logging(settings: LoggingSettings, to_file: bool = True) -> None:
    """Replace loguru's handlers with monitord's: stderr always, the JSON file when asked."""
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
    logger.remove()
    logger.add(sys.stderr, level=settings.level, format=_stderr_format, colorize=False)
    if to_file and settings.file:
        Path(settings.file).parent.mkdir(parents=True, exist_ok=True)
        logger.add(
            settings.file,
            level=settings.level,
            serialize=True,
            rotation=settings.rotation_mb * 1024 * 1024,
            retention=settings.keep_files,
            encoding="utf-8",
        )
