"""The remote command line: ``smithers`` with SMITHERS_GATEWAY_URL and a token, run as a
subprocess against a live gateway in front of a scheduler and a worker. Outputs, exit
codes of the gateway's refusals, ``--as`` refused remotely (and recorded as asserted
locally), ``smithers login`` profiles created 0600, store-only commands refused."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smithers.cli import exitcodes
from smithers.shared.store.queries import events_after
from tests.integration.conftest import Engine
from tests.integration.gateway.live import LiveGateway, base_env, issue, remote_env, smithers

pytestmark = pytest.mark.timeout(300)


def test_the_remote_command_line_runs_approves_and_audits_through_the_gateway(
    engine_factory: Any, sqlite_url: str, tmp_path: Path, redis_url: str
) -> None:
    # given a live gateway before a scheduler and a worker, and three people's tokens (one
    # backend: the remote command line never opens the store; test_client covers both)
    engine: Engine = engine_factory(sqlite_url)
    engine.scheduler()
    engine.worker()
    gateway = LiveGateway(base_env(engine.database_url, redis_url), tmp_path).start()
    try:
        local = gateway.env
        ops = remote_env(gateway.url, issue(local, "ops", "run:read,run:write"))
        alice = remote_env(gateway.url, issue(local, "alice", "run:read,approval:read,approval:submit"))
        admin = remote_env(gateway.url, issue(local, "root", "admin,run:read,run:write"))

        # when ops launches an approval run, it follows it to the approval (exit 3)
        launched = smithers(ops, "run", "t-approval", "--run-id", "rc-1", "--timeout", "60")
        assert launched.returncode == exitcodes.WAITING_APPROVAL, launched.stderr + launched.stdout
        assert "run rc-1 launched (t-approval)" in launched.stdout
        assert "waiting for approval" in launched.stdout or "waiting for a person" in launched.stdout
        assert "Traceback" not in launched.stderr

        # --as does not exist remotely; ops may not decide (403 -> 10); alice may
        posing = smithers(ops, "approve", "rc-1", "gate", "--as", "alice")
        assert (
            posing.returncode == exitcodes.BAD_INPUT and "--as does not exist in remote mode" in posing.stderr
        )
        refused = smithers(ops, "approve", "rc-1", "gate")
        assert refused.returncode == exitcodes.DENIED and "approval:submit" in refused.stderr
        inbox = smithers(alice, "approvals", "--run", "rc-1")
        assert inbox.returncode == 0 and re.search(r"rc-1\s+gate\s+owner alice", inbox.stdout), inbox.stdout
        decided = smithers(alice, "approve", "rc-1", "gate", "--note", "ship it")
        assert decided.returncode == 0, decided.stderr
        assert decided.stdout.strip() == "gate of rc-1: approved by alice"
        again = smithers(alice, "deny", "rc-1", "gate")
        assert again.returncode == exitcodes.CONFLICT and "already decided" in again.stderr

        # then watch follows it to the end (exit 0) and --after-seq resumes
        watched = smithers(ops, "watch", "rc-1", "--timeout", "60")
        assert watched.returncode == 0, watched.stderr + watched.stdout
        assert "run launched: t-approval" in watched.stdout
        assert "approved by alice: ship it" in watched.stdout
        assert 'output: {"ship": {"by": "alice"}}' in watched.stdout
        with engine.store.read() as conn:
            events = events_after(conn, "rc-1", 0, 1000)
        last_two = smithers(ops, "watch", "rc-1", "--after-seq", str(events[-2].seq))
        assert last_two.returncode == 0
        assert "run launched" not in last_two.stdout and "run succeeded" in last_two.stdout
        beyond = smithers(ops, "watch", "rc-1", "--after-seq", "9999")
        assert beyond.returncode == exitcodes.BAD_INPUT and "beyond" in beyond.stderr

        # status, runs, audit, sandboxes read through the API
        status = smithers(ops, "status", "rc-1")
        assert status.returncode == 0 and status.stdout.startswith("rc-1  t-approval v")
        assert re.search(r"ship\s+succeeded", status.stdout)
        as_json = json.loads(smithers(ops, "status", "rc-1", "--json").stdout)
        assert as_json["run"]["status"] == "succeeded" and as_json["run"]["launched_by"] == "ops"
        assert smithers(ops, "status", "nope").returncode == exitcodes.NOT_FOUND
        assert "rc-1" in smithers(ops, "runs").stdout
        audit = smithers(ops, "audit", "rc-1")
        assert audit.returncode == 0 and re.search(r"audit\s+approval\.decided by alice", audit.stdout)
        trail = json.loads(smithers(ops, "audit", "rc-1", "--json").stdout)
        assert any(e["type"] == "approval.decided" and e.get("actor") == "alice" for e in trail["entries"])
        assert "has no sandboxes" in smithers(alice, "sandboxes", "rc-1").stdout
        no_box = smithers(alice, "review", "rc-1", "gate", "--accept")
        assert no_box.returncode == exitcodes.NOT_FOUND, no_box.stderr
        assert smithers(ops, "sandboxes", "rc-1").returncode == exitcodes.DENIED  # no approval:read

        # rerun, replay, fork, cancel and resume
        rerun = smithers(ops, "rerun", "rc-1", "--run-id", "rc-1b", "--detach")
        assert rerun.returncode == 0 and "run rc-1b launched (t-approval, a rerun of rc-1)" in rerun.stdout
        replay = smithers(ops, "replay", "rc-1", "ship", "--confirm", "--run-id", "rc-1r")
        assert replay.returncode == 0, replay.stderr
        assert json.loads(replay.stdout)["new_run_id"] == "rc-1r"
        fork = smithers(alice, "fork", "rc-1", "ship", "--confirm", "--input", "{}")
        assert fork.returncode == exitcodes.DENIED  # neither run:write nor the launcher
        unconfirmed = smithers(ops, "rewind", "rc-1", "ship")
        assert unconfirmed.returncode == exitcodes.BAD_INPUT and "--confirm" in unconfirmed.stderr
        assert smithers(ops, "cancel", "rc-1b").stdout.strip() == "run rc-1b: cancellation requested"
        assert smithers(ops, "watch", "rc-1b", "--wait", "--timeout", "30").returncode == exitcodes.CANCELLED
        resumed = smithers(ops, "resume", "rc-1b", "--detach")
        assert resumed.returncode == 0 and "run rc-1b: resumed" in resumed.stdout

        # delete needs admin (403 -> 10); a bad token is 401 (-> 11)
        assert smithers(ops, "delete", "rc-1r").returncode == exitcodes.DENIED
        deleted = smithers(admin, "delete", "rc-1r")
        assert deleted.returncode == 0 and deleted.stdout.strip() == "run rc-1r: deleted"
        stranger = smithers(remote_env(gateway.url, "bogus"), "status", "rc-1")
        assert stranger.returncode == exitcodes.UNAUTHENTICATED and "Traceback" not in stranger.stderr
        no_token = smithers(remote_env(gateway.url, None), "runs")
        assert no_token.returncode == exitcodes.UNAUTHENTICATED and "smithers login" in no_token.stderr

        # tokens through the API (admin)
        issued = smithers(
            admin, "token", "issue", "--subject", "dave", "--scopes", "run:read", "--ttl", "10m"
        )
        assert issued.returncode == 0, issued.stderr
        dave = remote_env(gateway.url, issued.stdout.strip())
        assert smithers(dave, "runs").returncode == 0
        listed = smithers(admin, "token", "list", "--subject", "dave").stdout
        jti = listed.split()[0]
        assert "dave" in listed and "active" in listed
        assert smithers(admin, "token", "revoke", jti).returncode == 0
        time.sleep(1.1)  # SMITHERS_GRANT_CACHE: another gateway worker may hold the row for 1 s
        assert smithers(dave, "runs").returncode == exitcodes.UNAUTHENTICATED
        assert smithers(ops, "token", "list").returncode == exitcodes.DENIED

        # workflows and revisions through the API too
        assert "t-approval" in smithers(ops, "workflows").stdout
        assert "held by" in smithers(ops, "revisions", "t-approval").stdout

        # the commands that need the store itself say so
        for args in (
            ("migrate",),
            ("db", "backup", str(tmp_path / "b.db")),
            ("scheduler",),
            ("worker",),
            ("up",),
        ):
            done = smithers(ops, *args)
            assert done.returncode == exitcodes.BAD_INPUT, (args, done.stderr)
            assert "needs the store itself" in done.stderr and gateway.url in done.stderr
    finally:
        gateway.stop()


def test_as_is_recorded_as_asserted_by_a_local_operator(engine: Engine) -> None:
    # given a run waiting for alice's approval, and an operator with store access only
    run_id = engine.launch("t-approval", run_id="asserted-1")
    engine.wait_event(run_id, lambda ev: ev.type == "run.waiting", timeout=60)
    local = {k: v for k, v in engine.env.items() if k not in ("SMITHERS_GATEWAY_URL", "SMITHERS_PROFILE")}
    local["USER"] = "opsperson"

    # (the local inbox shows it)
    inbox = smithers(local, "approvals", "--run", run_id)
    assert inbox.returncode == 0 and "owner alice" in inbox.stdout, inbox.stderr

    # when the operator approves --as alice through the store
    done = smithers(local, "approve", run_id, "gate", "--as", "alice", "--note", "on her behalf")
    assert done.returncode == 0, done.stderr
    assert "approved by alice (asserted with --as by a local operator)" in done.stdout

    # then the event and the audit entry say who asserted it, and how
    decided = engine.wait_event(run_id, lambda ev: ev.type == "approval.decided")
    assert decided.payload["decided_by"] == "alice"
    assert decided.payload["asserted"] == {"by": "cli:opsperson", "via": "local store access"}
    audit = smithers(local, "audit", run_id, "--json")
    entries = json.loads(audit.stdout)["entries"]
    row = next(e for e in entries if e["source"] == "audit" and e["type"] == "approval.decided")
    assert row["actor"] == "alice" and row["detail"]["asserted"]["by"] == "cli:opsperson"
    claim = next(e for e in entries if e["type"] == "actor.asserted")
    assert claim["actor"] == "cli:opsperson"
    assert claim["detail"]["asserted_actor"] == "alice" and claim["detail"]["command"] == "approve"
    # and the local watch resumes after a seq, as the remote one does
    engine.wait(run_id, timeout=60)
    events = engine.events(run_id)
    tail = smithers(local, "watch", run_id, "--after-seq", str(events[-2].seq))
    assert tail.returncode == 0, tail.stderr
    assert "run launched" not in tail.stdout and "run succeeded" in tail.stdout

    # a local rerun is a new run of the same input, its parent this one
    rerun = smithers(local, "rerun", run_id, "--run-id", "asserted-2", "--detach")
    assert rerun.returncode == 0 and "run asserted-2 launched" in rerun.stdout, rerun.stderr
    assert engine.run("asserted-2").parent_run_id == run_id


@pytest.fixture
def config_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "xdg"
    home.mkdir()
    yield home


def test_login_keeps_a_0600_profile_that_later_commands_use(
    tmp_path: Path, redis_url: str, config_home: Path
) -> None:
    gateway = LiveGateway(base_env(f"sqlite:///{tmp_path / 'smithers.db'}", redis_url), tmp_path).start()
    try:
        token = issue(gateway.env, "erin", "run:read")
        machine = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
        machine["XDG_CONFIG_HOME"] = str(config_home)

        # a bad token is refused and nothing is written
        bad = smithers(machine, "login", gateway.url, "--profile", "prod", stdin="not-a-token\n")
        assert bad.returncode == exitcodes.UNAUTHENTICATED, bad.stderr
        assert not (config_home / "smithers" / "profiles.json").exists()

        # when erin logs in with the token on stdin
        done = smithers(machine, "login", gateway.url, "--profile", "prod", stdin=token + "\n")
        assert done.returncode == 0, done.stderr
        assert f"logged in to {gateway.url} as erin (run:read)" in done.stdout

        # then the profile file is 0600 in a 0700 directory and holds the token
        path = config_home / "smithers" / "profiles.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        saved = json.loads(path.read_text())
        assert saved["default"] == "prod" and saved["profiles"]["prod"]["token"] == token

        # and commands use it by profile name, or by the gateway URL alone
        by_name = smithers({**machine, "SMITHERS_PROFILE": "prod"}, "runs")
        assert by_name.returncode == 0, by_name.stderr
        by_url = smithers({**machine, "SMITHERS_GATEWAY_URL": gateway.url}, "status", "nope")
        assert by_url.returncode == exitcodes.NOT_FOUND and "not found" in by_url.stderr
        denied = smithers({**machine, "SMITHERS_PROFILE": "prod"}, "run", "t-chain")
        assert denied.returncode == exitcodes.DENIED and "run:write" in denied.stderr
        missing = smithers({**machine, "SMITHERS_PROFILE": "staging"}, "runs")
        assert missing.returncode == exitcodes.BAD_INPUT and "no profile 'staging'" in missing.stderr

        # logout forgets it
        assert smithers(machine, "logout", "--profile", "prod").returncode == 0
        assert json.loads(path.read_text())["profiles"] == {}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        gateway.stop()
