"""Workflows with sandbox steps, used by tests/integration/test_sandbox_engine.py."""

from __future__ import annotations

import os
from typing import Any

from smithers import SandboxSpec, StepContext, Workflow

IMAGE = os.environ.get("SMITHERS_SANDBOX_IMAGE", "smithers-sandbox:latest")

# Edits greeting.txt, adds notes/new.txt, and proposes the change as a patch made by
# `diff -ruN` between two copies of the workspace.
PROPOSE = r"""
set -e
cd /work/tmp
mkdir a b
cp -R /work/request/files/. a/
cp -R /work/request/files/. b/
printf 'hello, reviewed world\n' > b/greeting.txt
mkdir -p b/notes && printf 'written in a sandbox\n' > b/notes/new.txt
diff -ruN a b > /work/result/patches/0001-greeting.patch || [ $? -eq 1 ]
printf '{"status": "succeeded", "outputs": {"summary": "greeting updated"},
 "patches": ["0001-greeting.patch"]}' > /work/result/manifest.json
"""


def _use(ctx: StepContext) -> dict[str, Any]:
    proposed = ctx.outputs["propose"]
    return {
        "greeting": proposed["workspace"]["files"]["greeting.txt"],
        "new": proposed["workspace"]["files"]["notes/new.txt"],
        "summary": proposed["outputs"]["summary"],
    }


def _review_workflow(name: str, **options: Any) -> Workflow:
    spec = SandboxSpec(
        image=IMAGE,
        command=("sh", "-c", PROPOSE),
        files={"greeting.txt": "hello\n"},
        timeout_s=30,
        auto_accept_diffs=options.pop("auto", False),
    )
    wf = Workflow(name)
    wf.sandbox("propose", spec, **options)
    wf.task("use", after=["propose"])(_use)
    return wf


review = _review_workflow("t-sbx-review")
review_skip = _review_workflow("t-sbx-review-skip", on_reject="skip")
auto = _review_workflow("t-sbx-auto", auto=True)

# -- slow: a sandbox step that takes a few seconds, for the kill -9 test ----------------
slow = Workflow("t-sbx-slow")
slow.sandbox(
    "slow",
    SandboxSpec(
        image=IMAGE,
        command=(
            "sh",
            "-c",
            'sleep 4; echo \'{"status": "succeeded", "outputs": {"slept": 4}}\' > /work/result/manifest.json',
        ),
        timeout_s=30,
    ),
    retries=1,
)


@slow.task(after=["slow"])
def after_slow(ctx: StepContext) -> Any:
    return ctx.outputs["slow"]["outputs"]


# -- limits: each node breaks one rule; continue_on_fail lets the run report them all --
MANIFEST = 'echo \'{"status": "succeeded", "patches": %s, "artifacts": %s}\' > /work/result/manifest.json'


def _limit(node_id: str, script: str, **fields: Any) -> None:
    spec = SandboxSpec(
        image=IMAGE, command=("sh", "-c", script), timeout_s=fields.pop("timeout_s", 20), **fields
    )
    limits.sandbox(node_id, spec, continue_on_fail=True)


limits = Workflow("t-sbx-limits")
_limit("oom", "x=a; while :; do x=$x$x; done", memory_mb=32)
_limit(
    "network",
    "if bash -c 'exec 3<>/dev/tcp/1.1.1.1/53' 2>/dev/null; then r=reachable; else r=unreachable; fi;"
    ' echo "{\\"status\\": \\"succeeded\\", \\"outputs\\": {\\"network\\": \\"$r\\"}}"'
    " > /work/result/manifest.json",
)
_limit("pids", "bomb() { bomb | bomb; }; bomb", pids_limit=32, timeout_s=3)
_limit("write_outside", "echo x > /etc/owned")
_limit("traversal", "echo x > /work/result/artifacts/a; " + MANIFEST % ('["../artifacts/a"]', "[]"))
_limit("symlink", "ln -s /etc/passwd /work/result/patches/p.diff; " + MANIFEST % ('["p.diff"]', "[]"))
_limit(
    "hardlink",
    "echo x > /work/result/artifacts/a; ln /work/result/artifacts/a /work/result/artifacts/b; "
    + MANIFEST % ("[]", '["b"]'),
)
_limit(
    "oversize",
    "head -c 2097152 /dev/zero > /work/result/artifacts/big.bin; " + MANIFEST % ("[]", '["big.bin"]'),
)

# -- attacks: a step asks for the worker's configuration as a secret, or hands back
# strings PostgreSQL refuses (NUL, a lone surrogate) in its manifest or its output ----
attacks = Workflow("t-sbx-attacks")


def _attack(node_id: str, script: str, **fields: Any) -> None:
    spec = SandboxSpec(image=IMAGE, command=("sh", "-c", script), timeout_s=20, **fields)
    attacks.sandbox(node_id, spec, continue_on_fail=True)


_attack("config_secret", 'echo "$SMITHERS_DATABASE_URL" | base64', secrets=("SMITHERS_DATABASE_URL",))
_attack("unlisted_secret", 'echo "$HOME_TOKEN"', secrets=("HOME_TOKEN",))
_attack(
    "allowed_secret",
    'echo "{\\"status\\": \\"succeeded\\", \\"outputs\\": {\\"len\\": ${#SMITHERS_SECRET_API}}}"'
    " > /work/result/manifest.json",
    secrets=("SMITHERS_SECRET_API",),
)
_WRITE = " > /work/result/manifest.json"
_attack("nul", """printf '{"status": "succeeded", "outputs": {"a": "x\\\\u0000y"}}'""" + _WRITE)
_attack("surrogate", """printf '{"status": "succeeded", "outputs": {"\\\\ud800": 1}}'""" + _WRITE)
_attack("nul_log", "printf 'before\\000after\\n'; exit 3")
