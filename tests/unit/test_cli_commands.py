"""The command line's table of sub-commands, and the console script's first step: a
command's module is imported only when it runs, and gevent patches only for the
commands that serve under it."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from smithers.cli.entry import option, wants_gevent
from smithers.cli.main import COMMANDS, Handler, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_each_module_adds_exactly_the_commands_the_table_lists_in_its_order(module: str) -> None:
    added: list[str] = []

    def add(name: str, fn: Handler) -> argparse.ArgumentParser:
        added.append(name)
        return argparse.ArgumentParser()

    importlib.import_module(module).register(add)
    assert added == list(COMMANDS[module])


def test_help_lists_every_command_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    for commands in COMMANDS.values():
        for name, text in commands.items():
            assert f"{name} {' '.join(text.split())}" in listed


def test_a_command_imports_its_own_module_and_no_other_command_module() -> None:
    # given a fresh interpreter parsing `smithers gateway --port 0`
    code = (
        "import json, sys\n"
        "from smithers.cli.main import COMMANDS, build_parser\n"
        "args = build_parser(['gateway', '--port', '0']).parse_args(['gateway', '--port', '0'])\n"
        "print(json.dumps([args.port, sorted(m for m in COMMANDS if m in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    port, imported = json.loads(done.stdout)
    # then the gateway's options were parsed, and of the command modules only the
    # gateway's was imported
    assert port == 0
    assert imported == ["smithers.cli.commands_gateway"]


def test_an_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["gatewy"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'gatewy'" in err and "'gateway'" in err and "'schedules'" in err


@pytest.mark.parametrize(
    ("argv", "env", "wanted"),
    [
        (["gateway"], {}, True),  # gevent is the gateway's default worker class
        (["gateway", "--port", "0", "--worker-class", "gthread"], {}, False),
        (["gateway", "--worker-class=gthread"], {}, False),
        (["gateway"], {"SMITHERS_GATEWAY_WORKER_CLASS": "gthread"}, False),
        (["gateway", "--worker-class", "gevent"], {"SMITHERS_GATEWAY_WORKER_CLASS": "gthread"}, True),
        (["worker"], {}, False),  # prefork
        (["worker", "--pool", "gevent"], {}, True),
        (["worker", "--pool=gevent", "--queues", "steps"], {}, True),
        (["worker", "--pool", "threads"], {}, False),
        (["status", "gateway"], {}, False),
        ([], {}, False),
    ],
)
def test_gevent_patches_only_for_the_commands_that_serve_under_it(
    argv: list[str], env: dict[str, str], wanted: bool
) -> None:
    assert wants_gevent(argv, env) is wanted


def test_the_last_of_an_option_given_twice_wins_as_with_argparse() -> None:
    assert option(["--pool", "gevent", "--pool=threads"], "--pool") == "threads"
    assert option(["--pool"], "--pool") is None
