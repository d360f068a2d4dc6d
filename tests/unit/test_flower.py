"""``smithers flower``: never without basic auth; the options Flower is given."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from smithers.cli import exitcodes
from smithers.cli.commands_ops import flower_argv, flower_credentials
from smithers.cli.main import build_parser, main
from smithers.shared.errors import InvalidInput

GOOD = "correct-horse-battery"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SMITHERS_FLOWER_USER": "admin"},
        {"SMITHERS_FLOWER_PASSWORD": GOOD},
        {"SMITHERS_FLOWER_USER": "", "SMITHERS_FLOWER_PASSWORD": GOOD},
    ],
)
def test_flower_refuses_to_start_without_credentials(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="basic auth"):
        flower_credentials(env)


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("admin", "short", "at least 12"),
        ("ad:min", GOOD, "':'"),
        ("admin", "comma,in-the-password", "','"),
    ],
)
def test_flower_refuses_weak_or_unparseable_credentials(user: str, password: str, message: str) -> None:
    env = {"SMITHERS_FLOWER_USER": user, "SMITHERS_FLOWER_PASSWORD": password}
    with pytest.raises(InvalidInput, match=message):
        flower_credentials(env)


def test_flower_password_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "flower-password"
    secret.write_text(GOOD + "\n")
    env = {"SMITHERS_FLOWER_USER": "admin", "SMITHERS_FLOWER_PASSWORD_FILE": str(secret)}
    assert flower_credentials(env) == ("admin", GOOD)


def test_missing_credentials_exit_with_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SMITHERS_FLOWER_USER", "SMITHERS_FLOWER_PASSWORD", "SMITHERS_FLOWER_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["flower"]) == exitcodes.BAD_INPUT
    assert "SMITHERS_FLOWER_PASSWORD" in capsys.readouterr().err


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["flower", *argv])


def test_flower_argv_keeps_credentials_off_the_command_line() -> None:
    argv = flower_argv(_args("--host", "0.0.0.0", "--port", "5556"))
    assert argv[:3] == ["flower", "--address=0.0.0.0", "--port=5556"]
    assert "--logging=none" in argv  # our JSON, redacting handler does the logging
    assert not [a for a in argv if "auth" in a]


def test_flower_tls_needs_both_files() -> None:
    with pytest.raises(InvalidInput, match="go together"):
        flower_argv(_args("--certfile", "/tls/tls.crt"))
    argv = flower_argv(_args("--certfile", "/tls/tls.crt", "--keyfile", "/tls/tls.key"))
    assert "--certfile=/tls/tls.crt" in argv and "--keyfile=/tls/tls.key" in argv
