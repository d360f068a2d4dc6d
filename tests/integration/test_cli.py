"""The smithers command on the embedded default: `smithers up` in one process,
`smithers run` / `approve` / `watch` from others, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def smithers(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env["SMITHERS_WORKFLOWS"] = "smithers.examples.hello,smithers.examples.approval_demo"
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Path]:
    """`smithers up` running on a fresh data directory (SQLite + embedded broker)."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env["SMITHERS_WORKFLOWS"] = "smithers.examples.hello,smithers.examples.approval_demo"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "smithers", "up", "--data-dir", str(data), "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 30
    while not (data / "broker.json").exists():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "up.log").read_text()
        time.sleep(0.1)
    yield data
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    assert not (data / "broker.json").exists()


def test_run_follows_progress_and_exits_zero_with_the_output(up: Path) -> None:
    result = smithers(up, "run", "hello", "--input", '{"name": "ada"}', "--run-id", "hello-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ summary" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert json.loads(last.removeprefix("output: "))["summary"]["shout"] == "HELLO, ADA!"

    again = smithers(up, "run", "hello", "--input", '{"name": "ada"}', "--run-id", "hello-1")
    assert again.returncode == 0 and "already exists" in again.stdout
    other = smithers(up, "run", "hello", "--input", '{"name": "bob"}', "--run-id", "hello-1")
    assert other.returncode == 7 and "different workflow or input" in other.stderr


def test_approval_exits_three_then_approve_and_watch_finish_it(up: Path) -> None:
    waiting = smithers(up, "run", "approval-demo", "--run-id", "appr-1")
    assert waiting.returncode == 3, waiting.stdout + waiting.stderr
    assert "smithers approve appr-1 review" in waiting.stdout

    approve = smithers(up, "approve", "appr-1", "review", "--note", "ship it", "--as", "carol")
    assert approve.returncode == 0 and "approved by carol" in approve.stdout
    watch = smithers(up, "watch", "appr-1")
    assert watch.returncode == 0 and "approved by carol: ship it" in watch.stdout
    again = smithers(up, "approve", "appr-1", "review")
    assert again.returncode == 7 and "already decided" in again.stderr


def test_approve_checks_its_payload_against_the_declaration(up: Path) -> None:
    assert smithers(up, "run", "approval-demo", "--run-id", "appr-p").returncode == 3
    bad_json = smithers(up, "approve", "appr-p", "review", "--payload", "{oops")
    assert bad_json.returncode == 2 and "--payload is not JSON" in bad_json.stderr
    undeclared = smithers(up, "approve", "appr-p", "review", "--payload", '{"channel": "beta"}')
    assert undeclared.returncode == 2 and "this approval declares no payload" in undeclared.stderr
    assert "Traceback" not in bad_json.stderr + undeclared.stderr
    assert smithers(up, "approve", "appr-p", "review", "--as", "carol").returncode == 0  # still pending


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "nope"], 6, "unknown workflow 'nope'"),
        (["run", "hello", "--input", "[1, 2]"], 2, "must be a JSON object"),
        (["run", "hello", "--input", "{oops"], 2, "not valid JSON"),
        (["run", "hello", "--run-id", "Not Valid"], 2, "must match"),
        (["run", "hello", "--input", '{"api_key": "sk-x"}'], 2, "input.api_key looks like a credential"),
        (["status", "no-such-run"], 6, "not found"),
    ],
)
def test_bad_input_is_a_clear_error_and_a_non_zero_exit(
    up: Path, args: list[str], code: int, message: str
) -> None:
    result = smithers(up, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_a_running_up_says_so(tmp_path: Path) -> None:
    result = smithers(tmp_path, "run", "hello")
    assert result.returncode == 5
    assert "no `smithers up` is running" in result.stderr
    assert not (tmp_path / "smithers.db").exists()  # nothing written


# -- finding the deployment: a second terminal, a subdirectory, an empty directory -----


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new terminal: no SMITHERS_* variable, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_") and k != "PYTHONPATH"}
    return {**env, **extra}


def smithers_in(cwd: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``smithers ARGS`` run from ``cwd`` as a user types it: no --data-dir, no SMITHERS_*."""
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def serving(project: Path, workflows: str) -> Iterator[Path]:
    """`smithers up` serving from ``project`` on its default data directory, .smithers/."""
    data = project / ".smithers"
    log = open(project.parent / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "smithers", "up", "--port", "0", "--sandbox", "off"],
        cwd=project,
        env=clean_env(SMITHERS_WORKFLOWS=workflows),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while not ((data / "broker.json").exists() and (data / "deployment.json").exists()):
            assert proc.poll() is None and time.time() < deadline, (project.parent / "up.log").read_text()
            time.sleep(0.1)
        yield data
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_a_second_terminal_finds_the_deployment_of_smithers_up(tmp_path: Path) -> None:
    # given `smithers up` serving in a project directory, started with SMITHERS_WORKFLOWS
    project = tmp_path / "project"
    (project / "src" / "deep").mkdir(parents=True)
    with serving(project, "smithers.examples.hello,smithers.examples.approval_demo") as data:
        record = json.loads((data / "deployment.json").read_text())
        assert record["workflows"] == "smithers.examples.hello,smithers.examples.approval_demo"
        assert record["project_dir"] == str(project)

        # when a new terminal (no SMITHERS_* at all) runs the README's next steps there
        run = smithers_in(project, "run", "hello", "--input", '{"name": "ada"}', "--run-id", "h-1")
        waiting = smithers_in(project, "run", "approval-demo", "--run-id", "a-1")
        approve = smithers_in(project, "approve", "a-1", "review", "--note", "ship it")
        watch = smithers_in(project, "watch", "a-1")
        # and from a subdirectory, as git finds .git
        runs = smithers_in(project / "src" / "deep", "runs")
        workflows = smithers_in(project / "src", "workflows")
        status = smithers_in(project / "src", "status", "h-1")

    # then each found the running deployment
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1].removeprefix("output: "))["summary"]["shout"] == (
        "HELLO, ADA!"
    )
    assert waiting.returncode == 3, waiting.stdout + waiting.stderr
    assert approve.returncode == 0, approve.stdout + approve.stderr
    assert watch.returncode == 0, watch.stdout + watch.stderr
    assert runs.returncode == 0 and "h-1" in runs.stdout and "a-1" in runs.stdout, runs.stderr
    assert workflows.returncode == 0 and "approval-demo" in workflows.stdout, workflows.stderr
    assert status.returncode == 0 and "succeeded" in status.stdout, status.stderr
    assert not (project / "src" / ".smithers").exists() and not (project / "smithers.db").exists()


READ_ONLY = [
    ["runs"],
    ["status", "r-1"],
    ["status", "r-1", "--json"],
    ["watch", "r-1"],
    ["workflows"],
    ["audit", "r-1"],
    ["sandboxes", "r-1"],
    ["metrics"],
    ["token", "list"],
    ["db", "backup", "backup.db"],
]
WRITES = [
    ["run", "hello"],
    ["approve", "r-1", "review"],
    ["cancel", "r-1"],
    ["delete", "r-1"],
    ["rewind", "r-1", "greet", "--confirm"],
    ["review", "r-1", "sb", "--accept"],
    ["token", "issue", "--subject", "ada", "--scopes", "run:read"],
]


@pytest.mark.parametrize("args", READ_ONLY + WRITES, ids=lambda a: " ".join(a[:2]))
def test_commands_in_a_directory_without_a_deployment_create_nothing_and_exit_5(
    tmp_path: Path, args: list[str]
) -> None:
    # given a directory with no .smithers/ in it or above it
    empty = tmp_path / "empty"
    empty.mkdir()

    # when a command that needs a deployment runs there
    result = smithers_in(empty, *args)

    # then it says where it looked, exits 5 and leaves the directory as it was
    assert result.returncode == 5, result.stdout + result.stderr
    assert f"looked for .smithers/deployment.json in {empty} and its parents" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(empty.iterdir()) == []


def test_an_explicit_data_dir_without_a_store_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    by_flag = smithers_in(tmp_path, "runs", "--data-dir", str(missing))
    by_env = smithers_in(tmp_path, "status", "r-1", SMITHERS_DATA_DIR=str(missing))
    assert by_flag.returncode == 5 and f"--data-dir {missing}" in by_flag.stderr, by_flag.stderr
    assert by_env.returncode == 5 and f"SMITHERS_DATA_DIR={missing}" in by_env.stderr, by_env.stderr
    assert not missing.exists()


RUN_FLOW = ["--run", "project-flow", "--input", '{"word": "hey"}']


def test_a_project_with_its_own_workers_shared_and_gateway_packages_runs_under_up(tmp_path: Path) -> None:
    # given a user project whose packages have the names of smithers' own processes
    project = tmp_path / "project"
    for package, body in {
        "workers": "def build_env() -> str:\n    return 'env of the project'\n",
        "shared": "",
        "gateway": "raise ImportError('the project gateway is not for smithers')\n",
    }.items():
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(body)
    (project / "shared" / "util.py").write_text(
        "def shout(text: str) -> str:\n    return text.upper() + '!!'\n"
    )
    (project / "flows.py").write_text(
        "from shared.util import shout\n"
        "from workers import build_env\n"
        "from smithers import StepContext, Workflow\n\n"
        "wf = Workflow('project-flow', version='1')\n\n\n"
        "@wf.task()\n"
        "def loud(ctx: StepContext) -> dict[str, str]:\n"
        "    return {'loud': shout(str(ctx.input['word'])), 'env': build_env()}\n"
    )

    # when `smithers up` runs one of its workflows there
    result = subprocess.run(
        [sys.executable, "-m", "smithers", "up", "--port", "0", "--sandbox", "off", "--once", *RUN_FLOW],
        cwd=project,
        env=clean_env(SMITHERS_WORKFLOWS="flows"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then the run succeeded with the output computed by the project's own packages
    assert result.returncode == 0, result.stdout + result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1].removeprefix("output: "))
    assert output == {"loud": {"loud": "HEY!!", "env": "env of the project"}}
    logs = project / ".smithers" / "logs"
    assert "Traceback" not in (logs / "worker.log").read_text() + (logs / "scheduler.log").read_text()
