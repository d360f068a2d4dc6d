"""Logging: every record through one redacting handler on stderr, as JSON lines or text.

``SMITHERS_LOG_FORMAT`` picks the format: ``json`` (one object per line: ``time``,
``level``, ``process``, ``logger``, ``message`` and the record's fields), ``text`` (one
readable line per record) or ``auto``, the default: ``text`` when stderr is a terminal,
``json`` otherwise (a file, a pipe, a container's log, the children of ``smithers up``).

The records of the libraries go through the same handler: gunicorn's error and access
logs (:func:`style_handler` on the handlers gunicorn makes) and a Celery worker's
(:func:`route_celery_logs`: Celery's ``setup_logging`` signal, so Celery installs no
handler of its own, and its redirection of ``print`` output to the log kept).
Redaction is on every handler and runs last: :class:`~smithers.shared.redaction.RedactingFormatter`
masks the finished line (message, arguments, traceback, stack and extra fields), and the
JSON formatter also redacts each rendered value before it is escaped into the line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from smithers.shared import settings
from smithers.shared.redaction import RedactingFilter, RedactingFormatter, redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process and message."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as JSON; each value is redacted before it is escaped."""
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            line.update({str(k): v for k, v in extra.items() if str(k) not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        rendered = json.loads(json.dumps(line, default=str))  # extra fields as JSON renders them
        return json.dumps(redact(rendered, keys=True))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`setup_logging` installs on the root logger."""


def json_wanted(env: Mapping[str, str], stream: Any) -> bool:
    """True when ``SMITHERS_LOG_FORMAT`` (``auto``: ``stream`` is no terminal) asks for JSON."""
    chosen = settings.LOG_FORMAT.read(env)
    if chosen == "auto":
        isatty = getattr(stream, "isatty", None)
        try:
            return not (callable(isatty) and isatty())
        except ValueError:  # a closed stream
            return True
    return chosen == "json"


def style_handler(handler: logging.Handler, process: str, json_lines: bool) -> logging.Handler:
    """Give ``handler`` our format, redacted as a whole, and the redacting filter (once)."""
    inner = JsonFormatter(process) if json_lines else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(RedactingFormatter(inner))
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
    return handler


def setup_logging(process: str, level: str | int = "INFO", json_lines: bool | None = None) -> None:
    """Route every log record through the redactor to stderr, the root logger's one handler.

    ``json_lines`` None: as ``SMITHERS_LOG_FORMAT`` says. Python warnings become records
    too. Calling it again (gunicorn's worker after its master, Celery's signal after
    ``smithers worker``) replaces the handler but keeps writing to the same stream, even
    once Celery has redirected ``sys.stderr`` into the log.
    """
    root = logging.getLogger()
    stream: TextIO = sys.stderr
    for old in list(root.handlers):
        if isinstance(old, _Handler):
            stream = old.stream
        root.removeHandler(old)
    wanted = json_wanted(os.environ, stream) if json_lines is None else json_lines
    root.addHandler(style_handler(_Handler(stream), process, wanted))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)


def route_celery_logs(process: str = "worker") -> None:
    """Make a Celery worker log through :func:`setup_logging` (idempotent).

    A receiver of Celery's ``setup_logging`` signal tells Celery to install no handler
    and no formatter of its own (its task logger and multiprocessing logger included);
    Celery then leaves the redirection of ``sys.stdout``/``sys.stderr`` into the log
    (``worker_redirect_stdouts``) to the receiver, which keeps it.
    """
    from celery import signals  # noqa: PLC0415 (only workers need Celery here)

    signals.setup_logging.connect(_celery_receiver(process), weak=False, dispatch_uid="smithers.logs")


def _celery_receiver(process: str) -> Any:
    def receiver(loglevel: int | str | None = None, **_: Any) -> None:
        from celery import current_app  # noqa: PLC0415

        setup_logging(process, loglevel or "INFO")
        conf = current_app.conf
        if conf.worker_redirect_stdouts:
            current_app.log.redirect_stdouts(conf.worker_redirect_stdouts_level)

    return receiver
