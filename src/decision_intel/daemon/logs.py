"""Logging: configured once at start, one event per line on unbuffered stdout.

- stdout is the systemd journal (JOURNAL_STREAM names it): key=value lines that
  start with the syslog priority (`<3>` error ... `<7>` debug), so
  `journalctl -p warning` filters by level;
- stdout is a terminal: readable, colored lines;
- otherwise: one JSON object per line.
Every rendered line is scrubbed of the configured secrets (the Redis password).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog

Mode = Literal["journal", "console", "json"]

_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def detect_mode(environ: Mapping[str, str], stream: TextIO) -> Mode:
    """`journal` when stdout is the very stream JOURNAL_STREAM names (device:inode)."""
    journal = environ.get("JOURNAL_STREAM", "")
    if journal:
        try:
            st = os.fstat(stream.fileno())
            if journal == f"{st.st_dev}:{st.st_ino}":
                return "journal"
        except (OSError, ValueError):
            pass
    return "console" if stream.isatty() else "json"


class _Scrub:
    """Replace every secret in the rendered line: passwords never reach the log."""

    def __init__(self, secrets: Iterable[str]):
        self.secrets = [s for s in secrets if s]

    def __call__(self, _logger: Any, _name: str, line: Any) -> Any:
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return line


def _journal_prefix(_logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    event["_priority"] = _PRIORITY.get(name, 6)
    return event


def _render_journal(_logger: Any, _name: str, event: dict[str, Any]) -> str:
    priority = event.pop("_priority", 6)
    event.pop("timestamp", None)  # the journal stamps every line itself
    body = structlog.processors.KeyValueRenderer(key_order=["event", "level"], sort_keys=False)
    return f"<{priority}>{body(_logger, _name, event)}"


def configure(
    level: str = "INFO",
    mode: Mode = "json",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: list[Any]
    if mode == "journal":
        renderer = [_journal_prefix, _render_journal]
    elif mode == "console":
        renderer = [structlog.dev.ConsoleRenderer(colors=True)]
    else:
        renderer = [structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[*shared, *renderer, _Scrub(secrets)],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get(name: str = "p35") -> Any:
    return structlog.get_logger(name)
