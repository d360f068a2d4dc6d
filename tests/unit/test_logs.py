"""SMITHERS_LOG_FORMAT: JSON or text, the rule for the default, redaction on every handler."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from smithers.shared.logs import json_wanted, setup_logging, style_handler
from smithers.shared.redaction import RedactingFilter


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    root.handlers[:] = []  # an earlier test (an in-process worker) may have set logging up
    yield
    root.handlers[:] = saved
    root.setLevel(level)


@pytest.mark.parametrize(
    ("value", "stream", "wanted"),
    [("", Tty(), False), ("", io.StringIO(), True), ("auto", Tty(), False), ("json", Tty(), True),
     ("text", io.StringIO(), False)],
)  # fmt: skip
def test_the_default_is_text_on_a_terminal_and_json_elsewhere(
    value: str, stream: io.StringIO, wanted: bool
) -> None:
    assert json_wanted({"SMITHERS_LOG_FORMAT": value}, stream) is wanted


def test_json_lines_are_redacted(root_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.setenv("SMITHERS_LOG_FORMAT", "json")
    setup_logging("test")
    logging.getLogger("smithers.test").warning("sent Bearer abcdefghijklmnop to %s", "api")
    line = json.loads(out.getvalue())
    assert line["level"] == "warning" and line["process"] == "test" and line["logger"] == "smithers.test"
    assert "abcdefghijklmnop" not in line["message"] and "[redacted]" in line["message"]


def test_a_second_setup_keeps_the_first_stream(root_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # given logging set up on stderr, when stderr is then redirected into the log (as
    # Celery does) and logging set up again, then records still reach the first stream
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    setup_logging("worker", json_lines=True)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    setup_logging("worker", "DEBUG", json_lines=True)
    logging.getLogger("celery").debug("ready")
    assert json.loads(out.getvalue())["message"] == "ready"
    assert len(logging.getLogger().handlers) == 1


def test_a_library_handler_gets_our_format_and_one_redactor() -> None:
    handler = logging.StreamHandler(io.StringIO())
    style_handler(style_handler(handler, "gateway", True), "gateway", True)
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    record = logging.LogRecord("gunicorn.error", logging.INFO, __file__, 1, "Listening at: %s", ("x",), None)
    handler.filter(record)
    assert json.loads(handler.format(record))["message"] == "Listening at: x"


@pytest.mark.parametrize("json_lines", [True, False])
def test_a_secret_logged_every_way_is_nowhere_in_the_line(json_lines: bool) -> None:
    # given a handler styled as every one of ours is (gunicorn's error log included), and
    # a secret registered with the redactor (and a token-like string it does not know)
    from smithers.shared.redaction import register_secret

    secret, token = "unit-secret-value-6f1d2", "ghp_" + "a1" * 12
    register_secret(secret)
    out = io.StringIO()
    handler = style_handler(logging.StreamHandler(out), "test", json_lines)
    logger = logging.getLogger("gunicorn.error.unit-test")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        # when it is logged every way the logging module allows
        for value in (secret, token):
            logger.warning("msg " + value)
            logger.warning("args %s", value)
            logger.warning("mapping %(v)s", {"v": value})
            logger.warning("extra", extra={"fields": {"password": value, "k": [value], value: 1}})
            logger.warning("stack", stack_info=True, extra={"fields": {"n": {"deep": value}}})
            try:
                raise RuntimeError(f"boom {value}")
            except RuntimeError:
                logger.exception("exception")
                logger.error("exc_info", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()

    # then the lines were written, with neither value in them
    assert text.count("RuntimeError") >= 4 and "Stack (most recent call last)" in text
    assert secret not in text and token not in text
