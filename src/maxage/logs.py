"""Log lines of both servers: one JSON object per line, or text for a human at a terminal.

:func:`setup` installs one stderr handler on the root logger with :class:`JsonFormatter`
(``--log-format json``) or :class:`TextFormatter` (``--log-format text``); without a
choice, text when stderr is a terminal and JSON otherwise. A JSON line always has
``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and ``msg``; the fields a
caller passes with ``extra=`` (``request_id``, ``trace_id``, ``route``, ``status``,
``code``, ...) follow; an exception is one ``exception`` string, never loose lines.
:func:`granian_dictconfig` gives granian's own loggers the same handler. Standard
library only.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any, Final

from maxage_client.transport import TRACEPARENT as _TRACEPARENT
from maxage_client.transport import child_traceparent as child_traceparent

FORMATS: Final = ("json", "text")
# Every attribute a plain LogRecord has: anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Libraries that log every request at INFO: only their warnings are wanted.
_QUIET: Final = ("httpx", "httpcore", "asyncio")


def timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2025-01-31T12:00:00.123Z``."""
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD and not k.startswith("_") and v is not None
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(extra_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=True, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``TS LEVEL logger: msg key=value ...`` and any traceback below, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{timestamp(record.created)} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}"
        )
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def resolve(choice: str | None) -> str:
    """``json`` or ``text``; no choice: text when stderr is a terminal, JSON otherwise."""
    if choice in FORMATS:
        assert choice is not None
        return choice
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "text" if tty else "json"


def formatter(choice: str | None) -> logging.Formatter:
    return TextFormatter() if resolve(choice) == "text" else JsonFormatter()


def setup(choice: str | None, level: int = logging.INFO) -> str:
    """Route every log record of this process through one stderr handler in the chosen
    format, and uncaught exceptions and ``warnings`` through logging. Returns the format."""
    fmt = resolve(choice)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    return fmt


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("maxage").critical("uncaught exception", exc_info=(kind, value, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger("maxage").error(
        "uncaught exception in thread %s",
        args.thread.name if args.thread is not None else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def granian_dictconfig(choice: str | None, level: str = "WARNING") -> dict[str, Any]:
    """granian's ``log_dictconfig``: its loggers (``_granian``, ``granian.access``) and
    the root logger of its processes write through our formatter to stderr."""
    fmt = resolve(choice)
    cls = "maxage.logs.TextFormatter" if fmt == "text" else "maxage.logs.JsonFormatter"
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "maxage",
        "stream": "ext://sys.stderr",
    }
    return {
        "formatters": {"maxage": {"()": cls}},
        "handlers": {"maxage": handler},
        "loggers": {
            "_granian": {"handlers": ["maxage"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["maxage"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["maxage"], "level": "INFO"},
    }


def trace_id(traceparent: bytes | None) -> str | None:
    """The trace id of a well-formed W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``)."""
    if traceparent is None:
        return None
    m = _TRACEPARENT.match(traceparent.strip().lower())
    if m is None or m.group(1) == b"0" * 32:
        return None
    return m.group(1).decode("ascii")
